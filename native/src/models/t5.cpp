// T5 v1.0 / v1.1 / FLAN-T5 (SPEC 3.2), llama.cpp's GGUF layout ("t5", enc.blk.* / dec.blk.*):
// RMSNorm without bias, no 1/sqrt(d) scaling, relative position bias owned by block 0 of each stack
// and shared by its layers, ReLU or gated-GELU FFN, tied head with logit_scale = d_model^-0.5 (v1.0)
// or an untied head (v1.1).
#include "models/t5.h"

#include <algorithm>
#include <cmath>
#include <functional>

#include "backends/cpu/ops.h"
#include "models/encdec.h"
#include "models/loader.h"
#include "models/registry.h"
#include "models/t5_weights.h"
#include "pyrt/error.h"

namespace pyrt {

namespace {

AttentionOptions bias_options(const RelativeBias& bias, bool causal) {
  AttentionOptions o;
  o.scale = 1.0f;
  o.causal = causal;
  o.add_bias = [&bias](int head, int64_t q_pos, int64_t n_keys, float* scores) {
    for (int64_t j = 0; j < n_keys; ++j) scores[j] += bias.at(head, j - q_pos);
  };
  return o;
}

class T5Model : public EncDecModel, public T5Weights {
 public:
  T5Model(std::shared_ptr<GgufFile> f, const ModelOptions& opts);
  int64_t vocab_size() const override { return n_vocab_; }
  int64_t context_length() const override { return n_ctx_train_; }
  int64_t embedding_length() const override { return E_; }
  void encode(const int32_t* ids, int64_t n, float* out) const override;
  void cross_kv(int layer, const float* states, int64_t n, float* k, float* v) const override;
  void decode(DecoderState& st, const int32_t* ids, int64_t T, float* logits, bool all_logits) const override;
  void decode_steps(const std::vector<DecoderState*>& states, const int32_t* ids, float* logits) const override;
  bool batches_decode_steps() const override { return true; }

