// T5 v1.0 / v1.1 / FLAN-T5 (SPEC 3.2), llama.cpp's GGUF layout ("t5", enc.blk.* / dec.blk.*):
// RMSNorm without bias, no 1/sqrt(d) scaling, relative position bias owned by block 0 of each stack
// and shared by its layers, ReLU or gated-GELU FFN, tied head with logit_scale = d_model^-0.5 (v1.0)
// or an untied head (v1.1).
#include "models/t5.h"

#include <algorithm>
#include <cmath>

#include "core/ops.h"
#include "models/encdec.h"
#include "models/loader.h"
#include "models/registry.h"
#include "pyrt/error.h"

namespace pyrt {

int t5_relative_bucket(int64_t rel, bool bidirectional, int num_buckets, int max_distance) {
  int nb = num_buckets, ret = 0;
  int64_t n = 0;
  if (bidirectional) {
    nb /= 2;
    if (rel > 0) ret = nb;
    n = rel < 0 ? -rel : rel;
  } else {
    n = rel < 0 ? -rel : 0;  // future keys (masked anyway) share bucket 0
  }
  const int max_exact = nb / 2;
  if (n < max_exact) return ret + static_cast<int>(n);
  // HF: log(n.float() / max_exact) / math.log(max_distance / max_exact) * (nb - max_exact), float32, truncated.
  const float ratio = static_cast<float>(n) / static_cast<float>(max_exact);
  const float denom = static_cast<float>(std::log(static_cast<double>(max_distance) / max_exact));
  const float large = std::log(ratio) / denom * static_cast<float>(nb - max_exact);
  const int64_t bucket = max_exact + static_cast<int64_t>(large);
  return ret + static_cast<int>(std::min<int64_t>(bucket, nb - 1));
}

namespace {

struct T5Layer {
  const float* attn_norm = nullptr;
  AttentionWeights self;
  const float* cross_norm = nullptr;  // decoder only
  AttentionWeights cross;
  const float* ffn_norm = nullptr;
  Weight up, gate, down;  // gate only for gated FFNs (v1.1)
};

// Relative position bias of one stack: table [num_buckets][n_head] plus a bucket lookup per distance.
struct RelativeBias {
  std::vector<float> table;
  std::vector<int> bucket_neg, bucket_pos;  // bucket of rel = -n and rel = +n, n in 0..max_distance
  int n_head = 0;
  void build(const GgufTensorInfo& t, int heads, int num_buckets, int max_distance, bool bidirectional) {
    n_head = heads;
    table.resize(static_cast<size_t>(heads) * num_buckets);
    dequantize_row(t.type, t.data, table.data(), static_cast<int64_t>(table.size()));
    for (int n = 0; n <= max_distance; ++n) {
      bucket_neg.push_back(t5_relative_bucket(-n, bidirectional, num_buckets, max_distance));
      bucket_pos.push_back(t5_relative_bucket(n, bidirectional, num_buckets, max_distance));
    }
  }
  // Beyond max_distance every bucket is saturated, so the lookup clamps.
  float at(int head, int64_t rel) const {
    const int64_t last = static_cast<int64_t>(bucket_pos.size()) - 1;
    const int b = rel < 0 ? bucket_neg[std::min(-rel, last)] : bucket_pos[std::min(rel, last)];
    return table[static_cast<size_t>(b) * n_head + head];
  }
  AttentionOptions options(bool causal) const {
    AttentionOptions o;
    o.scale = 1.0f;
    o.causal = causal;
    o.add_bias = [this](int head, int64_t q_pos, int64_t n_keys, float* scores) {
      for (int64_t j = 0; j < n_keys; ++j) scores[j] += at(head, j - q_pos);
    };
    return o;
  }
};

class T5Model : public EncDecModel {
 public:
  T5Model(std::shared_ptr<GgufFile> f, const ModelOptions& opts);
  int64_t vocab_size() const override { return n_vocab_; }
  int64_t context_length() const override { return n_ctx_train_; }
  int64_t embedding_length() const override { return E_; }
  void encode(const int32_t* ids, int64_t n, float* out) const override;
  void cross_kv(int layer, const float* states, int64_t n, float* k, float* v) const override;
  void decode(DecoderState& st, const int32_t* ids, int64_t T, float* logits, bool all_logits) const override;

