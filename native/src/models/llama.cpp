// Llama family decoder: RMSNorm, RoPE (adjacent pairs: the converter permutes HF Q/K for it),
// GQA attention over a KV cache, SwiGLU FFN, tied or untied output.
#include <chrono>
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <vector>

#include "core/ops.h"
#include "memory/kv_cache.h"
#include "models/llama_weights.h"
#include "models/loader.h"
#include "models/registry.h"
#include "pyrt/error.h"
#include "sched/npu_plan.h"
#include "sched/task_graph.h"

namespace pyrt {

namespace {

// Rows of a CPU prompt pass at once (see LlamaSession::feed).
constexpr int64_t kCpuMicroBatch = 512;

class LlamaModel;

// Activations of one chunk of positions (several are in flight when prefill overlaps devices).
struct ChunkState {
  int64_t rows = 0, valid = 0, pos0 = 0;  // rows = valid tokens + padding
  std::vector<float> x, xn, q, k, v, att, gate, up, tmp;
  // RoPE angles of the chunk's positions, [valid][cos n_rot/2, sin n_rot/2]: one sincos per token and
  // pair for all layers. Valid for rope_pos0 / rope_n (a later chunk with other positions recomputes).
  std::vector<float> rope_cs;
  int64_t rope_pos0 = -1, rope_n = 0;
  enum Linear { kQ, kK, kV, kO, kGate, kUp, kDown, kLinears };
  NpuPlan::Scratch lin[kLinears];  // delegate outputs and shadow corrections per linear
};

class LlamaSession : public Session {
 public:
  LlamaSession(const LlamaModel& m, int64_t n_ctx);
  void feed(const int32_t* ids, int64_t n, float* logits, bool all_logits) override;
  void reset() override;
  int64_t n_past() const override { return n_past_; }
  int64_t n_ctx() const override { return n_ctx_; }
  size_t kv_bytes() const override { return cache_.bytes(); }
  std::map<std::string, double> stats() const override;
  void set_linear_observer(LinearObserver obs) override { observer_ = std::move(obs); }
  std::vector<float> cached_rows(int layer, bool keys) const override;
  std::string prefill_trace_json() const override { return trace_json_; }
  // LlamaModel::decode_batch: one decode step of these sessions of one model, every linear over their
  // rows at once (each weight read once for all), attention per session over its own cache.
  static void decode_batch(const std::vector<LlamaSession*>& sessions, const int32_t* tokens, float* logits);

 private:
  friend class LlamaModel;
  // Block stages on one chunk. Rows past `valid` pad a static-shape chunk: they go through the
  // position-wise ops but never reach attention or the KV cache.
  void prepare(ChunkState& cs, const int32_t* ids, int64_t rows, int64_t valid, int64_t pos0) const;
  void attention(ChunkState& cs, int il);
  void after_attention(ChunkState& cs, int il) const;                     // residual, FFN norm
  void after_ffn(ChunkState& cs) const;                                   // residual
  void head(const ChunkState& cs, float* logits, bool all_logits) const;  // logits of valid rows (or the last)
  void linear_cpu(const Weight& w, const ChunkState& cs, const float* in, float* out);
  // Weights reading the same input (Q/K/V, gate/up) in one pool run; same numbers as one by one.
  void linear_cpu_shared(std::initializer_list<const Weight*> ws, const ChunkState& cs, const float* in,
                         std::initializer_list<float*> outs);
  void linear_finish(const Weight& w, const ChunkState& cs, const float* in, const NpuPlan::Scratch& sc, float* out);

  // The whole chunk on the CPU, stage after stage.
  // keep_from: the first valid row whose final hidden state is used (head); past the last layer's
  // attention (which caches every token's keys and values) only those rows go on.
  void forward_cpu(ChunkState& cs, int64_t keep_from = 0);
  // A prompt's chunks as a dependency graph: linears on the delegate, the rest on the CPU, overlapped.
  void prefill_on_delegate(const int32_t* ids, int64_t T, float* logits, bool all_logits);

