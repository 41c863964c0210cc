// "Return of the Encoder" Mu encoder-decoder (SPEC 3.1, microsoft/encoder-decoder-slm): pre-norm
// RMSNorm blocks, biased linears, NeoX RoPE on the full head (encoder positions centred, decoder
// 0..T-1, none in cross-attention), GQA with *tiled* KV heads (query head h reads KV head h % n_kv),
// tanh-GELU MLP, tied output without rescale.
#include <cmath>

#include "backends/cpu/ops.h"
#include "models/encdec.h"
#include "models/loader.h"
#include "models/registry.h"
#include "pyrt/error.h"

namespace pyrt {

namespace {

struct MuLayer {
  const float* attn_norm = nullptr;
  AttentionWeights self;
  const float* cross_norm = nullptr;  // decoder only
  AttentionWeights cross;
  const float* ffn_norm = nullptr;
  Weight up, down;
  const float *b_up = nullptr, *b_down = nullptr;
};

class MuModel : public EncDecModel {
 public:
  MuModel(std::shared_ptr<GgufFile> f, const ModelOptions& opts);
  int64_t vocab_size() const override { return n_vocab_; }
  int64_t context_length() const override { return n_ctx_train_; }
  int64_t embedding_length() const override { return E_; }
  void encode(const int32_t* ids, int64_t n, float* out) const override;
  void cross_kv(int layer, const float* states, int64_t n, float* k, float* v) const override;
  void decode(DecoderState& st, const int32_t* ids, int64_t T, float* logits, bool all_logits) const override;

 private:
  MuLayer load_layer(const ModelLoader& ld, const std::string& p, bool decoder) const;
  void mlp(const MuLayer& L, const float* xn, int64_t T, float* out) const;
  void rope_rows(float* x, int64_t T, int heads, int64_t pos0) const;
  AttentionOptions attention_options(bool causal) const;

