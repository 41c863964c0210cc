// Decoder-only Llama on the GPU (see llama_cuda.h). A pass over T tokens, every step a kernel from
// kernels/: RMSNorm -> Q/K/V linears -> RoPE -> KV append (f16, q8_0/q4_0 blocks or KIVI) -> attention
// (FlashAttention over the cache for T > 1, causal bottom-right so a later prompt sees everything
// cached; split-K decode attention for T = 1, Lean Attention for a batch of sessions) -> output linear
// + residual -> RMSNorm -> gate/up -> SwiGLU -> down + residual. Linears (device.h): the dequantizing
// GEMV for up to 16 rows, the tensor-core GEMM (quantized tiles dequantized as they load) for more.
// Embedding rows are gathered on the host (one row per token).
#include "backends/cuda/llama_cuda.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include "models/checks.h"
#include "pyrt/error.h"
#include "pyrt/ggml_types.h"

namespace pyrt::cuda {

// ---- model ----
LlamaGpuModel::LlamaGpuModel(const std::string& path, const std::string& arch)
    : file_(GgufFile::open(path)), w_(load_llama_weights(*file_, arch, nullptr)) {
  up_.path = path;
  const LlamaHparams& hp = w_.hp;
  check_head_dim(path, hp.head_dim);
  if (hp.n_head / hp.n_head_kv > 8) {
    fail(ErrorCode::kUnsupported, path + ": " + std::to_string(hp.n_head / hp.n_head_kv) +
                                      " query heads per KV head; the CUDA decode attention takes at most 8");
  }
  layers_.resize(hp.n_layer);
  for (int i = 0; i < hp.n_layer; ++i) {
    const LlamaLayer& L = w_.layers[i];
    Layer& D = layers_[i];
    D.attn_norm = up_.floats(L.attn_norm, hp.n_embd);
    D.ffn_norm = up_.floats(L.ffn_norm, hp.n_embd);
    D.wq = up_.weight(L.wq), D.wk = up_.weight(L.wk), D.wv = up_.weight(L.wv), D.wo = up_.weight(L.wo);
    D.gate = up_.weight(L.w_gate), D.up = up_.weight(L.w_up), D.down = up_.weight(L.w_down);
  }
  output_norm_ = up_.floats(w_.output_norm, hp.n_embd);
  output_ = up_.weight(w_.output);
  // Linear RoPE scaling folded into the frequencies: angle = pos * (scale * inv_freq).
  std::vector<float> freq(w_.inv_freq);
  for (float& f : freq) f *= hp.rope_scale;
  inv_freq_ = up_.floats(freq.data(), int64_t(freq.size()));
}

std::unique_ptr<LlamaGpuSession> LlamaGpuModel::new_session(int64_t n_ctx, const std::string& kv) const {
  const KvSpec spec = parse_kv_spec(kv);
  if (spec.kind == KvSpec::Kind::kF32) {
    fail(ErrorCode::kUnsupported, "KV cache 'f32' is not available on the GPU (f16, q8_0, q4_0, kivi4, kivi2)");
  }
  return std::make_unique<LlamaGpuSession>(*this, n_ctx > 0 ? n_ctx : w_.hp.n_ctx_train, spec);
}

namespace {
KvFormat gpu_format(const KvSpec& s) {
  switch (s.kind) {
    case KvSpec::Kind::kQ8_0: return KvFormat::kQ8_0;
    case KvSpec::Kind::kQ4_0: return KvFormat::kQ4_0;
    case KvSpec::Kind::kKivi: return KvFormat::kKivi;
    default: return KvFormat::kF16;
  }
}
}  // namespace

LlamaGpuSession::LlamaGpuSession(const LlamaGpuModel& m, int64_t n_ctx, const KvSpec& kv)
    : m_(m), n_ctx_(n_ctx), kv_(gpu_format(kv)), kv_row_bytes_(size_t(kv_row_bytes(kv_, m.w_.hp.head_dim))), lin_() {
  const LlamaHparams& hp = m.w_.hp;
  if (n_ctx <= 0 || n_ctx > (int64_t(1) << 30))
    fail(ErrorCode::kInvalidArgument, "context size " + std::to_string(n_ctx) + " is out of range");
  // The whole context's cache up front: a GPU session is sized once, not grown per token.
  const size_t layer_bytes = size_t(hp.n_head_kv) * size_t(n_ctx) * kv_row_bytes_;
  for (int l = 0; l < hp.n_layer; ++l) {
    if (kv_ == KvFormat::kKivi) {
      kivi_k_.push_back(std::make_unique<KiviGpuStore>(kv, true, hp.n_head_kv, hp.head_dim, n_ctx));
      kivi_v_.push_back(std::make_unique<KiviGpuStore>(kv, false, hp.n_head_kv, hp.head_dim, n_ctx));
    } else {
      k_cache_.emplace_back(layer_bytes);
      v_cache_.emplace_back(layer_bytes);
    }
  }
  seqlen_.reserve(sizeof(int));
}

void LlamaGpuSession::reset() {
  n_past_ = 0;
  for (auto& st : kivi_k_) st->clear();
  for (auto& st : kivi_v_) st->clear();
}

size_t LlamaGpuSession::kv_bytes() const {
  const LlamaHparams& hp = m_.w_.hp;
  size_t kivi = 0;
  for (size_t l = 0; l < kivi_k_.size(); ++l) kivi += kivi_k_[l]->bytes() + kivi_v_[l]->bytes();
  return kivi + size_t(n_past_) * size_t(hp.n_layer) * 2 * size_t(hp.n_head_kv) * kv_row_bytes_;
}

std::map<std::string, double> LlamaGpuSession::stats() const {
  return {{"n_past", double(n_past_)},
          {"n_ctx", double(n_ctx_)},
          {"kv_bytes", double(kv_bytes())},
          {"kv_reserved_bytes", double(k_cache_.empty() ? 0 : 2 * k_cache_.size() * k_cache_[0].bytes())},
          {"weight_device_bytes", double(m_.device_bytes())},
          {"weights_converted_to_f16", double(m_.f32_weights_rounded())},
          {"prefill_tokens", double(prefill_tokens_)},
          {"decode_tokens", double(decode_tokens_)},
          {"gpu_passes", double(passes_)},
          {"batched_prefills", double(batched_prefills_)},
          {"batched_decodes", double(batched_decodes_)},
          {"prefill_s", prefill_s_},
          {"decode_s", decode_s_}};
}

void LlamaGpuSession::reserve(int64_t T) {
  if (T <= rows_reserved_) return;
  const LlamaHparams& hp = m_.w_.hp;
  const size_t E = size_t(hp.n_embd), F = size_t(hp.n_ff);
  const size_t qd = size_t(hp.n_head) * hp.head_dim, kvd = size_t(hp.n_head_kv) * hp.head_dim, t = size_t(T);
  x_.reserve(t * E * 4), xn_.reserve(t * E * 4), tmp_.reserve(t * E * 4);
  q_.reserve(t * qd * 4), att_.reserve(t * qd * 4), k_.reserve(t * kvd * 4), v_.reserve(t * kvd * 4);
  gate_.reserve(t * F * 4), up_.reserve(t * F * 4);
  half_q_.reserve(t * qd * 2);
  lse_.reserve(t * size_t(hp.n_head) * 4);
  rows_reserved_ = T;
}

void LlamaGpuSession::feed(const int32_t* ids, int64_t n, float* logits, bool all_logits) {
  const LlamaHparams& hp = m_.w_.hp;
  if (n <= 0) fail(ErrorCode::kInvalidArgument, "feed needs at least one token");
  check_token_ids(ids, n, hp.n_vocab);
  if (n_past_ + n > n_ctx_) {
    fail(ErrorCode::kContextOverflow, "feeding " + std::to_string(n) + " tokens after " + std::to_string(n_past_) +
                                          " overflows the context of " + std::to_string(n_ctx_));
  }
  const auto t0 = std::chrono::steady_clock::now();
  // KIVI prompts take one pass, as on the CPU: the paper's prefill reads every prompt token in fp16,
  // and a later pass would read the earlier ones quantized.
  const int64_t pass_rows = kv_ == KvFormat::kKivi ? n : kMaxPassRows;
  for (int64_t c0 = 0; c0 < n; c0 += pass_rows) {
    const int64_t T = std::min(pass_rows, n - c0);
    const bool last = c0 + T == n;
    float* out = all_logits ? logits + c0 * hp.n_vocab : (last ? logits : nullptr);
    pass(ids + c0, T, out, all_logits ? 0 : T - 1);
  }
  (n == 1 ? decode_s_ : prefill_s_) += seconds_since(t0);
  (n == 1 ? decode_tokens_ : prefill_tokens_) += n;
}

void LlamaGpuSession::pass(const int32_t* ids, int64_t T, float* logits, int64_t first) {
  const LlamaHparams& hp = m_.w_.hp;
  const int64_t E = hp.n_embd, qd = int64_t(hp.n_head) * hp.head_dim;
  reserve(T);
  ++passes_;
  upload_embeddings(m_.w_.tok_embd, ids, T, x_);
  const int pos0 = int(n_past_);
  const float scale = 1.0f / std::sqrt(float(hp.head_dim));
  if (T == 1) {
    const int len = pos0 + 1;
    check(cudaMemcpy(seqlen_.as<int>(), &len, sizeof(int), cudaMemcpyHostToDevice), "sequence length");
  }
  const int n_splits = T == 1 ? decode_auto_splits(kv_, 1, hp.n_head_kv, hp.head_dim, pos0 + 1) : 1;
  if (T > 1 && kv_ != KvFormat::kF16) {  // prefill attention reads fp16 copies of the cached range
    const size_t bytes = size_t(hp.n_head_kv) * size_t(pos0 + T) * size_t(hp.head_dim) * 2;
    k_f16_.reserve(bytes);
    v_f16_.reserve(bytes);
  }
  if (T == 1) {
    o_partial_.reserve(size_t(hp.n_head) * n_splits * hp.head_dim * 4);
    lse_partial_.reserve(size_t(hp.n_head) * n_splits * 4);
  }
  for (int il = 0; il < hp.n_layer; ++il) {
    const LlamaGpuModel::Layer& L = m_.layers_[il];
    qkv(L, T);
    check(
        rope(q_.as<float>(), int(T), hp.n_head, hp.head_dim, hp.n_rot, pos0, m_.inv_freq_.as<float>(), false, nullptr),
        "rope q");
    check(rope(k_.as<float>(), int(T), hp.n_head_kv, hp.head_dim, hp.n_rot, pos0, m_.inv_freq_.as<float>(), false,
               nullptr),
          "rope k");
    const bool kivi = kv_ == KvFormat::kKivi;
    void* kc = kivi ? nullptr : k_cache_[il].as<void>();
    void* vc = kivi ? nullptr : v_cache_[il].as<void>();
    DecodeParams kivi_p{};  // the layer's KIVI caches as the kernels read them
    if (kivi) {
      kivi_k_[il]->append(k_.as<float>(), T);
      kivi_v_[il]->append(v_.as<float>(), T);
      kivi_p.format = KvFormat::kKivi, kivi_p.B = 1, kivi_p.Hkv = hp.n_head_kv, kivi_p.D = hp.head_dim;
      kivi_p.kivi_k = kivi_k_[il]->device_view(), kivi_p.kivi_v = kivi_v_[il]->device_view();
    } else {
      check(kv_append(kv_, k_.as<float>(), int(T), hp.n_head_kv, hp.head_dim, kc, int(n_ctx_), pos0, nullptr),
            "kv append k");
      check(kv_append(kv_, v_.as<float>(), int(T), hp.n_head_kv, hp.head_dim, vc, int(n_ctx_), pos0, nullptr),
            "kv append v");
    }
    check(f32_to_f16(q_.as<float>(), half_q_.as<half>(), T * qd, nullptr), "q to fp16");
    if (T == 1) {
      DecodeParams p{};
      p.q = half_q_.as<half>(), p.k = kc, p.v = vc, p.seqlens = seqlen_.as<int>(), p.format = kv_;
      p.kivi_k = kivi_p.kivi_k, p.kivi_v = kivi_p.kivi_v;
      p.B = 1, p.Hq = hp.n_head, p.Hkv = hp.n_head_kv, p.S_max = int(n_ctx_), p.D = hp.head_dim;
      p.scale = scale, p.n_splits = n_splits;
      p.o_partial = o_partial_.as<float>(), p.lse_partial = lse_partial_.as<float>();
      p.out = att_.as<float>(), p.lse = lse_.as<float>();
      check(decode_attn(p, nullptr), "decode_attn");
    } else {
      FlashParams p{};
      const int Sk = pos0 + int(T);
      p.q = half_q_.as<half>(), p.out = att_.as<float>(), p.lse = lse_.as<float>();
      if (kv_ == KvFormat::kF16) {
        p.k = static_cast<const half*>(kc), p.v = static_cast<const half*>(vc), p.kv_capacity = int(n_ctx_);
      } else {
        if (kivi) {
          check(kivi_to_f16(kivi_p, Sk, k_f16_.as<half>(), v_f16_.as<half>(), nullptr), "kivi_to_f16");
        } else {
          check(kv_to_f16(kv_, kc, hp.n_head_kv, int(n_ctx_), Sk, hp.head_dim, k_f16_.as<half>(), nullptr),
                "kv_to_f16 k");
          check(kv_to_f16(kv_, vc, hp.n_head_kv, int(n_ctx_), Sk, hp.head_dim, v_f16_.as<half>(), nullptr),
                "kv_to_f16 v");
        }
        p.k = k_f16_.as<half>(), p.v = v_f16_.as<half>();
      }
      p.B = 1, p.Hq = hp.n_head, p.Hkv = hp.n_head_kv, p.Sq = int(T), p.Sk = Sk, p.D = hp.head_dim;
      p.scale = scale, p.causal = true, p.q_token_major = true;
      check(flash_attn_fwd(p, nullptr), "flash_attn_fwd");
    }
    if (kivi) {  // after the step's attention, as on the CPU: tokens move out of the fp16 window
      kivi_k_[il]->finish_step();
      kivi_v_[il]->finish_step();
    }
    after_attention(L, T);
  }
  n_past_ += T;
  if (logits) head(x_.as<float>() + first * E, T - first, logits);
}

void LlamaGpuSession::qkv(const LlamaGpuModel::Layer& L, int64_t T) {
  const LlamaHparams& hp = m_.w_.hp;
  check(rms_norm(x_.as<float>(), L.attn_norm.as<float>(), xn_.as<float>(), int(T), hp.n_embd, hp.eps, nullptr),
        "rms_norm");
  linear(L.wq, xn_.as<float>(), T, q_.as<float>());
  linear(L.wk, xn_.as<float>(), T, k_.as<float>());
  linear(L.wv, xn_.as<float>(), T, v_.as<float>());
}

void LlamaGpuSession::after_attention(const LlamaGpuModel::Layer& L, int64_t T) {
  const LlamaHparams& hp = m_.w_.hp;
  const int64_t E = hp.n_embd;
  linear(L.wo, att_.as<float>(), T, tmp_.as<float>());
  check(add_inplace(x_.as<float>(), tmp_.as<float>(), T * E, nullptr), "residual");
  check(rms_norm(x_.as<float>(), L.ffn_norm.as<float>(), xn_.as<float>(), int(T), int(E), hp.eps, nullptr), "rms_norm");
  linear(L.gate, xn_.as<float>(), T, gate_.as<float>());
  linear(L.up, xn_.as<float>(), T, up_.as<float>());
  check(swiglu(gate_.as<float>(), up_.as<float>(), T * hp.n_ff, nullptr), "swiglu");
  linear(L.down, gate_.as<float>(), T, tmp_.as<float>());
  check(add_inplace(x_.as<float>(), tmp_.as<float>(), T * E, nullptr), "residual");
}

void LlamaGpuSession::head(const float* rows, int64_t n_out, float* logits) {
  const LlamaHparams& hp = m_.w_.hp;
  check(rms_norm(rows, m_.output_norm_.as<float>(), xn_.as<float>(), int(n_out), hp.n_embd, hp.eps, nullptr),
        "output norm");
  logits_.reserve(size_t(n_out * hp.n_vocab) * 4);  // only the rows asked for (usually one)
  linear(m_.output_, xn_.as<float>(), n_out, logits_.as<float>());
  check(cudaMemcpy(logits, logits_.as<float>(), size_t(n_out * hp.n_vocab) * 4, cudaMemcpyDeviceToHost), "logits");
}

void LlamaGpuSession::prefill_batch(const std::vector<LlamaGpuSession*>& sessions,
                                    const std::vector<std::vector<int32_t>>& prompts, float* logits) {
  if (sessions.empty() || sessions.size() != prompts.size()) {
    fail(ErrorCode::kInvalidArgument, "prefill_batch needs one prompt per session");
  }
  LlamaGpuSession& s0 = *sessions[0];
  const LlamaGpuModel& m = s0.m_;
  const LlamaHparams& hp = m.w_.hp;
  std::vector<int32_t> ids;
  std::vector<int> cu{0}, positions;
  int max_len = 0;
  for (size_t b = 0; b < sessions.size(); ++b) {
    LlamaGpuSession& s = *sessions[b];
    const int64_t n = int64_t(prompts[b].size());
    if (&s.m_ != &m) fail(ErrorCode::kInvalidArgument, "prefill_batch: every session must come from the same model");
    if (s.kv_ != KvFormat::kF16 || s.n_past_ != 0) {
      fail(ErrorCode::kInvalidArgument,
           "prefill_batch: session " + std::to_string(b) + " must be fresh (nothing fed) with an f16 KV cache");
    }
    if (n == 0 || n > s.n_ctx_) {
      fail(n == 0 ? ErrorCode::kInvalidArgument : ErrorCode::kContextOverflow,
           "prefill_batch: prompt " + std::to_string(b) + " has " + std::to_string(n) + " tokens (context " +
               std::to_string(s.n_ctx_) + ")");
    }
    check_token_ids(prompts[b].data(), n, hp.n_vocab);
    ids.insert(ids.end(), prompts[b].begin(), prompts[b].end());
    for (int i = 0; i < int(n); ++i) positions.push_back(i);
    cu.push_back(cu.back() + int(n));
    max_len = std::max(max_len, int(n));
  }
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t T = cu.back(), B = int64_t(sessions.size());
  const int64_t qd = int64_t(hp.n_head) * hp.head_dim, kvd = int64_t(hp.n_head_kv) * hp.head_dim;
  s0.reserve(T);
  s0.k_f16_.reserve(size_t(T * kvd) * 2), s0.v_f16_.reserve(size_t(T * kvd) * 2);
  DeviceBuffer cu_dev, pos_dev;
  cu_dev.upload(cu.data(), cu.size() * sizeof(int));
  pos_dev.upload(positions.data(), positions.size() * sizeof(int));
  upload_embeddings(m.w_.tok_embd, ids.data(), T, s0.x_);
  for (int il = 0; il < hp.n_layer; ++il) {
    const LlamaGpuModel::Layer& L = m.layers_[il];
    s0.qkv(L, T);  // every prompt's rows in one GEMM each: no padding
    check(rope_positions(s0.q_.as<float>(), int(T), hp.n_head, hp.head_dim, hp.n_rot, pos_dev.as<int>(),
                         m.inv_freq_.as<float>(), false, nullptr),
          "rope q");
    check(rope_positions(s0.k_.as<float>(), int(T), hp.n_head_kv, hp.head_dim, hp.n_rot, pos_dev.as<int>(),
                         m.inv_freq_.as<float>(), false, nullptr),
          "rope k");
    for (int64_t b = 0; b < B; ++b) {  // each session's cache gets its own rows
      LlamaGpuSession& s = *sessions[b];
      const int n = cu[b + 1] - cu[b];
      check(kv_append(KvFormat::kF16, s0.k_.as<float>() + cu[b] * kvd, n, hp.n_head_kv, hp.head_dim,
                      s.k_cache_[il].as<void>(), int(s.n_ctx_), 0, nullptr),
            "kv append k");
      check(kv_append(KvFormat::kF16, s0.v_.as<float>() + cu[b] * kvd, n, hp.n_head_kv, hp.head_dim,
                      s.v_cache_[il].as<void>(), int(s.n_ctx_), 0, nullptr),
            "kv append v");
    }
    check(f32_to_f16(s0.q_.as<float>(), s0.half_q_.as<half>(), T * qd, nullptr), "q to fp16");
    check(f32_to_f16(s0.k_.as<float>(), s0.k_f16_.as<half>(), T * kvd, nullptr), "k to fp16");
    check(f32_to_f16(s0.v_.as<float>(), s0.v_f16_.as<half>(), T * kvd, nullptr), "v to fp16");
    FlashParams p{};  // varlen: the packed rows attend causally within their own prompt
    p.q = s0.half_q_.as<half>(), p.k = s0.k_f16_.as<half>(), p.v = s0.v_f16_.as<half>();
    p.out = s0.att_.as<float>(), p.lse = s0.lse_.as<float>();
    p.B = int(B), p.Hq = hp.n_head, p.Hkv = hp.n_head_kv, p.Sq = p.Sk = max_len, p.D = hp.head_dim;
    p.scale = 1.0f / std::sqrt(float(hp.head_dim)), p.causal = true;
    p.cu_seqlens_q = p.cu_seqlens_k = cu_dev.as<int>(), p.total_q = int(T);
    check(flash_attn_fwd(p, nullptr), "flash_attn_fwd (varlen)");
    s0.after_attention(L, T);
  }
  for (int64_t b = 0; b < B; ++b) {  // the last row of each prompt, gathered for the head
    check(cudaMemcpy(s0.tmp_.as<float>() + b * hp.n_embd, s0.x_.as<float>() + (cu[b + 1] - 1) * int64_t(hp.n_embd),
                     size_t(hp.n_embd) * 4, cudaMemcpyDeviceToDevice),
          "last rows");
  }
  s0.head(s0.tmp_.as<float>(), B, logits);
  const double dt = seconds_since(t0);
  for (int64_t b = 0; b < B; ++b) {
    LlamaGpuSession& s = *sessions[b];
    s.n_past_ = cu[b + 1] - cu[b];
    s.prefill_tokens_ += s.n_past_;
    s.prefill_s_ += dt / double(B);  // the pass is shared: each session gets its share of the time
    ++s.batched_prefills_;
  }
}

void LlamaGpuSession::decode_batch(const std::vector<LlamaGpuSession*>& sessions, const std::vector<int32_t>& tokens,
                                   float* logits) {
  if (sessions.size() != tokens.size()) fail(ErrorCode::kInvalidArgument, "decode_batch needs one token per session");
  check_decode_batch(sessions, tokens.data(), sessions.empty() ? 0 : sessions[0]->m_.w_.hp.n_vocab,
                     [&](const LlamaGpuSession* s) { return &s->m_ == &sessions[0]->m_; });
  LlamaGpuSession& s0 = *sessions[0];
  const LlamaGpuModel& m = s0.m_;
  const LlamaHparams& hp = m.w_.hp;
  const int B = int(sessions.size());
  std::vector<int> seqlens, positions;
  for (int b = 0; b < B; ++b) {
    const LlamaGpuSession& s = *sessions[b];
    if (&s.m_ != &m) fail(ErrorCode::kInvalidArgument, "decode_batch: every session must come from the same model");
    if (s.kv_ != s0.kv_) {
      fail(ErrorCode::kInvalidArgument,
           "decode_batch: session " + std::to_string(b) + " has a different KV cache format from session 0");
    }
    positions.push_back(int(s.n_past_));
    seqlens.push_back(int(s.n_past_) + 1);
  }
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t kvd = int64_t(hp.n_head_kv) * hp.head_dim, qd = int64_t(hp.n_head) * hp.head_dim;
  const int G = hp.n_head / hp.n_head_kv;
  const bool kivi = s0.kv_ == KvFormat::kKivi;
  s0.reserve(B);
  // Lean Attention's schedule: the ragged caches' 64-key tiles cut evenly over the resident CTAs.
  const std::vector<int> prefix = lean_tile_prefix(seqlens, hp.n_head_kv);
  const int n_ctas = lean_auto_ctas(s0.kv_, hp.head_dim);
  const size_t slots = size_t(lean_partial_slots(n_ctas, B, hp.n_head_kv)) * G;
  s0.o_partial_.reserve(slots * hp.head_dim * 4), s0.lse_partial_.reserve(slots * 4);
  DeviceBuffer seqlen_dev, pos_dev, prefix_dev, seqs_dev, kivi_dev;
  seqlen_dev.upload(seqlens.data(), seqlens.size() * sizeof(int));
  pos_dev.upload(positions.data(), positions.size() * sizeof(int));
  prefix_dev.upload(prefix.data(), prefix.size() * sizeof(int));
  if (!kivi) {  // every layer's caches of every session, [layer][session]
    std::vector<KvSeq> seqs;
    for (int il = 0; il < hp.n_layer; ++il)
      for (const LlamaGpuSession* s : sessions)
        seqs.push_back({s->k_cache_[il].as<void>(), s->v_cache_[il].as<void>(), int(s->n_ctx_)});
    seqs_dev.upload(seqs.data(), seqs.size() * sizeof(KvSeq));
  } else {
    kivi_dev.reserve(2 * size_t(B) * sizeof(KiviCache));
  }
  upload_embeddings(m.w_.tok_embd, tokens.data(), B, s0.x_);
  for (int il = 0; il < hp.n_layer; ++il) {
    const LlamaGpuModel::Layer& L = m.layers_[il];
    s0.qkv(L, B);
    check(rope_positions(s0.q_.as<float>(), B, hp.n_head, hp.head_dim, hp.n_rot, pos_dev.as<int>(),
                         m.inv_freq_.as<float>(), false, nullptr),
          "rope q");
    check(rope_positions(s0.k_.as<float>(), B, hp.n_head_kv, hp.head_dim, hp.n_rot, pos_dev.as<int>(),
                         m.inv_freq_.as<float>(), false, nullptr),
          "rope k");
    DecodeParams p{};
    std::vector<KiviCache> views;
    for (int b = 0; b < B; ++b) {  // each token into its own session's cache
      LlamaGpuSession& s = *sessions[b];
      const float* krow = s0.k_.as<float>() + b * kvd;
      const float* vrow = s0.v_.as<float>() + b * kvd;
      if (kivi) {
        s.kivi_k_[il]->append(krow, 1);
        s.kivi_v_[il]->append(vrow, 1);
      } else {
        check(kv_append(s.kv_, krow, 1, hp.n_head_kv, hp.head_dim, s.k_cache_[il].as<void>(), int(s.n_ctx_),
                        positions[b], nullptr),
              "kv append k");
        check(kv_append(s.kv_, vrow, 1, hp.n_head_kv, hp.head_dim, s.v_cache_[il].as<void>(), int(s.n_ctx_),
                        positions[b], nullptr),
              "kv append v");
      }
    }
    if (kivi) {  // keys of every session, then values
      for (const LlamaGpuSession* s : sessions) views.push_back(s->kivi_k_[il]->view());
      for (const LlamaGpuSession* s : sessions) views.push_back(s->kivi_v_[il]->view());
      check(cudaMemcpy(kivi_dev.as<void>(), views.data(), views.size() * sizeof(KiviCache), cudaMemcpyHostToDevice),
            "kivi views");
      p.kivi_k = kivi_dev.as<KiviCache>(), p.kivi_v = kivi_dev.as<KiviCache>() + B;
    } else {
      p.seqs = seqs_dev.as<KvSeq>() + size_t(il) * B;
    }
    check(f32_to_f16(s0.q_.as<float>(), s0.half_q_.as<half>(), B * qd, nullptr), "q to fp16");
    p.q = s0.half_q_.as<half>(), p.seqlens = seqlen_dev.as<int>(), p.format = s0.kv_;
    p.B = B, p.Hq = hp.n_head, p.Hkv = hp.n_head_kv, p.D = hp.head_dim, p.scale = 1.0f / std::sqrt(float(hp.head_dim));
    p.o_partial = s0.o_partial_.as<float>(), p.lse_partial = s0.lse_partial_.as<float>();
    p.out = s0.att_.as<float>(), p.lse = s0.lse_.as<float>();
    check(decode_attn_lean(p, prefix_dev.as<int>(), prefix.back(), n_ctas, nullptr), "decode_attn_lean");
    if (kivi) {
      for (LlamaGpuSession* s : sessions) s->kivi_k_[il]->finish_step(), s->kivi_v_[il]->finish_step();
    }
    s0.after_attention(L, B);
  }
  s0.head(s0.x_.as<float>(), B, logits);
  const double dt = seconds_since(t0);
  for (LlamaGpuSession* s : sessions) {
    ++s->n_past_, ++s->decode_tokens_, ++s->batched_decodes_;
    s->decode_s_ += dt / double(B);  // the step is shared: each session gets its share of the time
  }
}

}  // namespace pyrt::cuda
