// T5 on the GPU (see t5_cuda.h), step for step models/t5.cpp: RMSNorm (no bias) -> Q/K/V -> attention
// with scale 1 and the stack's relative position bias -> O + residual; decoder layers add
// cross-attention over the encoder's K/V; FFN: ReLU, or gated GELU for v1.1; the final norm carries
// the logit scale (v1.0's tied head). Every step is a kernel from kernels/.
#include "backends/cuda/t5_cuda.h"

#include <algorithm>
#include <chrono>

#include "models/checks.h"
#include "pyrt/error.h"

namespace pyrt::cuda {

namespace {

static_assert(int(Activation::kRelu) == int(Act::kRelu) && int(Activation::kGeluTanh) == int(Act::kGeluTanh) &&
                  int(Activation::kGeluErf) == int(Act::kGeluErf) && int(Activation::kSilu) == int(Act::kSilu),
              "the GPU activations follow core/ops.h");

// The stack's bias by relative position for Sq queries (the last Sq of Sk positions) against Sk keys:
// [heads][j - i + Sq - 1], the layout flash_attn_fwd reads.
std::vector<float> bias_by_distance(const RelativeBias& b, int heads, int64_t Sq, int64_t Sk) {
  const int64_t n = Sq + Sk - 1;
  std::vector<float> out(size_t(heads * n));
  for (int h = 0; h < heads; ++h)
    for (int64_t idx = 0; idx < n; ++idx) out[size_t(h * n + idx)] = b.at(h, idx - (Sk - 1));
  return out;
}

// Buffers of one pass over T rows.
struct Pass {
  DeviceBuffer xn, q, k, v, att, tmp, hidden, gate, half_q, lse, bias;
  void reserve(const T5Weights& w, int64_t T) {
    const size_t t = size_t(T), E = size_t(w.E_), I = size_t(w.inner_), F = size_t(w.F_);
    xn.reserve(t * E * 4), tmp.reserve(t * E * 4);
    q.reserve(t * I * 4), k.reserve(t * I * 4), v.reserve(t * I * 4), att.reserve(t * I * 4);
    hidden.reserve(t * F * 4), gate.reserve(t * F * 4), half_q.reserve(t * I * 2);
    lse.reserve(t * size_t(w.n_head_) * 4);
  }
};

// att [T, heads * d] = softmax(q k^T + bias) v over Sk cached keys (fp16 [heads, capacity, d]).
void attend(const T5Weights& w, Pass& p, int64_t T, const void* k_cache, const void* v_cache, int64_t Sk,
            int64_t capacity, bool causal, const float* bias) {
  check(f32_to_f16(p.q.as<float>(), p.half_q.as<half>(), T * w.inner_, nullptr), "q to fp16");
  FlashParams f{};
  f.q = p.half_q.as<half>(), f.k = static_cast<const half*>(k_cache), f.v = static_cast<const half*>(v_cache);
  f.out = p.att.as<float>(), f.lse = p.lse.as<float>();
  f.B = 1, f.Hq = f.Hkv = w.n_head_, f.Sq = int(T), f.Sk = int(Sk), f.D = w.d_kv_;
  f.scale = 1.0f, f.causal = causal, f.kv_capacity = int(capacity), f.q_token_major = true, f.rel_bias = bias;
  check(flash_attn_fwd(f, nullptr), "flash_attn_fwd");
}

void ffn(const T5Weights& w, const DeviceWeight& up, const DeviceWeight& gate, const DeviceWeight& down, Linear& lin,
         Pass& p, int64_t T) {
  lin.run(up, p.xn.as<float>(), T, p.hidden.as<float>());
  if (w.gated_) {
    lin.run(gate, p.xn.as<float>(), T, p.gate.as<float>());
    check(act_mul(Act(w.act_), p.gate.as<float>(), p.hidden.as<float>(), T * w.F_, nullptr), "gated activation");
    lin.run(down, p.gate.as<float>(), T, p.tmp.as<float>());
  } else {
    check(act_mul(Act(w.act_), p.hidden.as<float>(), nullptr, T * w.F_, nullptr), "activation");
    lin.run(down, p.hidden.as<float>(), T, p.tmp.as<float>());
  }
}

}  // namespace

T5GpuModel::T5GpuModel(const std::string& path, const std::string& arch)
    : file_(GgufFile::open(path)), w_(load_t5_weights(*file_, arch, nullptr)) {
  up_.path = path;
  check_head_dim(path, w_.d_kv_);
  auto layer = [&](const T5Layer& L, bool decoder) {
    Layer D;
    D.attn_norm = up_.floats(L.attn_norm, w_.E_), D.ffn_norm = up_.floats(L.ffn_norm, w_.E_);
    D.q = up_.weight(L.self.q), D.k = up_.weight(L.self.k), D.v = up_.weight(L.self.v), D.o = up_.weight(L.self.o);
    if (decoder) {
      D.cross_norm = up_.floats(L.cross_norm, w_.E_);
      D.cq = up_.weight(L.cross.q), D.ck = up_.weight(L.cross.k), D.cv = up_.weight(L.cross.v),
      D.co = up_.weight(L.cross.o);
    }
    D.up = up_.weight(L.up), D.down = up_.weight(L.down);
    if (w_.gated_) D.gate = up_.weight(L.gate);
    return D;
  };
  for (const T5Layer& L : w_.enc_) enc_.push_back(layer(L, false));
  for (const T5Layer& L : w_.dec_) dec_.push_back(layer(L, true));
  enc_norm_ = up_.floats(w_.enc_norm_, w_.E_);
  dec_norm_ = up_.floats(w_.dec_norm_, w_.E_, w_.logit_scale_);
  output_ = up_.weight(w_.output_);
}

std::unique_ptr<T5GpuSession> T5GpuModel::new_session(int64_t n_ctx) const {
  return std::make_unique<T5GpuSession>(*this, n_ctx > 0 ? n_ctx : w_.n_ctx_train_);
}

void T5GpuModel::encode_device(const int32_t* ids, const std::vector<int>& lengths, DeviceBuffer& x) const {
  std::vector<int> cu(lengths.size() + 1, 0);
  int max_len = 0;
  for (size_t b = 0; b < lengths.size(); ++b) {
    if (lengths[b] < 0) fail(ErrorCode::kInvalidArgument, "negative sequence length");
    cu[b + 1] = cu[b] + lengths[b];
    max_len = std::max(max_len, lengths[b]);
  }
  const int64_t T = cu.back();
  if (T <= 0) fail(ErrorCode::kInvalidArgument, "the encoder needs at least one token");
  upload_embeddings(w_.tok_embd_, ids, T, x);
  Pass p;
  p.reserve(w_, T);
  Linear lin;
  DeviceBuffer cu_dev, kh(size_t(T * w_.inner_) * 2), vh(size_t(T * w_.inner_) * 2);
  cu_dev.upload(cu.data(), cu.size() * sizeof(int));
  const std::vector<float> bias = bias_by_distance(w_.enc_bias_, w_.n_head_, max_len, max_len);
  p.bias.upload(bias.data(), bias.size() * 4);
  for (const Layer& L : enc_) {
    check(rms_norm(x.as<float>(), L.attn_norm.as<float>(), p.xn.as<float>(), int(T), int(w_.E_), w_.eps_, nullptr),
          "rms_norm");
    lin.run(L.q, p.xn.as<float>(), T, p.q.as<float>());
    lin.run(L.k, p.xn.as<float>(), T, p.k.as<float>());
    lin.run(L.v, p.xn.as<float>(), T, p.v.as<float>());
    check(f32_to_f16(p.q.as<float>(), p.half_q.as<half>(), T * w_.inner_, nullptr), "q to fp16");
    check(f32_to_f16(p.k.as<float>(), kh.as<half>(), T * w_.inner_, nullptr), "k to fp16");
    check(f32_to_f16(p.v.as<float>(), vh.as<half>(), T * w_.inner_, nullptr), "v to fp16");
    // ByteTransformer-style: the packed rows [T, heads, d_kv] attend within their own sequence.
    FlashParams f{};
    f.q = p.half_q.as<half>(), f.k = kh.as<half>(), f.v = vh.as<half>(), f.out = p.att.as<float>(),
    f.lse = p.lse.as<float>();
    f.B = int(lengths.size()), f.Hq = f.Hkv = w_.n_head_, f.Sq = f.Sk = max_len, f.D = w_.d_kv_;
    f.scale = 1.0f, f.causal = false, f.rel_bias = p.bias.as<float>();
    f.cu_seqlens_q = f.cu_seqlens_k = cu_dev.as<int>(), f.total_q = int(T);
    check(flash_attn_fwd(f, nullptr), "flash_attn_fwd (varlen)");
    lin.run(L.o, p.att.as<float>(), T, p.tmp.as<float>());
    check(add_inplace(x.as<float>(), p.tmp.as<float>(), T * w_.E_, nullptr), "residual");
    check(rms_norm(x.as<float>(), L.ffn_norm.as<float>(), p.xn.as<float>(), int(T), int(w_.E_), w_.eps_, nullptr),
          "rms_norm");
    ffn(w_, L.up, L.gate, L.down, lin, p, T);
    check(add_inplace(x.as<float>(), p.tmp.as<float>(), T * w_.E_, nullptr), "residual");
  }
  // Final norm (rows are independent): x becomes the encoder states.
  check(rms_norm(x.as<float>(), enc_norm_.as<float>(), p.xn.as<float>(), int(T), int(w_.E_), w_.eps_, nullptr),
        "rms_norm");
  check(cudaMemcpy(x.as<void>(), p.xn.as<void>(), size_t(T * w_.E_) * 4, cudaMemcpyDeviceToDevice), "states");
}

void T5GpuModel::encode(const int32_t* ids, int64_t n, float* out) const {
  if (n <= 0 || n > (int64_t(1) << 30)) fail(ErrorCode::kInvalidArgument, "the encoder needs at least one token");
  DeviceBuffer states;
  encode_device(ids, {int(n)}, states);
  check(cudaMemcpy(out, states.as<void>(), size_t(n * w_.E_) * 4, cudaMemcpyDeviceToHost), "encoder states");
}

void T5GpuModel::encode_batch(const int32_t* ids, const std::vector<int>& lengths, float* out) const {
  int64_t total = 0;
  int max_len = 0;
  for (int n : lengths) total += n, max_len = std::max(max_len, n);
  const size_t E = size_t(w_.E_);
  std::fill(out, out + lengths.size() * size_t(max_len) * E, 0.0f);
  if (total == 0) return;
  DeviceBuffer states;
  encode_device(ids, lengths, states);
  std::vector<float> packed(size_t(total) * E);
  check(cudaMemcpy(packed.data(), states.as<void>(), packed.size() * 4, cudaMemcpyDeviceToHost), "encoder states");
  int64_t row = 0;  // unpack on the host: pad rows stay 0
  for (size_t b = 0; b < lengths.size(); ++b)
    for (int i = 0; i < lengths[b]; ++i, ++row)
      std::copy_n(&packed[size_t(row) * E], E, out + (b * size_t(max_len) + size_t(i)) * E);
}

T5GpuSession::T5GpuSession(const T5GpuModel& m, int64_t n_ctx) : m_(m), n_ctx_(n_ctx), lin_() {
  if (n_ctx <= 0 || n_ctx > (int64_t(1) << 30))
    fail(ErrorCode::kInvalidArgument, "context size " + std::to_string(n_ctx) + " is out of range");
  const size_t bytes = size_t(m.w_.inner_) * size_t(n_ctx) * 2;
  for (size_t l = 0; l < m.dec_.size(); ++l) {
    self_k_.emplace_back(bytes);
    self_v_.emplace_back(bytes);
    cross_k_.emplace_back();
    cross_v_.emplace_back();
  }
}

size_t T5GpuSession::kv_bytes() const {
  const size_t per_pos = size_t(m_.w_.inner_) * 2 * 2 * m_.dec_.size();
  return per_pos * size_t(n_past_ + std::max<int64_t>(enc_len_, 0));
}

std::map<std::string, double> T5GpuSession::stats() const {
  return {{"n_past", double(n_past_)},
          {"n_ctx", double(n_ctx_)},
          {"kv_bytes", double(kv_bytes())},
          {"encoder_length", double(enc_len_)},
          {"encoder_tokens", double(encoder_tokens_)},
          {"decoder_tokens", double(decoder_tokens_)},
          {"encode_s", encode_s_},
          {"decode_s", decode_s_},
          {"weight_device_bytes", double(m_.device_bytes())},
          {"weights_converted_to_f16", double(m_.up_.converted_to_f16)}};
}

void T5GpuSession::set_encoder_input(const int32_t* ids, int64_t n) {
  const auto t0 = std::chrono::steady_clock::now();
  const T5Weights& w = m_.w_;
  if (n <= 0 || n > (int64_t(1) << 30)) fail(ErrorCode::kInvalidArgument, "the encoder needs at least one token");
  m_.encode_device(ids, {int(n)}, states_);
  k_.reserve(size_t(n * w.inner_) * 4);
  for (size_t l = 0; l < m_.dec_.size(); ++l) {
    const size_t bytes = size_t(w.inner_) * size_t(n) * 2;
    cross_k_[l].reserve(bytes);
    cross_v_[l].reserve(bytes);
    lin_.run(m_.dec_[l].ck, states_.as<float>(), n, k_.as<float>());
    check(kv_append(KvFormat::kF16, k_.as<float>(), int(n), w.n_head_, w.d_kv_, cross_k_[l].as<void>(), int(n), 0,
                    nullptr),
          "cross k");
    lin_.run(m_.dec_[l].cv, states_.as<float>(), n, k_.as<float>());
    check(kv_append(KvFormat::kF16, k_.as<float>(), int(n), w.n_head_, w.d_kv_, cross_v_[l].as<void>(), int(n), 0,
                    nullptr),
          "cross v");
  }
  enc_len_ = n;
  n_past_ = 0;
  encoder_tokens_ += n;
  encode_s_ += seconds_since(t0);
}

void T5GpuSession::feed(const int32_t* ids, int64_t n, float* logits, bool all_logits) {
  const T5Weights& w = m_.w_;
  if (enc_len_ < 0) fail(ErrorCode::kInvalidArgument, "set the encoder input before feeding decoder tokens");
  if (n <= 0) fail(ErrorCode::kInvalidArgument, "feed needs at least one token");
  check_token_ids(ids, n, w.n_vocab_);
  if (n_past_ + n > n_ctx_) {
    fail(ErrorCode::kContextOverflow, "feeding " + std::to_string(n) + " tokens after " + std::to_string(n_past_) +
                                          " overflows the context of " + std::to_string(n_ctx_));
  }
  const auto t0 = std::chrono::steady_clock::now();
  Pass p;
  for (int64_t c0 = 0; c0 < n; c0 += kMaxPassRows) {
    const int64_t T = std::min(kMaxPassRows, n - c0), pos0 = n_past_;
    p.reserve(w, T);
    upload_embeddings(w.tok_embd_, ids + c0, T, x_);
    const std::vector<float> bias = bias_by_distance(w.dec_bias_, w.n_head_, T, pos0 + T);
    p.bias.upload(bias.data(), bias.size() * 4);
    for (size_t l = 0; l < m_.dec_.size(); ++l) {
      const T5GpuModel::Layer& L = m_.dec_[l];
      check(rms_norm(x_.as<float>(), L.attn_norm.as<float>(), p.xn.as<float>(), int(T), int(w.E_), w.eps_, nullptr),
            "rms_norm");
      lin_.run(L.q, p.xn.as<float>(), T, p.q.as<float>());
      lin_.run(L.k, p.xn.as<float>(), T, p.k.as<float>());
      lin_.run(L.v, p.xn.as<float>(), T, p.v.as<float>());
      void* kc = self_k_[l].as<void>();
      void* vc = self_v_[l].as<void>();
      check(kv_append(KvFormat::kF16, p.k.as<float>(), int(T), w.n_head_, w.d_kv_, kc, int(n_ctx_), int(pos0), nullptr),
            "k");
      check(kv_append(KvFormat::kF16, p.v.as<float>(), int(T), w.n_head_, w.d_kv_, vc, int(n_ctx_), int(pos0), nullptr),
            "v");
      attend(w, p, T, kc, vc, pos0 + T, n_ctx_, true, p.bias.as<float>());
      lin_.run(L.o, p.att.as<float>(), T, p.tmp.as<float>());
      check(add_inplace(x_.as<float>(), p.tmp.as<float>(), T * w.E_, nullptr), "residual");

      check(rms_norm(x_.as<float>(), L.cross_norm.as<float>(), p.xn.as<float>(), int(T), int(w.E_), w.eps_, nullptr),
            "rms_norm");
      lin_.run(L.cq, p.xn.as<float>(), T, p.q.as<float>());
      attend(w, p, T, cross_k_[l].as<void>(), cross_v_[l].as<void>(), enc_len_, enc_len_, false, nullptr);
      lin_.run(L.co, p.att.as<float>(), T, p.tmp.as<float>());
      check(add_inplace(x_.as<float>(), p.tmp.as<float>(), T * w.E_, nullptr), "residual");

      check(rms_norm(x_.as<float>(), L.ffn_norm.as<float>(), p.xn.as<float>(), int(T), int(w.E_), w.eps_, nullptr),
            "rms_norm");
      ffn(w, L.up, L.gate, L.down, lin_, p, T);
      check(add_inplace(x_.as<float>(), p.tmp.as<float>(), T * w.E_, nullptr), "residual");
    }
    n_past_ += T;
    const bool last = c0 + T == n;
    if (!all_logits && !last) continue;
    const int64_t first = all_logits ? 0 : T - 1, n_out = T - first;
    check(rms_norm(x_.as<float>() + first * w.E_, m_.dec_norm_.as<float>(), p.xn.as<float>(), int(n_out), int(w.E_),
                   w.eps_, nullptr),
          "rms_norm");
    logits_.reserve(size_t(n_out * w.n_vocab_) * 4);
    lin_.run(m_.output_, p.xn.as<float>(), n_out, logits_.as<float>());
    float* out = all_logits ? logits + c0 * w.n_vocab_ : logits;
    check(cudaMemcpy(out, logits_.as<void>(), size_t(n_out * w.n_vocab_) * 4, cudaMemcpyDeviceToHost), "logits");
  }
  decoder_tokens_ += n;
  decode_s_ += seconds_since(t0);
}

}  // namespace pyrt::cuda