  int64_t E_ = 0, F_ = 0, q_dim_ = 0, kv_dim_ = 0, n_vocab_ = 0, n_ctx_train_ = 0;
  int n_head_ = 0, n_kv_ = 0, head_dim_ = 0;
  float eps_ = 1e-6f;
  bool tiled_ = true;
  Activation act_ = Activation::kGeluTanh;
  Weight tok_embd_;
  const float *enc_norm_ = nullptr, *dec_norm_ = nullptr;
  std::vector<MuLayer> enc_, dec_;
  std::vector<float> inv_freq_;
};

MuLayer MuModel::load_layer(const ModelLoader& ld, const std::string& p, bool decoder) const {
  auto attention = [&](const std::string& a) { return ld.attention(p + a, E_, q_dim_, kv_dim_); };
  MuLayer L;
  L.attn_norm = ld.f32(p + "attn_norm.weight", E_);
  L.self = attention("attn");
  if (decoder) {
    L.cross_norm = ld.f32(p + "cross_attn_norm.weight", E_);
    L.cross = attention("cross_attn");
  }
  L.ffn_norm = ld.f32(p + "ffn_norm.weight", E_);
  L.up = ld.weight(p + "ffn_up.weight", {E_, F_});
  L.down = ld.weight(p + "ffn_down.weight", {F_, E_});
  L.b_up = ld.f32_or_null(p + "ffn_up.bias", F_);
  L.b_down = ld.f32_or_null(p + "ffn_down.bias", E_);
  return L;
}

MuModel::MuModel(std::shared_ptr<GgufFile> f, const ModelOptions& opts) : EncDecModel(std::move(f), opts) {
  const ModelLoader ld(*file_, arch_, &opts_);
  E_ = ld.pos_int("embedding_length");
  F_ = ld.pos_int("feed_forward_length");
  n_head_ = ld.pos_int("attention.head_count");
  n_kv_ = ld.pos_int("attention.head_count_kv", n_head_);
  if (n_head_ % n_kv_)
    ld.bad("head_count " + std::to_string(n_head_) + " is not a multiple of head_count_kv " + std::to_string(n_kv_));
  head_dim_ = ld.pos_int("attention.key_length");
  if (head_dim_ % 2) ld.bad("attention.key_length must be even for RoPE");
  q_dim_ = int64_t(n_head_) * head_dim_;
  kv_dim_ = int64_t(n_kv_) * head_dim_;
  const int n_enc = ld.pos_int("block_count"), n_dec = ld.pos_int("decoder_block_count");
  eps_ = static_cast<float>(ld.real("attention.layer_norm_rms_epsilon", 1e-6));
  n_ctx_train_ = ld.pos_int("context_length", 1024);
  tiled_ = file_->get_bool(arch_ + ".attention.kv_head_tiled", true);
  act_ = activation_from_name(file_->get_string(arch_ + ".feed_forward_activation", "gelu_tanh"), ld.path());
  inv_freq_ = rope_inv_freq(head_dim_, static_cast<float>(ld.real("rope.freq_base", 10000.0)), nullptr);

  const GgufTensorInfo* emb = file_->find_tensor("token_embd.weight");
  if (!emb || emb->ne.size() != 2) ld.bad("tensor 'token_embd.weight' is missing or not 2-D");
  n_vocab_ = emb->ne[1];
  const int64_t start = file_->get_int(arch_ + ".decoder_start_token_id", 1);
  if (start < 0 || start >= n_vocab_)
    ld.bad("decoder_start_token_id " + std::to_string(start) + " is outside the vocabulary");
  decoder_start_ = static_cast<int32_t>(start);
  tok_embd_ = ld.weight("token_embd.weight", {E_, n_vocab_});
  enc_norm_ = ld.f32("enc.output_norm.weight", E_);
  dec_norm_ = ld.f32("dec.output_norm.weight", E_);
  for (int i = 0; i < n_enc; ++i) enc_.push_back(load_layer(ld, "enc.blk." + std::to_string(i) + ".", false));
  for (int i = 0; i < n_dec; ++i) dec_.push_back(load_layer(ld, "dec.blk." + std::to_string(i) + ".", true));
  if (tokenizer_ && tokenizer_->vocab_size() > n_vocab_) ld.bad("tokenizer has more tokens than the embedding");

  n_dec_layers_ = n_dec;
  self_kv_heads_ = cross_kv_heads_ = n_kv_;
  self_head_dim_ = cross_head_dim_ = head_dim_;
}

AttentionOptions MuModel::attention_options(bool causal) const {
  AttentionOptions o;
  o.head_map = tiled_ ? KvHeadMap::kTiled : KvHeadMap::kGrouped;
  o.causal = causal;
  return o;
}

void MuModel::rope_rows(float* x, int64_t T, int heads, int64_t pos0) const {
  const int64_t stride = int64_t(heads) * head_dim_;
  for (int64_t t = 0; t < T; ++t) {
    rope(x + t * stride, heads, head_dim_, head_dim_, static_cast<float>(pos0 + t), inv_freq_, RopeMode::kNeox);
  }
}

void MuModel::mlp(const MuLayer& L, const float* xn, int64_t T, float* out) const {
  std::vector<float> h(static_cast<size_t>(T * F_));
  linear(L.up, L.b_up, xn, T, h.data(), pool());
  activate(act_, h.data(), T * F_);
  linear(L.down, L.b_down, h.data(), T, out, pool());
}

void MuModel::encode(const int32_t* ids, int64_t S, float* out) const {
  check_token_ids(ids, S, n_vocab_);
  ThreadPool& tp = pool();
  const AttentionShape shape{n_head_, n_kv_, head_dim_};
  const AttentionOptions opt = attention_options(false);
  // Centred positions i - floor((S-1)/2): exact in fp32 (RoPE is relative), kept for bf16 fidelity.
  const int64_t pos0 = -((S - 1) / 2);
  std::vector<float> x(S * E_), xn(S * E_), q(S * q_dim_), k(S * kv_dim_), v(S * kv_dim_), att(S * q_dim_), tmp(S * E_);
  embed_tokens(tok_embd_, ids, S, x.data());
  for (const MuLayer& L : enc_) {
    rms_norm_rows(x.data(), L.attn_norm, xn.data(), S, E_, eps_);
    linear(L.self.q, L.self.bq, xn.data(), S, q.data(), tp);
    linear(L.self.k, L.self.bk, xn.data(), S, k.data(), tp);
    linear(L.self.v, L.self.bv, xn.data(), S, v.data(), tp);
    rope_rows(q.data(), S, n_head_, pos0);
    rope_rows(k.data(), S, n_kv_, pos0);
    attend_dense(q.data(), k.data(), v.data(), S, S, shape, opt, att.data(), tp);
    linear(L.self.o, L.self.bo, att.data(), S, tmp.data(), tp);
    add_inplace(x.data(), tmp.data(), S * E_);
    rms_norm_rows(x.data(), L.ffn_norm, xn.data(), S, E_, eps_);
    mlp(L, xn.data(), S, tmp.data());
    add_inplace(x.data(), tmp.data(), S * E_);
  }
  rms_norm_rows(x.data(), enc_norm_, out, S, E_, eps_);
}

void MuModel::cross_kv(int layer, const float* states, int64_t n, float* k, float* v) const {
  const AttentionWeights& c = dec_[layer].cross;
  linear(c.k, c.bk, states, n, k, pool());
  linear(c.v, c.bv, states, n, v, pool());
}

void MuModel::decode(DecoderState& st, const int32_t* ids, int64_t T, float* logits, bool all_logits) const {
  ThreadPool& tp = pool();
  const AttentionShape shape{n_head_, n_kv_, head_dim_};
  const AttentionOptions self_opt = attention_options(true), cross_opt = attention_options(false);
  std::vector<float> x(T * E_), xn(T * E_), q(T * q_dim_), k(T * kv_dim_), v(T * kv_dim_), att(T * q_dim_), tmp(T * E_);
  embed_tokens(tok_embd_, ids, T, x.data());
  for (size_t il = 0; il < dec_.size(); ++il) {
    const MuLayer& L = dec_[il];
    const int layer = static_cast<int>(il);
    rms_norm_rows(x.data(), L.attn_norm, xn.data(), T, E_, eps_);
    linear(L.self.q, L.self.bq, xn.data(), T, q.data(), tp);
    linear(L.self.k, L.self.bk, xn.data(), T, k.data(), tp);
    linear(L.self.v, L.self.bv, xn.data(), T, v.data(), tp);
    rope_rows(q.data(), T, n_head_, st.n_past);
    rope_rows(k.data(), T, n_kv_, st.n_past);
    st.self.store(layer, st.n_past, T, k.data(), v.data());
    attend(st.self.keys(layer), st.self.values(layer), q.data(), st.n_past, T, st.n_past + T, shape, self_opt,
           att.data(), tp);
    st.self.finish_step(layer);
    linear(L.self.o, L.self.bo, att.data(), T, tmp.data(), tp);
    add_inplace(x.data(), tmp.data(), T * E_);

    rms_norm_rows(x.data(), L.cross_norm, xn.data(), T, E_, eps_);
    linear(L.cross.q, L.cross.bq, xn.data(), T, q.data(), tp);
    attend(st.cross.keys(layer), st.cross.values(layer), q.data(), 0, T, st.encoder_length, shape, cross_opt,
           att.data(), tp);
    linear(L.cross.o, L.cross.bo, att.data(), T, tmp.data(), tp);
    add_inplace(x.data(), tmp.data(), T * E_);

    rms_norm_rows(x.data(), L.ffn_norm, xn.data(), T, E_, eps_);
    mlp(L, xn.data(), T, tmp.data());
    add_inplace(x.data(), tmp.data(), T * E_);
  }
  const int64_t first = all_logits ? 0 : T - 1, n_out = T - first;
  rms_norm_rows(x.data() + first * E_, dec_norm_, xn.data(), n_out, E_, eps_);
  matmul(tok_embd_, xn.data(), n_out, logits, tp);
}

}  // namespace

std::shared_ptr<Model> create_mu(std::shared_ptr<GgufFile> file, const ModelOptions& opts) {
  return std::make_shared<MuModel>(std::move(file), opts);
}

}  // namespace pyrt
