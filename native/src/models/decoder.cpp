#include "models/decoder.h"

#include <algorithm>
#include <chrono>

#include "models/checks.h"
#include "pyrt/error.h"

namespace pyrt {

namespace {

// kMicroBatch (decoder.h): the activations of a 4096-token prompt would otherwise hold ~25 KB a row
// for SmolLM2, and any split of a prompt gives the bits of one pass (test_invariants), so nothing
// else changes.

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

DecoderModel::DecoderModel(std::shared_ptr<GgufFile> f, const ModelOptions& opts, const DecoderArchFactory& arch)
    : Model(std::move(f), opts), arch_def_(arch(*file_, opts_)) {
  if (tokenizer_ && tokenizer_->vocab_size() > arch_def_->n_vocab) {
    fail(ErrorCode::kFormat, file_->path() + ": tokenizer has " + std::to_string(tokenizer_->vocab_size()) +
                                 " tokens but the embedding only " + std::to_string(arch_def_->n_vocab));
  }
  // The NPU is the CPU with prefill linears on a delegate (the prefill plan, installed by sched/).
  dev_ = open_device(opts_.device == "npu" ? "cpu" : opts_.device, pool(), parse_kv_spec(opts_.kv_k),
                     parse_kv_spec(opts_.kv_v));
  // Everything every graph reads, handed to the device once.
  std::vector<const Weight*> weights, tables;
  std::vector<std::pair<const float*, int64_t>> vectors;
  for (const Graph* g : arch_def_->graphs()) {
    for (const Weight* w : g->linear_weights())
      if (std::find(weights.begin(), weights.end(), w) == weights.end()) weights.push_back(w);
    for (const Weight* w : g->tables())
      if (std::find(tables.begin(), tables.end(), w) == tables.end()) tables.push_back(w);
    for (const auto& v : g->vectors())
      if (std::find(vectors.begin(), vectors.end(), v) == vectors.end()) vectors.push_back(v);
  }
  dev_.backend->prepare(weights, tables, vectors);
  runner_ = std::make_unique<Runner>(arch_def_->graph(), *dev_.backend, *dev_.memory);
}

int64_t DecoderModel::session_context(int64_t n_ctx) const {
  if (n_ctx > 0) return n_ctx;
  if (opts_.n_ctx > 0) return opts_.n_ctx;
  // A GPU session reserves its whole cache up front: without a context asked for, a bounded one.
  return dev_.backend->host_memory() ? context_length() : std::min(context_length(), kCudaDefaultContext);
}

std::unique_ptr<Session> DecoderModel::new_session(int64_t n_ctx) {
  return std::make_unique<DecoderSession>(*this, session_context(n_ctx));
}

std::map<std::string, double> DecoderModel::device_stats() const {
  std::map<std::string, double> out;
  if (dev_.backend->weight_bytes() > 0) out["device_weight_bytes"] = double(dev_.backend->weight_bytes());
  return out;
}

void DecoderModel::decode_batch(const std::vector<Session*>& sessions, const int32_t* tokens, float* logits) {
  check_decode_batch(*this, sessions, tokens);
  for (size_t b = 0; b < sessions.size(); ++b)
    check_ready(*static_cast<DecoderSession*>(sessions[b]), "decode_batch: session " + std::to_string(b));
  // Alone, a session's step is an ordinary feed (its attention heads use the whole pool).
  if (sessions.size() == 1) return sessions[0]->feed(tokens, 1, logits, false);
  std::vector<DecoderSession*> ss;
  for (Session* s : sessions) ss.push_back(static_cast<DecoderSession*>(s));  // checked: this model's sessions
  const int64_t B = int64_t(ss.size());
  PassRequest r;
  r.rows = B;
  r.ids = tokens;
  r.out = logits;
  for (int64_t b = 0; b < B; ++b) {
    r.seqs.push_back(SeqRows{ss[size_t(b)]->cache_.get(), b, 1, ss[size_t(b)]->n_past_});
    r.out_rows.push_back(b);
  }
  const auto t0 = std::chrono::steady_clock::now();
  try {
    // Rows are sessions: each weight is read once for all of them, attention reads each one's cache.
    runner_->run(r, &ss[0]->counters);
  } catch (...) {
    for (DecoderSession* s : ss) s->reset();  // caches may hold part of the step (as feed() does)
    throw;
  }
  const double dt = seconds_since(t0);
  ++ss[0]->passes;
  for (DecoderSession* s : ss) {
    ++s->n_past_;
    s->account(1, dt / double(B), true);  // the step is shared: each session gets its share of the time
  }
}

void DecoderModel::prefill_batch(const std::vector<Session*>& sessions,
                                 const std::vector<std::vector<int32_t>>& prompts, float* logits) {
  check_prefill_batch(sessions, prompts);
  std::vector<DecoderSession*> ss;
  for (size_t b = 0; b < sessions.size(); ++b) {
    ss.push_back(static_cast<DecoderSession*>(sessions[b]));  // checked: this model's sessions
    check_ready(*ss.back(), "prefill_batch: session " + std::to_string(b));
  }
  const int64_t V = vocab_size();
  std::vector<size_t> group;  // sessions whose prompts share the next pass
  int64_t rows = 0;
  auto flush = [&] {
    if (group.size() == 1) ss[group[0]]->feed(prompts[group[0]].data(), rows, logits + int64_t(group[0]) * V, false);
    if (group.size() > 1) run_packed(ss, prompts, group, rows, logits);
    group.clear(), rows = 0;
  };
  for (size_t b = 0; b < ss.size(); ++b) {
    const int64_t n = int64_t(prompts[b].size());
    if (plan_ || ss[b]->observer() || n > kMicroBatch) {  // alone: its own chunks, observer or micro-batches
      flush();
      ss[b]->feed(prompts[b].data(), n, logits + int64_t(b) * V, false);
      continue;
    }
    if (rows + n > kMicroBatch) flush();
    group.push_back(b), rows += n;
  }
  flush();
}

void DecoderModel::run_packed(const std::vector<DecoderSession*>& ss, const std::vector<std::vector<int32_t>>& prompts,
                              const std::vector<size_t>& group, int64_t rows, float* logits) {
  const int64_t V = vocab_size();
  PassRequest r;
  std::vector<int32_t> ids;
  for (size_t b : group) {
    const int64_t n = int64_t(prompts[b].size());
    r.seqs.push_back(SeqRows{ss[b]->cache_.get(), int64_t(ids.size()), n, ss[b]->n_past_});
    r.out_rows.push_back(int64_t(ids.size()) + n - 1);
    ids.insert(ids.end(), prompts[b].begin(), prompts[b].end());
  }
  std::vector<float> out(group.size() * size_t(V));
  r.rows = rows, r.ids = ids.data(), r.out = out.data();
  const auto t0 = std::chrono::steady_clock::now();
  try {
    runner_->run(r, &ss[group[0]]->counters);
  } catch (...) {
    for (size_t b : group) ss[b]->reset();  // caches may hold part of the pass (as feed() does)
    throw;
  }
  const double dt = seconds_since(t0);
  ++ss[group[0]]->passes;
  for (size_t i = 0; i < group.size(); ++i) {
    DecoderSession& s = *ss[group[i]];
    const int64_t n = int64_t(prompts[group[i]].size());
    std::copy_n(out.data() + i * size_t(V), V, logits + int64_t(group[i]) * V);
    s.n_past_ += n;
    ++s.batched_prefills_;
    s.account(n, dt * double(n) / double(rows), false);  // each prompt's share of the pass by its rows
  }
}

DecoderSession::DecoderSession(DecoderModel& m, int64_t n_ctx) : m_(m), n_ctx_(n_ctx) {
  if (n_ctx <= 0) fail(ErrorCode::kInvalidArgument, "context size must be positive");
  const Graph& g = m.graph();
  cache_ = m.dev_.memory->new_sequence(g.self_layout(), g.cross_layout(), n_ctx);
}

void DecoderSession::set_linear_observer(LinearObserver obs) {
  if (!m_.runner().backend().host_memory()) {
    fail(ErrorCode::kUnsupported,
         "linear observers (calibration) run on the CPU, not on device '" + m_.runner().backend().name() + "'");
  }
  observer_ = std::move(obs);
}

PassRequest DecoderSession::pass(const int32_t* ids, int64_t rows, int64_t n_valid, int64_t offset,
                                 std::vector<int64_t> out_rows, float* out) const {
  PassRequest r;
  r.rows = rows;
  r.seqs = {SeqRows{cache_.get(), 0, n_valid, n_past_ + offset}};
  r.ids = ids;
  r.out_rows = std::move(out_rows);
  r.out = out;
  r.observer = observer();
  return r;
}

void DecoderSession::feed(const int32_t* ids, int64_t T, float* logits, bool all_logits) {
  m_.check_ready(*this, "this session");
  check_feed(n_past_, n_ctx_, ids, T, m_.vocab_size());
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t V = m_.vocab_size();
  try {
    if (T > 1 && m_.plan_) {  // chunks / delegate (single tokens, decode, always take one pass)
      m_.plan_->prefill(*this, ids, T, logits, all_logits);
    } else {
      // Even micro-batches; one pass where the cache needs it (KIVI).
      const int64_t n_micro =
          cache_->one_pass_prompts() ? 1 : (T + DecoderModel::kMicroBatch - 1) / DecoderModel::kMicroBatch;
      const int64_t step = (T + n_micro - 1) / n_micro;
      for (int64_t c0 = 0; c0 < T; c0 += step) {
        const int64_t n = std::min(step, T - c0);
        const bool last = c0 + n == T;
        std::vector<int64_t> out_rows;
        if (all_logits) {
          for (int64_t t = 0; t < n; ++t) out_rows.push_back(t);
        } else if (last) {
          out_rows.push_back(n - 1);
        }
        float* out = all_logits ? logits + c0 * V : last ? logits : nullptr;
        m_.runner().run(pass(ids + c0, n, n, c0, std::move(out_rows), out), &counters);
        ++passes;
      }
    }
  } catch (...) {
    // Some layers may already hold part of these tokens: a cache that disagrees with n_past would fail
    // every later feed, so the conversation starts over (the caller sees the error).
    reset();
    throw;
  }
  n_past_ += T;
  account(T, seconds_since(t0), false);
}

void DecoderSession::account(int64_t n, double seconds, bool batched) {
  ++calls_;
  if (batched) ++batched_decodes_;
  if (n == 1) {
    decode_tokens_ += 1, decode_s_ += seconds;
  } else {
    prefill_tokens_ += n, prefill_s_ += seconds;
  }
}

void DecoderSession::reset() {
  n_past_ = 0;
  cache_->clear();
}

std::map<std::string, double> DecoderSession::stats() const {
  const std::string& dev = m_.runner().backend().name();
  std::map<std::string, double> out{{"n_past", double(n_past_)},
                                    {"n_ctx", double(n_ctx_)},
                                    {"kv_bytes", double(cache_->bytes())},
                                    {"tokens_fed", double(prefill_tokens_ + decode_tokens_)},
                                    {"feed_calls", double(calls_)},
                                    {"compute_s", prefill_s_ + decode_s_},
                                    {"prefill_tokens", double(prefill_tokens_)},
                                    {"decode_tokens", double(decode_tokens_)},
                                    {"prefill_s", prefill_s_},
                                    {"decode_s", decode_s_},
                                    {dev == "cpu" ? "cpu_passes" : "gpu_passes", double(passes)},
                                    {"batched_decodes", double(batched_decodes_)},
                                    {"batched_prefills", double(batched_prefills_)},
                                    {"threads", double(m_.pool().size())},
                                    {"placement." + dev + ".linear_calls", double(counters.linear_calls)},
                                    {"placement." + dev + ".linear_macs", counters.linear_macs},
                                    {"placement.chunks", double(chunks)},
                                    {"placement.pad_tokens", double(pad_tokens)}};
  cache_->add_stats(out);
  for (const auto& [k, v] : m_.device_stats()) out[k] = v;
  if (m_.plan_) m_.plan_->add_stats(*this, out);
  return out;
}

}  // namespace pyrt
