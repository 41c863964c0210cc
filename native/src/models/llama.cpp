// Llama family decoder: RMSNorm, RoPE (adjacent pairs: the converter permutes HF Q/K for it),
// GQA attention over a KV cache, SwiGLU FFN, tied or untied output.
#include <chrono>
#include <cmath>
#include <cstring>

#include "core/ops.h"
#include "memory/kv_cache.h"
#include "models/loader.h"
#include "models/registry.h"
#include "pyrt/error.h"
#include "sched/npu_plan.h"

namespace pyrt {

namespace {

struct LlamaHparams {
  int n_layer = 0, n_embd = 0, n_ff = 0, n_head = 0, n_head_kv = 0, head_dim = 0, n_rot = 0;
  int64_t n_vocab = 0, n_ctx_train = 0;
  float eps = 1e-5f, rope_base = 10000.0f, rope_scale = 1.0f;
};

struct LlamaLayer {
  const float* attn_norm = nullptr;
  const float* ffn_norm = nullptr;
  Weight wq, wk, wv, wo, w_gate, w_up, w_down;
};

class LlamaModel;

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

 private:
  // Runs `rows` positions of which the first `valid` are real tokens (the rest pad a static-shape chunk:
  // they go through the position-wise ops but never reach attention or the KV cache). Writes logits of
  // every valid row, or of the last valid row, when `logits` is not null.
  void forward(const int32_t* ids, int64_t rows, int64_t valid, bool on_delegate, float* logits, bool all_logits);

  const LlamaModel& m_;
  int64_t n_ctx_, n_past_ = 0;
  KvCache cache_;
  double compute_s_ = 0;
  int64_t tokens_fed_ = 0, calls_ = 0;
  LinearObserver observer_;
  PlacementCounters placement_;
};

class LlamaModel : public Model {
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

  LlamaHparams hp;
  Weight tok_embd, output;
  const float* output_norm = nullptr;
  std::vector<LlamaLayer> layers;
  std::vector<float> inv_freq;
  KvSpec kv_k, kv_v;
  std::unique_ptr<NpuPlan> npu;  // prefill linears on a delegate (PrefillOptions::delegate)
};

LlamaModel::LlamaModel(std::shared_ptr<GgufFile> f, const ModelOptions& opts) : Model(std::move(f), opts) {
  const GgufFile& g = *file_;
  const std::string a = arch_ + ".";
  const ModelLoader ld(g, arch_, &opts_);
  hp.n_layer = ld.pos_int("block_count");
  hp.n_embd = ld.pos_int("embedding_length");
  hp.n_ff = ld.pos_int("feed_forward_length");
  hp.n_head = ld.pos_int("attention.head_count");
  hp.n_head_kv = static_cast<int>(g.get_int(a + "attention.head_count_kv", hp.n_head));
  if (hp.n_head_kv <= 0 || hp.n_head % hp.n_head_kv != 0) {
    fail(ErrorCode::kFormat, g.path() + ": head_count " + std::to_string(hp.n_head) + " is not a multiple of head_count_kv " + std::to_string(hp.n_head_kv));
  }
  if (hp.n_embd % hp.n_head != 0) fail(ErrorCode::kFormat, g.path() + ": embedding_length is not a multiple of head_count");
  hp.head_dim = static_cast<int>(g.get_int(a + "attention.key_length", hp.n_embd / hp.n_head));
  hp.n_rot = static_cast<int>(g.get_int(a + "rope.dimension_count", hp.head_dim));
  if (hp.n_rot <= 0 || hp.n_rot > hp.head_dim || hp.n_rot % 2) fail(ErrorCode::kFormat, g.path() + ": invalid rope.dimension_count " + std::to_string(hp.n_rot));
  hp.eps = static_cast<float>(g.get_float(a + "attention.layer_norm_rms_epsilon", 1e-5));
  hp.rope_base = static_cast<float>(g.get_float(a + "rope.freq_base", 10000.0));
  hp.n_ctx_train = g.get_int(a + "context_length", 2048);
  const std::string scaling = g.get_string(a + "rope.scaling.type", "none");
  if (scaling == "linear") {
    hp.rope_scale = 1.0f / static_cast<float>(g.get_float(a + "rope.scaling.factor", 1.0));
  } else if (scaling != "none" && !scaling.empty()) {
    fail(ErrorCode::kUnsupported, g.path() + ": rope scaling '" + scaling + "' is not supported yet (none, linear)");
  }
  kv_k = parse_kv_spec(opts_.kv_k);
  kv_v = parse_kv_spec(opts_.kv_v);

  const GgufTensorInfo* emb = g.find_tensor("token_embd.weight");
  if (!emb || emb->ne.size() != 2) fail(ErrorCode::kFormat, g.path() + ": tensor 'token_embd.weight' is missing or not 2-D");
  hp.n_vocab = emb->ne[1];
  const int64_t E = hp.n_embd, q_dim = int64_t(hp.n_head) * hp.head_dim, kv_dim = int64_t(hp.n_head_kv) * hp.head_dim;
  tok_embd = ld.weight("token_embd.weight", {E, hp.n_vocab});
  output_norm = ld.f32("output_norm.weight", E);
  output = ld.has("output.weight") ? ld.weight("output.weight", {E, hp.n_vocab}) : tok_embd;
  layers.resize(hp.n_layer);
  for (int i = 0; i < hp.n_layer; ++i) {
    const std::string p = "blk." + std::to_string(i) + ".";
    LlamaLayer& L = layers[i];
    L.attn_norm = ld.f32(p + "attn_norm.weight", E);
    L.ffn_norm = ld.f32(p + "ffn_norm.weight", E);
    L.wq = ld.weight(p + "attn_q.weight", {E, q_dim});
    L.wk = ld.weight(p + "attn_k.weight", {E, kv_dim});
    L.wv = ld.weight(p + "attn_v.weight", {E, kv_dim});
    L.wo = ld.weight(p + "attn_output.weight", {q_dim, E});
    L.w_gate = ld.weight(p + "ffn_gate.weight", {E, hp.n_ff});
    L.w_up = ld.weight(p + "ffn_up.weight", {E, hp.n_ff});
    L.w_down = ld.weight(p + "ffn_down.weight", {hp.n_ff, E});
  }
  const float* freq_factors = nullptr;
  if (ld.has("rope_freqs.weight")) freq_factors = ld.f32("rope_freqs.weight", hp.n_rot / 2);
  inv_freq = rope_inv_freq(hp.n_rot, hp.rope_base, freq_factors);
  if (!opts_.prefill.delegate.empty()) {
    std::vector<const Weight*> linears;
    for (const LlamaLayer& L : layers) {
      for (const Weight* w : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down}) linears.push_back(w);
    }
    npu = std::make_unique<NpuPlan>(g, linears, opts_.prefill, pool());
  }
  if (tokenizer_ && tokenizer_->vocab_size() > hp.n_vocab) {
    fail(ErrorCode::kFormat, g.path() + ": tokenizer has " + std::to_string(tokenizer_->vocab_size()) + " tokens but the embedding only " + std::to_string(hp.n_vocab));
  }
}