 private:
  void ffn(const T5Layer& L, const float* xn, int64_t T, float* out) const;
  T5Layer load_layer(const ModelLoader& ld, const std::string& p, bool decoder) const;

  int64_t E_ = 0, F_ = 0, inner_ = 0, n_vocab_ = 0, n_ctx_train_ = 0;
  int n_head_ = 0, d_kv_ = 0;
  float eps_ = 1e-6f, logit_scale_ = 1.0f;
  Activation act_ = Activation::kRelu;
  bool gated_ = false;
  Weight tok_embd_, output_;
  const float *enc_norm_ = nullptr, *dec_norm_ = nullptr;
  std::vector<T5Layer> enc_, dec_;
  RelativeBias enc_bias_, dec_bias_;
};

T5Layer T5Model::load_layer(const ModelLoader& ld, const std::string& p, bool decoder) const {
  T5Layer L;
  auto attention = [&](const std::string& a) { return ld.attention(p + a, E_, inner_, inner_); };
  L.attn_norm = ld.f32(p + "attn_norm.weight", E_);
  L.self = attention("attn");
  if (decoder) {
    L.cross_norm = ld.f32(p + "cross_attn_norm.weight", E_);
    L.cross = attention("cross_attn");
  }
  L.ffn_norm = ld.f32(p + "ffn_norm.weight", E_);
  L.up = ld.weight(p + "ffn_up.weight", {E_, F_});
  if (gated_) L.gate = ld.weight(p + "ffn_gate.weight", {E_, F_});
  L.down = ld.weight(p + "ffn_down.weight", {F_, E_});
  return L;
}

T5Model::T5Model(std::shared_ptr<GgufFile> f, const ModelOptions& opts) : EncDecModel(std::move(f), opts) {
  const ModelLoader ld(*file_, arch_, &opts_);
  E_ = ld.pos_int("embedding_length");
  F_ = ld.pos_int("feed_forward_length");
  n_head_ = ld.pos_int("attention.head_count");
  d_kv_ = ld.pos_int("attention.key_length", E_ / n_head_);
  if (ld.pos_int("attention.value_length", d_kv_) != d_kv_) ld.bad("attention.value_length must equal key_length");
  inner_ = int64_t(n_head_) * d_kv_;
  const int n_enc = ld.pos_int("block_count"), n_dec = ld.pos_int("decoder_block_count", n_enc);
  const int n_buckets = ld.pos_int("attention.relative_buckets_count", 32);
  const int max_distance = ld.pos_int("attention.relative_max_distance", 128);
  eps_ = static_cast<float>(ld.real("attention.layer_norm_rms_epsilon", 1e-6));
  logit_scale_ = static_cast<float>(ld.real("logit_scale", 1.0));
  n_ctx_train_ = ld.pos_int("context_length", 512);
  gated_ = ld.has("enc.blk.0.ffn_gate.weight");
  act_ = activation_from_name(file_->get_string(arch_ + ".feed_forward_activation", gated_ ? "gelu_tanh" : "relu"), ld.path());
  const int64_t start = file_->get_int(arch_ + ".decoder_start_token_id", 0);

  const GgufTensorInfo* emb = file_->find_tensor("token_embd.weight");
  if (!emb || emb->ne.size() != 2) ld.bad("tensor 'token_embd.weight' is missing or not 2-D");
  n_vocab_ = emb->ne[1];
  if (start < 0 || start >= n_vocab_) ld.bad("decoder_start_token_id " + std::to_string(start) + " is outside the vocabulary");
  decoder_start_ = static_cast<int32_t>(start);
  tok_embd_ = ld.weight("token_embd.weight", {E_, n_vocab_});
  output_ = ld.has("output.weight") ? ld.weight("output.weight", {E_, n_vocab_}) : tok_embd_;
  enc_norm_ = ld.f32("enc.output_norm.weight", E_);
  dec_norm_ = ld.f32("dec.output_norm.weight", E_);
  for (int i = 0; i < n_enc; ++i) enc_.push_back(load_layer(ld, "enc.blk." + std::to_string(i) + ".", false));
  for (int i = 0; i < n_dec; ++i) dec_.push_back(load_layer(ld, "dec.blk." + std::to_string(i) + ".", true));
  enc_bias_.build(ld.tensor("enc.blk.0.attn_rel_b.weight", {n_head_, n_buckets}), n_head_, n_buckets, max_distance, true);
  dec_bias_.build(ld.tensor("dec.blk.0.attn_rel_b.weight", {n_head_, n_buckets}), n_head_, n_buckets, max_distance, false);
  if (tokenizer_ && tokenizer_->vocab_size() > n_vocab_) ld.bad("tokenizer has more tokens than the embedding");

  n_dec_layers_ = n_dec;
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
  const AttentionOptions opt = enc_bias_.options(false);
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

void T5Model::decode(DecoderState& st, const int32_t* ids, int64_t T, float* logits, bool all_logits) const {
  ThreadPool& tp = pool();
  const AttentionShape shape{n_head_, n_head_, d_kv_};
  const AttentionOptions self_opt = dec_bias_.options(true);
  AttentionOptions cross_opt;
  cross_opt.scale = 1.0f;
  cross_opt.causal = false;
  std::vector<float> x(T * E_), xn(T * E_), q(T * inner_), k(T * inner_), v(T * inner_), att(T * inner_), tmp(T * E_);
  embed_tokens(tok_embd_, ids, T, x.data());
  for (size_t il = 0; il < dec_.size(); ++il) {
    const T5Layer& L = dec_[il];
    const int layer = static_cast<int>(il);
    rms_norm_rows(x.data(), L.attn_norm, xn.data(), T, E_, eps_);
    matmul(L.self.q, xn.data(), T, q.data(), tp);
    matmul(L.self.k, xn.data(), T, k.data(), tp);
    matmul(L.self.v, xn.data(), T, v.data(), tp);
    st.self.store(layer, st.n_past, T, k.data(), v.data());
    attend(st.self.keys(layer), st.self.values(layer), q.data(), st.n_past, T, st.n_past + T, shape, self_opt, att.data(), tp);
    st.self.finish_step(layer);
    matmul(L.self.o, att.data(), T, tmp.data(), tp);
    add_inplace(x.data(), tmp.data(), T * E_);

    rms_norm_rows(x.data(), L.cross_norm, xn.data(), T, E_, eps_);
    matmul(L.cross.q, xn.data(), T, q.data(), tp);
    attend(st.cross.keys(layer), st.cross.values(layer), q.data(), 0, T, st.encoder_length, shape, cross_opt, att.data(), tp);
    matmul(L.cross.o, att.data(), T, tmp.data(), tp);
    add_inplace(x.data(), tmp.data(), T * E_);

    rms_norm_rows(x.data(), L.ffn_norm, xn.data(), T, E_, eps_);
    ffn(L, xn.data(), T, tmp.data());
    add_inplace(x.data(), tmp.data(), T * E_);
  }
  const int64_t first = all_logits ? 0 : T - 1, n_out = T - first;
  rms_norm_rows(x.data() + first * E_, dec_norm_, xn.data(), n_out, E_, eps_);
  matmul(output_, xn.data(), n_out, logits, tp);
  if (logit_scale_ != 1.0f) {
    for (int64_t i = 0; i < n_out * n_vocab_; ++i) logits[i] *= logit_scale_;
  }
}

}  // namespace

std::shared_ptr<Model> create_t5(std::shared_ptr<GgufFile> file, const ModelOptions& opts) {
  return std::make_shared<T5Model>(std::move(file), opts);
}

}  // namespace pyrt