 private:
  void ffn(const T5Layer& L, const float* xn, int64_t T, float* out) const;
  // The decoder's attention settings: self-attention with the causal relative-position bias, cross-
  // attention unscaled and unmasked.
  struct DecoderAttention {
    AttentionShape shape;
    AttentionOptions self, cross;
  };
  DecoderAttention decoder_attention() const {
    DecoderAttention a{AttentionShape{n_head_, n_head_, d_kv_}, bias_options(dec_bias_, true), AttentionOptions{}};
    a.cross.scale = 1.0f;
    a.cross.causal = false;
    return a;
  }
  // The decoder over T rows of ids: every linear over all rows; each layer's self-attention (q, k, v
  // rows in, attention rows out) and cross-attention (q rows in) through the callbacks, which know
  // whose caches the rows belong to; logits of rows [first, T).
  using SelfAttend = std::function<void(int layer, const float* q, const float* k, const float* v, float* att)>;
  using CrossAttend = std::function<void(int layer, const float* q, float* att)>;
  void run_decoder(const int32_t* ids, int64_t T, const SelfAttend& self_attend, const CrossAttend& cross_attend,
                   float* logits, int64_t first) const;
};

T5Model::T5Model(std::shared_ptr<GgufFile> f, const ModelOptions& opts)
    : EncDecModel(std::move(f), opts), T5Weights(load_t5_weights(*file_, arch_, &opts_)) {
  if (tokenizer_ && tokenizer_->vocab_size() > n_vocab_) {
    fail(ErrorCode::kFormat, file_->path() + ": tokenizer has more tokens than the embedding");
  }
  decoder_start_ = decoder_start_token_;
  n_dec_layers_ = int(dec_.size());
  self_kv_heads_ = cross_kv_heads_ = n_head_;
  self_head_dim_ = cross_head_dim_ = d_kv_;
}

void T5Model::ffn(const T5Layer& L, const float* xn, int64_t T, float* out) const {
  std::vector<float> h(static_cast<size_t>(T * F_));
  matmul(L.up, xn, T, h.data(), pool());
  if (gated_) {
    std::vector<float> g(static_cast<size_t>(T * F_));
    matmul(L.gate, xn, T, g.data(), pool());
    activate(act_, g.data(), T * F_);
    for (int64_t i = 0; i < T * F_; ++i) h[i] *= g[i];
  } else {
    activate(act_, h.data(), T * F_);
  }
  matmul(L.down, h.data(), T, out, pool());
}

void T5Model::encode(const int32_t* ids, int64_t S, float* out) const {
  check_token_ids(ids, S, n_vocab_);
  ThreadPool& tp = pool();
  const AttentionShape shape{n_head_, n_head_, d_kv_};
  const AttentionOptions opt = bias_options(enc_bias_, false);
  std::vector<float> x(S * E_), xn(S * E_), q(S * inner_), k(S * inner_), v(S * inner_), att(S * inner_), tmp(S * E_);
  embed_tokens(tok_embd_, ids, S, x.data());
  for (const T5Layer& L : enc_) {
    rms_norm_rows(x.data(), L.attn_norm, xn.data(), S, E_, eps_);
    matmul(L.self.q, xn.data(), S, q.data(), tp);
    matmul(L.self.k, xn.data(), S, k.data(), tp);
    matmul(L.self.v, xn.data(), S, v.data(), tp);
    attend_dense(q.data(), k.data(), v.data(), S, S, shape, opt, att.data(), tp);
    matmul(L.self.o, att.data(), S, tmp.data(), tp);
    add_inplace(x.data(), tmp.data(), S * E_);
    rms_norm_rows(x.data(), L.ffn_norm, xn.data(), S, E_, eps_);
    ffn(L, xn.data(), S, tmp.data());
    add_inplace(x.data(), tmp.data(), S * E_);
  }
  rms_norm_rows(x.data(), enc_norm_, out, S, E_, eps_);
}

void T5Model::cross_kv(int layer, const float* states, int64_t n, float* k, float* v) const {
  matmul(dec_[layer].cross.k, states, n, k, pool());
  matmul(dec_[layer].cross.v, states, n, v, pool());
}

void T5Model::run_decoder(const int32_t* ids, int64_t T, const SelfAttend& self_attend, const CrossAttend& cross_attend,
                          float* logits, int64_t first) const {
  ThreadPool& tp = pool();
  std::vector<float> x(T * E_), xn(T * E_), q(T * inner_), k(T * inner_), v(T * inner_), att(T * inner_), tmp(T * E_);
  embed_tokens(tok_embd_, ids, T, x.data());
  for (size_t il = 0; il < dec_.size(); ++il) {
    const T5Layer& L = dec_[il];
    const int layer = static_cast<int>(il);
    rms_norm_rows(x.data(), L.attn_norm, xn.data(), T, E_, eps_);
    matmul(L.self.q, xn.data(), T, q.data(), tp);
    matmul(L.self.k, xn.data(), T, k.data(), tp);
    matmul(L.self.v, xn.data(), T, v.data(), tp);
    self_attend(layer, q.data(), k.data(), v.data(), att.data());
    matmul(L.self.o, att.data(), T, tmp.data(), tp);
    add_inplace(x.data(), tmp.data(), T * E_);

    rms_norm_rows(x.data(), L.cross_norm, xn.data(), T, E_, eps_);
    matmul(L.cross.q, xn.data(), T, q.data(), tp);
    cross_attend(layer, q.data(), att.data());
    matmul(L.cross.o, att.data(), T, tmp.data(), tp);
    add_inplace(x.data(), tmp.data(), T * E_);

    rms_norm_rows(x.data(), L.ffn_norm, xn.data(), T, E_, eps_);
    ffn(L, xn.data(), T, tmp.data());
    add_inplace(x.data(), tmp.data(), T * E_);
  }
  const int64_t n_out = T - first;
  rms_norm_rows(x.data() + first * E_, dec_norm_, xn.data(), n_out, E_, eps_);
  matmul(output_, xn.data(), n_out, logits, tp);
  if (logit_scale_ != 1.0f) {
    for (int64_t i = 0; i < n_out * n_vocab_; ++i) logits[i] *= logit_scale_;
  }
}

void T5Model::decode(DecoderState& st, const int32_t* ids, int64_t T, float* logits, bool all_logits) const {
  ThreadPool& tp = pool();
  const DecoderAttention da = decoder_attention();
  run_decoder(
      ids, T,
      [&](int layer, const float* q, const float* k, const float* v, float* att) {
        st.self.store(layer, st.n_past, T, k, v);
        attend(st.self.keys(layer), st.self.values(layer), q, st.n_past, T, st.n_past + T, da.shape, da.self, att, tp);
        st.self.finish_step(layer);
      },
      [&](int layer, const float* q, float* att) {
        attend(st.cross.keys(layer), st.cross.values(layer), q, 0, T, st.encoder_length, da.shape, da.cross, att, tp);
      },
      logits, all_logits ? 0 : T - 1);
}

void T5Model::decode_steps(const std::vector<DecoderState*>& states, const int32_t* ids, float* logits) const {
  const DecoderAttention da = decoder_attention();
  const int64_t B = int64_t(states.size());
  // Row b is states[b]'s token: attention per state over its own caches, one pool task per state (its
  // heads inline), so a step pays one handoff per attention, not one per state.
  run_decoder(
      ids, B,
      [&](int layer, const float* q, const float* k, const float* v, float* att) {
        pool().run(B, [&](int64_t b) {
          DecoderState& st = *states[b];
          const int64_t o = b * inner_;
          st.self.store(layer, st.n_past, 1, k + o, v + o);
          attend(st.self.keys(layer), st.self.values(layer), q + o, st.n_past, 1, st.n_past + 1, da.shape, da.self,
                 att + o, ThreadPool::inline_pool());
          st.self.finish_step(layer);
        });
      },
      [&](int layer, const float* q, float* att) {
        pool().run(B, [&](int64_t b) {
          const DecoderState& st = *states[b];
          attend(st.cross.keys(layer), st.cross.values(layer), q + b * inner_, 0, 1, st.encoder_length, da.shape,
                 da.cross, att + b * inner_, ThreadPool::inline_pool());
        });
      },
      logits, 0);
}

}  // namespace

std::shared_ptr<Model> create_t5(std::shared_ptr<GgufFile> file, const ModelOptions& opts) {
  return std::make_shared<T5Model>(std::move(file), opts);
}

}  // namespace pyrt