LlamaSession::LlamaSession(const LlamaModel& m, int64_t n_ctx)
    : m_(m), n_ctx_(n_ctx), cache_(m.hp.n_layer, m.hp.n_head_kv, m.hp.head_dim, m.kv_k, m.kv_v) {
  if (n_ctx <= 0) fail(ErrorCode::kInvalidArgument, "context size must be positive");
}

std::vector<float> LlamaSession::cached_rows(int layer, bool keys) const {
  if (layer < 0 || layer >= m_.hp.n_layer) {
    fail(ErrorCode::kOutOfRange, "layer " + std::to_string(layer) + " is outside 0.." + std::to_string(m_.hp.n_layer - 1));
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
  std::map<std::string, double> out{{"n_past", double(n_past_)}, {"n_ctx", double(n_ctx_)}, {"kv_bytes", double(cache_.bytes())},
          {"kv_k_quantized_tokens", double(kq)}, {"kv_k_full_precision_tokens", double(kf)},
          {"kv_v_quantized_tokens", double(vq)}, {"kv_v_full_precision_tokens", double(vf)},
          {"tokens_fed", double(tokens_fed_)}, {"feed_calls", double(calls_)}, {"compute_s", compute_s_},
          {"threads", double(m_.pool().size())}};
  placement_.add_to(out, m_.npu ? m_.npu->delegate_name() : "");
  if (m_.npu) out["placement.cpu.shadow_resident_bytes"] = double(m_.npu->cpu_resident_bytes());
  return out;
}

void LlamaSession::feed(const int32_t* ids, int64_t T, float* logits, bool all_logits) {
  if (T <= 0) fail(ErrorCode::kInvalidArgument, "feed() needs at least one token");
  if (n_past_ + T > n_ctx_) {
    fail(ErrorCode::kContextOverflow, "context overflow: " + std::to_string(n_past_) + " cached + " + std::to_string(T) +
                                          " new tokens exceed the context of " + std::to_string(n_ctx_));
  }
  check_token_ids(ids, T, m_.hp.n_vocab);
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t C = m_.options().prefill.chunk;
  if (C <= 0 || T == 1) {  // single tokens (decode) always take the CPU path
    forward(ids, T, T, false, logits, all_logits);
  } else {
    std::vector<int32_t> chunk(static_cast<size_t>(C), m_.options().prefill.pad_token);
    for (int64_t c0 = 0; c0 < T; c0 += C) {
      const int64_t n = std::min(C, T - c0);
      std::copy(ids + c0, ids + c0 + n, chunk.begin());
      std::fill(chunk.begin() + n, chunk.end(), m_.options().prefill.pad_token);
      float* out = all_logits ? logits + c0 * m_.hp.n_vocab : (c0 + n == T ? logits : nullptr);
      forward(chunk.data(), C, n, m_.npu != nullptr, out, all_logits);
      ++placement_.chunks;
      placement_.pad_tokens += C - n;
    }
  }
  tokens_fed_ += T;
  ++calls_;
  compute_s_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void LlamaSession::forward(const int32_t* ids, int64_t T, int64_t valid, bool on_delegate, float* logits, bool all_logits) {
  const LlamaHparams& hp = m_.hp;
  ThreadPool& pool = m_.pool();
  const int64_t E = hp.n_embd, q_dim = int64_t(hp.n_head) * hp.head_dim, kv_dim = int64_t(hp.n_head_kv) * hp.head_dim;
  std::vector<float> x(T * E), xn(T * E), q(T * q_dim), k(T * kv_dim), v(T * kv_dim), att(T * q_dim);
  std::vector<float> gate(T * hp.n_ff), up(T * hp.n_ff), tmp(T * E);
  auto linear = [&](const Weight& w, const float* in, float* out) {
    if (on_delegate) {
      m_.npu->run(w, in, out, placement_);
    } else {
      matmul(w, in, T, out, pool);
      ++placement_.cpu_linear_calls;
      placement_.cpu_linear_macs += double(T) * double(w.rows) * double(w.cols);
    }
    if (observer_) observer_(w, in, valid, out);
  };
  embed_tokens(m_.tok_embd, ids, T, x.data());
  const AttentionShape shape{hp.n_head, hp.n_head_kv, hp.head_dim};
  for (int il = 0; il < hp.n_layer; ++il) {
    const LlamaLayer& L = m_.layers[il];
    rms_norm_rows(x.data(), L.attn_norm, xn.data(), T, E, hp.eps);
    linear(L.wq, xn.data(), q.data());
    linear(L.wk, xn.data(), k.data());
    linear(L.wv, xn.data(), v.data());
    const auto ta = std::chrono::steady_clock::now();
    for (int64_t t = 0; t < valid; ++t) {
      const float pos = static_cast<float>(n_past_ + t) * hp.rope_scale;
      rope(&q[t * q_dim], hp.n_head, hp.head_dim, hp.n_rot, pos, m_.inv_freq, RopeMode::kNorm);
      rope(&k[t * kv_dim], hp.n_head_kv, hp.head_dim, hp.n_rot, pos, m_.inv_freq, RopeMode::kNorm);
    }
    cache_.store(il, n_past_, valid, k.data(), v.data());
    attend_causal(cache_, il, q.data(), n_past_, valid, shape, att.data(), pool);  // padded rows of att stay 0
    cache_.finish_step(il);
    placement_.cpu_attention_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - ta).count();
    linear(L.wo, att.data(), tmp.data());
    add_inplace(x.data(), tmp.data(), T * E);

    rms_norm_rows(x.data(), L.ffn_norm, xn.data(), T, E, hp.eps);
    linear(L.w_gate, xn.data(), gate.data());
    linear(L.w_up, xn.data(), up.data());
    silu_mul(gate.data(), up.data(), T * hp.n_ff);
    linear(L.w_down, gate.data(), tmp.data());
    add_inplace(x.data(), tmp.data(), T * E);
  }
  if (logits) {
    const int64_t first = all_logits ? 0 : valid - 1, n_out = valid - first;
    for (int64_t t = first; t < valid; ++t) rms_norm(&x[t * E], m_.output_norm, &xn[(t - first) * E], E, hp.eps);
    matmul(m_.output, xn.data(), n_out, logits, pool);
  }
  n_past_ += valid;
}

}  // namespace

std::shared_ptr<Model> create_llama(std::shared_ptr<GgufFile> file, const ModelOptions& opts) {
  return std::make_shared<LlamaModel>(std::move(file), opts);
}

}  // namespace pyrt