  const LlamaModel& m_;
  int64_t n_ctx_, n_past_ = 0;
  KvCache cache_;
  double compute_s_ = 0;
  int64_t tokens_fed_ = 0, calls_ = 0, cpu_passes_ = 0, batched_decodes_ = 0;
  LinearObserver observer_;
  PlacementCounters placement_;
  std::map<std::string, double> latency_s_;  // profiled task latencies (scheduler priorities)
  std::string trace_json_;
  double cpu_busy_s_ = 0, prefill_wall_s_ = 0;
};

class LlamaModel : public Model, public LlamaWeights {
 public:
  LlamaModel(std::shared_ptr<GgufFile> f, const ModelOptions& opts);
  std::unique_ptr<Session> new_session(int64_t n_ctx) override {
    return std::make_unique<LlamaSession>(*this, n_ctx > 0 ? n_ctx : default_ctx());
  }
  int64_t vocab_size() const override { return hp.n_vocab; }
  int64_t context_length() const override { return hp.n_ctx_train; }
  int64_t embedding_length() const override { return hp.n_embd; }
  int64_t default_ctx() const { return opts_.n_ctx > 0 ? opts_.n_ctx : hp.n_ctx_train; }
  bool supports_chunked_prefill() const override { return true; }
  std::string delegate_runs_on() const override { return npu ? npu->runs_on() : ""; }
  std::vector<W8A8Graph> delegate_graphs() const override { return npu ? npu->graphs() : std::vector<W8A8Graph>{}; }
  void decode_batch(const std::vector<Session*>& sessions, const int32_t* tokens, float* logits) override;
  bool batches_decode() const override { return true; }

  KvSpec kv_k, kv_v;
  std::unique_ptr<NpuPlan> npu;  // prefill linears on a delegate (PrefillOptions::delegate)
};

LlamaModel::LlamaModel(std::shared_ptr<GgufFile> f, const ModelOptions& opts)
    : Model(std::move(f), opts), LlamaWeights(load_llama_weights(*file_, arch_, &opts_)) {
  const GgufFile& g = *file_;
  kv_k = parse_kv_spec(opts_.kv_k);
  kv_v = parse_kv_spec(opts_.kv_v);
  if (!opts_.prefill.delegate.empty()) {
    std::vector<const Weight*> linears;
    for (const LlamaLayer& L : layers) {
      for (const Weight* w : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down}) linears.push_back(w);
    }
    npu = std::make_unique<NpuPlan>(g, linears, opts_.prefill, pool());
  }
  if (tokenizer_ && tokenizer_->vocab_size() > hp.n_vocab) {
    fail(ErrorCode::kFormat, g.path() + ": tokenizer has " + std::to_string(tokenizer_->vocab_size()) +
                                 " tokens but the embedding only " + std::to_string(hp.n_vocab));
  }
}

LlamaSession::LlamaSession(const LlamaModel& m, int64_t n_ctx)
    : m_(m), n_ctx_(n_ctx), cache_(m.hp.n_layer, m.hp.n_head_kv, m.hp.head_dim, m.kv_k, m.kv_v) {
  if (n_ctx <= 0) fail(ErrorCode::kInvalidArgument, "context size must be positive");
}

std::vector<float> LlamaSession::cached_rows(int layer, bool keys) const {
  if (layer < 0 || layer >= m_.hp.n_layer) {
    fail(ErrorCode::kOutOfRange,
         "layer " + std::to_string(layer) + " is outside 0.." + std::to_string(m_.hp.n_layer - 1));
  }
  return cache_.rows(layer, keys, m_.hp.n_head_kv, m_.hp.head_dim);
}

void LlamaSession::reset() {
  n_past_ = 0;
  cache_.clear();
}

std::map<std::string, double> LlamaSession::stats() const {
  const auto [kq, kf] = cache_.keys(0).split_sizes();
  const auto [vq, vf] = cache_.values(0).split_sizes();
  std::map<std::string, double> out{{"n_past", double(n_past_)},
                                    {"n_ctx", double(n_ctx_)},
                                    {"kv_bytes", double(cache_.bytes())},
                                    {"kv_k_quantized_tokens", double(kq)},
                                    {"kv_k_full_precision_tokens", double(kf)},
                                    {"kv_v_quantized_tokens", double(vq)},
                                    {"kv_v_full_precision_tokens", double(vf)},
                                    {"tokens_fed", double(tokens_fed_)},
                                    {"feed_calls", double(calls_)},
                                    {"compute_s", compute_s_},
                                    {"cpu_passes", double(cpu_passes_)},
                                    {"batched_decodes", double(batched_decodes_)},
                                    {"threads", double(m_.pool().size())}};
  placement_.add_to(out, m_.npu ? m_.npu->delegate_name() : "");
  if (m_.npu) {
    out["placement.cpu.shadow_resident_bytes"] = double(m_.npu->cpu_resident_bytes());
    out["placement.cpu.busy_s"] = cpu_busy_s_;
    out["placement.prefill_wall_s"] = prefill_wall_s_;
    out["placement.overlap"] = m_.options().prefill.overlap ? 1.0 : 0.0;
  }
  return out;
}

void LlamaSession::feed(const int32_t* ids, int64_t T, float* logits, bool all_logits) {
  if (T <= 0) fail(ErrorCode::kInvalidArgument, "feed() needs at least one token");
  if (n_past_ + T > n_ctx_) {
    fail(ErrorCode::kContextOverflow, "context overflow: " + std::to_string(n_past_) + " cached + " +
                                          std::to_string(T) + " new tokens exceed the context of " +
                                          std::to_string(n_ctx_));
  }
  check_token_ids(ids, T, m_.hp.n_vocab);
  const auto t0 = std::chrono::steady_clock::now();
  const PrefillOptions& po = m_.options().prefill;
  const int64_t C = po.chunk;
  ChunkState cs;
  // One pass through the layers: n prompt tokens from offset c0 in `rows` rows (rows past n are padding).
  auto pass = [&](const int32_t* pass_ids, int64_t rows, int64_t c0, int64_t n) {
    const bool last = c0 + n == T;
    prepare(cs, pass_ids, rows, n, n_past_ + c0);
    forward_cpu(cs, all_logits ? 0 : last ? n - 1 : n);
    head(cs, all_logits ? logits + c0 * m_.hp.n_vocab : (last ? logits : nullptr), all_logits);
  };
  try {
    if (C <= 0 || T == 1) {  // single tokens (decode) always take the CPU path
      // Long prompts go in even micro-batches of at most kCpuMicroBatch rows (llama.cpp's n_ubatch):
      // the activations of a 4096-token prompt would otherwise hold ~25 KB a row for SmolLM2, and any
      // split of a prompt gives the bits of one pass (test_invariants), so nothing else changes. Not
      // with KIVI: it quantizes after each step, so a later batch would read the prompt's earlier
      // tokens quantized where one pass reads them in fp16 (the paper's prefill).
      const bool kivi = cache_.k_spec().kind == KvSpec::Kind::kKivi || cache_.v_spec().kind == KvSpec::Kind::kKivi;
      const int64_t n_micro = kivi ? 1 : (T + kCpuMicroBatch - 1) / kCpuMicroBatch, step = (T + n_micro - 1) / n_micro;
      for (int64_t c0 = 0; c0 < T; c0 += step) {
        const int64_t n = std::min(step, T - c0);
        pass(ids + c0, n, c0, n);
        ++cpu_passes_;
      }
    } else if (m_.npu) {
      prefill_on_delegate(ids, T, logits, all_logits);
    } else {
      std::vector<int32_t> chunk(static_cast<size_t>(C));
      for (int64_t c0 = 0; c0 < T; c0 += C) {
        const int64_t n = std::min(C, T - c0);
        std::copy(ids + c0, ids + c0 + n, chunk.begin());
        std::fill(chunk.begin() + n, chunk.end(), po.pad_token);
        pass(chunk.data(), C, c0, n);
        ++placement_.chunks;
        placement_.pad_tokens += C - n;
      }
    }
  } catch (...) {
    // Some layers may already hold part of these tokens: a cache that disagrees with n_past would fail
    // every later feed, so the conversation starts over (the caller sees the error).
    reset();
    throw;
  }
  n_past_ += T;
  tokens_fed_ += T;
  ++calls_;
  compute_s_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void LlamaSession::prepare(ChunkState& cs, const int32_t* ids, int64_t T, int64_t valid, int64_t pos0) const {
  const LlamaHparams& hp = m_.hp;
  const int64_t E = hp.n_embd, q_dim = int64_t(hp.n_head) * hp.head_dim, kv_dim = int64_t(hp.n_head_kv) * hp.head_dim;
  cs.rows = T;
  cs.valid = valid;
  cs.pos0 = pos0;
  for (auto* b : {&cs.x, &cs.xn, &cs.tmp}) b->resize(T * E);
  cs.q.resize(T * q_dim);
  cs.att.assign(T * q_dim, 0.0f);  // padded rows are never attended: they stay 0
  cs.k.resize(T * kv_dim);
  cs.v.resize(T * kv_dim);
  cs.gate.resize(T * hp.n_ff);
  cs.up.resize(T * hp.n_ff);
  embed_tokens(m_.tok_embd, ids, T, cs.x.data());
}

void LlamaSession::linear_cpu(const Weight& w, const ChunkState& cs, const float* in, float* out) {
  matmul(w, in, cs.rows, out, m_.pool());
  ++placement_.cpu_linear_calls;
  placement_.cpu_linear_macs += double(cs.rows) * double(w.rows) * double(w.cols);
  if (observer_) observer_(w, in, cs.valid, out);
}

void LlamaSession::linear_cpu_shared(std::initializer_list<const Weight*> ws, const ChunkState& cs, const float* in,
                                     std::initializer_list<float*> outs) {
  const std::vector<const Weight*> w(ws);
  const std::vector<float*> y(outs);
  matmul_shared_input(w.data(), y.data(), static_cast<int>(w.size()), in, cs.rows, m_.pool());
  for (size_t i = 0; i < w.size(); ++i) {
    ++placement_.cpu_linear_calls;
    placement_.cpu_linear_macs += double(cs.rows) * double(w[i]->rows) * double(w[i]->cols);
    if (observer_) observer_(*w[i], in, cs.valid, y[i]);
  }
}

void LlamaSession::linear_finish(const Weight& w, const ChunkState& cs, const float* in, const NpuPlan::Scratch& sc,
                                 float* out) {
  m_.npu->finish(w, in, sc, out, placement_);
  if (observer_) observer_(w, in, cs.valid, out);
}

namespace {
// RoPE angles of the token at `pos` (cos, then sin, n_rot / 2 each): computed once per token, reused by
// its q and k in every layer (rope_qk).
void token_angles(const LlamaModel& m, int64_t pos, float* out) {
  const size_t half = m.inv_freq.size();
  rope_angles(static_cast<float>(pos) * m.hp.rope_scale, m.inv_freq, out, out + half);
}
void rope_qk(const LlamaModel& m, const float* angles, float* q, float* k) {
  const LlamaHparams& hp = m.hp;
  const float* sin = angles + m.inv_freq.size();
  rope_with(q, hp.n_head, hp.head_dim, hp.n_rot, angles, sin, RopeMode::kNorm);
  rope_with(k, hp.n_head_kv, hp.head_dim, hp.n_rot, angles, sin, RopeMode::kNorm);
}
}  // namespace

void LlamaSession::attention(ChunkState& cs, int il) {
  const LlamaHparams& hp = m_.hp;
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t q_dim = int64_t(hp.n_head) * hp.head_dim, kv_dim = int64_t(hp.n_head_kv) * hp.head_dim;
  const int64_t half = int64_t(m_.inv_freq.size());
  if (cs.rope_pos0 != cs.pos0 || cs.rope_n != cs.valid) {
    cs.rope_cs.resize(size_t(cs.valid * 2 * half));
    for (int64_t t = 0; t < cs.valid; ++t) token_angles(m_, cs.pos0 + t, &cs.rope_cs[size_t(t * 2 * half)]);
    cs.rope_pos0 = cs.pos0, cs.rope_n = cs.valid;
  }
  auto rotate = [&](int64_t t) { rope_qk(m_, &cs.rope_cs[size_t(t * 2 * half)], &cs.q[t * q_dim], &cs.k[t * kv_dim]); };
  constexpr int64_t kTokensPerTask = 32;
  if (cs.valid <= kTokensPerTask) {
    for (int64_t t = 0; t < cs.valid; ++t) rotate(t);
  } else {
    m_.pool().run((cs.valid + kTokensPerTask - 1) / kTokensPerTask, [&](int64_t task) {
      for (int64_t t = task * kTokensPerTask; t < std::min(cs.valid, (task + 1) * kTokensPerTask); ++t) rotate(t);
    });
  }
  cache_.store(il, cs.pos0, cs.valid, cs.k.data(), cs.v.data());
  attend_causal(cache_, il, cs.q.data(), cs.pos0, cs.valid, AttentionShape{hp.n_head, hp.n_head_kv, hp.head_dim},
                cs.att.data(), m_.pool());
  cache_.finish_step(il);
  placement_.cpu_attention_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void LlamaSession::after_attention(ChunkState& cs, int il) const {
  const int64_t E = m_.hp.n_embd;
  add_inplace(cs.x.data(), cs.tmp.data(), cs.rows * E);
  rms_norm_rows(cs.x.data(), m_.layers[il].ffn_norm, cs.xn.data(), cs.rows, E, m_.hp.eps, &m_.pool());
}

void LlamaSession::after_ffn(ChunkState& cs) const {
  add_inplace(cs.x.data(), cs.tmp.data(), cs.rows * m_.hp.n_embd);
}

void LlamaSession::head(const ChunkState& cs, float* logits, bool all_logits) const {
  if (!logits) return;
  const int64_t E = m_.hp.n_embd, first = all_logits ? 0 : cs.valid - 1, n_out = cs.valid - first;
  std::vector<float> xn(static_cast<size_t>(n_out * E));
  for (int64_t t = first; t < cs.valid; ++t) rms_norm(&cs.x[t * E], m_.output_norm, &xn[(t - first) * E], E, m_.hp.eps);
  matmul(m_.output, xn.data(), n_out, logits, m_.pool());
}

void LlamaSession::forward_cpu(ChunkState& cs, int64_t keep_from) {
  const LlamaHparams& hp = m_.hp;
  for (int il = 0; il < hp.n_layer; ++il) {
    const LlamaLayer& L = m_.layers[il];
    rms_norm_rows(cs.x.data(), L.attn_norm, cs.xn.data(), cs.rows, hp.n_embd, hp.eps, &m_.pool());
    linear_cpu_shared({&L.wq, &L.wk, &L.wv}, cs, cs.xn.data(), {cs.q.data(), cs.k.data(), cs.v.data()});
    attention(cs, il);
    // The last layer's output projection and FFN for the rows the head reads only (as llama.cpp does):
    // a prompt's other rows have left everything later tokens need in the cache. An observer
    // (calibration) sees every row.
    if (il == hp.n_layer - 1 && keep_from > 0 && !observer_) {
      const int64_t n = std::max<int64_t>(0, cs.valid - keep_from), E = hp.n_embd;
      const int64_t q_dim = int64_t(hp.n_head) * hp.head_dim;
      std::copy_n(cs.x.begin() + keep_from * E, n * E, cs.x.begin());
      std::copy_n(cs.att.begin() + keep_from * q_dim, n * q_dim, cs.att.begin());
      cs.rows = cs.valid = n;
      if (n == 0) return;
    }
    linear_cpu(L.wo, cs, cs.att.data(), cs.tmp.data());
    after_attention(cs, il);
    linear_cpu_shared({&L.w_gate, &L.w_up}, cs, cs.xn.data(), {cs.gate.data(), cs.up.data()});
    silu_mul(cs.gate.data(), cs.up.data(), cs.rows * hp.n_ff, &m_.pool());
    linear_cpu(L.w_down, cs, cs.gate.data(), cs.tmp.data());
    after_ffn(cs);
  }
}

void LlamaModel::decode_batch(const std::vector<Session*>& sessions, const int32_t* tokens, float* logits) {
  check_decode_batch(sessions, tokens, vocab_size());
  std::vector<LlamaSession*> ls;
  for (size_t b = 0; b < sessions.size(); ++b) {
    auto* s = dynamic_cast<LlamaSession*>(sessions[b]);
    if (!s || &s->m_ != this) {
      fail(ErrorCode::kInvalidArgument, "decode_batch: session " + std::to_string(b) + " comes from another model");
    }
    ls.push_back(s);
  }
  if (ls.size() == 1) return ls[0]->feed(tokens, 1, logits, false);  // alone, its heads use the whole pool
  LlamaSession::decode_batch(ls, tokens, logits);
}

void LlamaSession::decode_batch(const std::vector<LlamaSession*>& ss, const int32_t* tokens, float* logits) {
  LlamaSession& s0 = *ss[0];
  const LlamaModel& m = s0.m_;
  const LlamaHparams& hp = m.hp;
  const int64_t B = int64_t(ss.size()), half = int64_t(m.inv_freq.size());
  const int64_t q_dim = int64_t(hp.n_head) * hp.head_dim, kv_dim = int64_t(hp.n_head_kv) * hp.head_dim;
  const auto t0 = std::chrono::steady_clock::now();
  ChunkState cs;
  s0.prepare(cs, tokens, B, B, 0);  // rows are sessions: each row's position is its session's n_past
  std::vector<float> angles(size_t(B * 2 * half));
  for (int64_t b = 0; b < B; ++b) token_angles(m, ss[b]->n_past_, &angles[size_t(b * 2 * half)]);
  try {
    for (int il = 0; il < hp.n_layer; ++il) {
      const LlamaLayer& L = m.layers[il];
      rms_norm_rows(cs.x.data(), L.attn_norm, cs.xn.data(), B, hp.n_embd, hp.eps, &m.pool());
      s0.linear_cpu_shared({&L.wq, &L.wk, &L.wv}, cs, cs.xn.data(), {cs.q.data(), cs.k.data(), cs.v.data()});
      const auto ta = std::chrono::steady_clock::now();
      // Each row into its own session's cache, attending to it alone: one pool job for all sessions
      // (a task per session, its heads inline), not one handoff per session.
      m.pool().run(B, [&](int64_t b) {
        LlamaSession& s = *ss[b];
        float *q = &cs.q[b * q_dim], *k = &cs.k[b * kv_dim];
        rope_qk(m, &angles[size_t(b * 2 * half)], q, k);
        s.cache_.store(il, s.n_past_, 1, k, &cs.v[b * kv_dim]);
        attend_causal(s.cache_, il, q, s.n_past_, 1, AttentionShape{hp.n_head, hp.n_head_kv, hp.head_dim},
                      &cs.att[b * q_dim], ThreadPool::inline_pool());
        s.cache_.finish_step(il);
      });
      s0.placement_.cpu_attention_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - ta).count();
      s0.linear_cpu(L.wo, cs, cs.att.data(), cs.tmp.data());
      s0.after_attention(cs, il);
      s0.linear_cpu_shared({&L.w_gate, &L.w_up}, cs, cs.xn.data(), {cs.gate.data(), cs.up.data()});
      silu_mul(cs.gate.data(), cs.up.data(), B * hp.n_ff, &m.pool());
      s0.linear_cpu(L.w_down, cs, cs.gate.data(), cs.tmp.data());
      s0.after_ffn(cs);
    }
    s0.head(cs, logits, true);
  } catch (...) {
    for (LlamaSession* s : ss) s->reset();  // caches may hold part of the step (as feed() does)
    throw;
  }
  const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  for (LlamaSession* s : ss) {
    ++s->n_past_, ++s->tokens_fed_, ++s->calls_, ++s->batched_decodes_;
    s->compute_s_ += dt / double(B);  // the step is shared: each session gets its share of the time
  }
}

void LlamaSession::prefill_on_delegate(const int32_t* ids, int64_t T, float* logits, bool all_logits) {
  const LlamaHparams& hp = m_.hp;
  const PrefillOptions& po = m_.options().prefill;
  const NpuPlan& npu = *m_.npu;
  const int64_t C = po.chunk, n_chunks = (T + C - 1) / C;
  // Chunks in flight share kWindow buffers: chunk c starts once chunk c - kWindow is done.
  constexpr int64_t kWindow = 3;
  std::vector<ChunkState> states(static_cast<size_t>(std::min(n_chunks, kWindow)));
  std::vector<std::vector<int32_t>> chunk_ids(static_cast<size_t>(n_chunks));
  TaskGraph g;
  std::vector<int> last_task(static_cast<size_t>(n_chunks), -1);
  std::vector<int> attention_task(static_cast<size_t>(hp.n_layer), -1);  // KV appends stay in chunk order
  const Device cpu = Device::kCpu, del = Device::kDelegate;
  for (int64_t c = 0; c < n_chunks; ++c) {
    ChunkState& cs = states[static_cast<size_t>(c % kWindow)];
    const int ci = static_cast<int>(c);
    const int64_t n = std::min(C, T - c * C);
    chunk_ids[c].assign(ids + c * C, ids + c * C + n);
    chunk_ids[c].resize(static_cast<size_t>(C), po.pad_token);
    std::vector<int> start_deps;
    if (c >= kWindow) start_deps.push_back(last_task[c - kWindow]);
    int prev = g.add(cpu, "embed", ci, -1, start_deps,
                     [this, &cs, &chunk_ids, c, C, n] { prepare(cs, chunk_ids[c].data(), C, n, n_past_ + c * C); });
    for (int il = 0; il < hp.n_layer; ++il) {
      const LlamaLayer& L = m_.layers[il];
      ChunkState* s = &cs;
      using W = ChunkState;
      // A group of linears on one input: their input-outlier corrections on the CPU (in parallel with
      // the delegate), the delegate work, then `after` on the CPU once both are done.
      struct Item {
        const Weight* w;
        W::Linear slot;
      };
      // `in` is a member: buffers get their size when the chunk's first task runs, not now.
      using Buffer = std::vector<float> ChunkState::*;
      auto group = [&](const char* kind, int dep, std::vector<Item> items, Buffer in, std::vector<int> after_deps,
                       const char* after_kind, std::function<void()> after) {
        std::vector<int> deps = std::move(after_deps);
        if (po.outliers) {
          deps.push_back(g.add(cpu, std::string("outliers_") + kind, ci, il, {dep}, [this, s, items, in, &npu] {
            for (const Item& it : items) npu.input_corrections(*it.w, (s->*in).data(), s->lin[it.slot], placement_);
          }));
        }
        deps.push_back(g.add(del, kind, ci, il, {dep}, [this, s, items, in, &npu] {
          for (const Item& it : items) npu.execute(*it.w, (s->*in).data(), s->lin[it.slot], placement_);
        }));
        return g.add(cpu, after_kind, ci, il, deps, std::move(after));
      };
      const int norm = g.add(cpu, "attn_norm", ci, il, {prev}, [this, s, &L] {
        rms_norm_rows(s->x.data(), L.attn_norm, s->xn.data(), s->rows, m_.hp.n_embd, m_.hp.eps);
      });
      std::vector<int> att_deps;
      if (attention_task[il] >= 0) att_deps.push_back(attention_task[il]);  // KV appends in chunk order
      const int att = group("qkv", norm, {{&L.wq, W::kQ}, {&L.wk, W::kK}, {&L.wv, W::kV}}, &ChunkState::xn, att_deps,
                            "attention", [this, s, &L, il] {
                              linear_finish(L.wq, *s, s->xn.data(), s->lin[W::kQ], s->q.data());
                              linear_finish(L.wk, *s, s->xn.data(), s->lin[W::kK], s->k.data());
                              linear_finish(L.wv, *s, s->xn.data(), s->lin[W::kV], s->v.data());
                              attention(*s, il);
                            });
      attention_task[il] = att;
      const int o_done =
          group("attn_output", att, {{&L.wo, W::kO}}, &ChunkState::att, {}, "attn_residual", [this, s, &L, il] {
            linear_finish(L.wo, *s, s->att.data(), s->lin[W::kO], s->tmp.data());
            after_attention(*s, il);
          });
      const int act = group("gate_up", o_done, {{&L.w_gate, W::kGate}, {&L.w_up, W::kUp}}, &ChunkState::xn, {},
                            "swiglu", [this, s, &L] {
                              linear_finish(L.w_gate, *s, s->xn.data(), s->lin[W::kGate], s->gate.data());
                              linear_finish(L.w_up, *s, s->xn.data(), s->lin[W::kUp], s->up.data());
                              silu_mul(s->gate.data(), s->up.data(), s->rows * m_.hp.n_ff, &m_.pool());
                            });
      prev = group("ffn_down", act, {{&L.w_down, W::kDown}}, &ChunkState::gate, {}, "ffn_residual", [this, s, &L] {
        linear_finish(L.w_down, *s, s->gate.data(), s->lin[W::kDown], s->tmp.data());
        after_ffn(*s);
      });
    }
    float* out = all_logits ? logits + c * C * hp.n_vocab : (c == n_chunks - 1 ? logits : nullptr);
    last_task[c] =
        out ? g.add(cpu, "output", ci, -1, {prev}, [this, &cs, out, all_logits] { head(cs, out, all_logits); }) : prev;
    ++placement_.chunks;
    placement_.pad_tokens += C - n;
  }
  g.run(po.overlap, latency_s_);
  trace_json_ = chrome_trace_json(g.trace());
  for (const TraceEvent& e : g.trace()) {
    if (e.device == Device::kCpu) cpu_busy_s_ += e.end_s - e.start_s;
  }
  prefill_wall_s_ += g.wall_s();
}

}  // namespace

std::shared_ptr<Model> create_llama(std::shared_ptr<GgufFile> file, const ModelOptions& opts) {
  return std::make_shared<LlamaModel>(std::move(file), opts);
}

}  // namespace pyrt
