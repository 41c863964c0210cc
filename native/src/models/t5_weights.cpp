// Reads a T5 file's hyperparameters and weights (see t5_weights.h).
#include "models/t5_weights.h"

#include <algorithm>
#include <cmath>

#include "models/t5.h"
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

T5Layer load_layer(const T5Weights& w, const ModelLoader& ld, const std::string& p, bool decoder) {
  T5Layer L;
  auto attention = [&](const std::string& a) { return ld.attention(p + a, w.E_, w.inner_, w.inner_); };
  L.attn_norm = ld.f32(p + "attn_norm.weight", w.E_);
  L.self = attention("attn");
  if (decoder) {
    L.cross_norm = ld.f32(p + "cross_attn_norm.weight", w.E_);
    L.cross = attention("cross_attn");
  }
  L.ffn_norm = ld.f32(p + "ffn_norm.weight", w.E_);
  L.up = ld.weight(p + "ffn_up.weight", {w.E_, w.F_});
  if (w.gated_) L.gate = ld.weight(p + "ffn_gate.weight", {w.E_, w.F_});
  L.down = ld.weight(p + "ffn_down.weight", {w.F_, w.E_});
  return L;
}

}  // namespace

RelativeBias t5_relative_bias(const GgufTensorInfo& t, int heads, int num_buckets, int max_distance,
                              bool bidirectional) {
  RelativeBias b;
  b.n_head = heads;
  b.table.resize(static_cast<size_t>(heads) * num_buckets);
  dequantize_row(t.type, t.data, b.table.data(), static_cast<int64_t>(b.table.size()));
  for (int n = 0; n <= max_distance; ++n) {
    b.bucket_neg.push_back(t5_relative_bucket(-n, bidirectional, num_buckets, max_distance));
    b.bucket_pos.push_back(t5_relative_bucket(n, bidirectional, num_buckets, max_distance));
  }
  return b;
}

T5Weights load_t5_weights(const GgufFile& file, const std::string& arch, const ModelOptions* opts) {
  T5Weights w;
  const ModelLoader ld(file, arch, opts);
  w.E_ = ld.pos_int("embedding_length");
  w.F_ = ld.pos_int("feed_forward_length");
  w.n_head_ = ld.pos_int("attention.head_count");
  w.d_kv_ = ld.pos_int("attention.key_length", w.E_ / w.n_head_);
  if (ld.pos_int("attention.value_length", w.d_kv_) != w.d_kv_) ld.bad("attention.value_length must equal key_length");
  w.inner_ = int64_t(w.n_head_) * w.d_kv_;
  const int n_enc = ld.pos_int("block_count"), n_dec = ld.pos_int("decoder_block_count", n_enc);
  const int n_buckets = ld.pos_int("attention.relative_buckets_count", 32);
  const int max_distance = ld.pos_int("attention.relative_max_distance", 128);
  w.eps_ = static_cast<float>(ld.real("attention.layer_norm_rms_epsilon", 1e-6));
  w.logit_scale_ = static_cast<float>(ld.real("logit_scale", 1.0));
  w.n_ctx_train_ = ld.pos_int("context_length", 512);
  w.gated_ = ld.has("enc.blk.0.ffn_gate.weight");
  w.act_ = activation_from_name(file.get_string(arch + ".feed_forward_activation", w.gated_ ? "gelu_tanh" : "relu"),
                                ld.path());
  w.n_vocab_ = ld.vocab_of("token_embd.weight");
  w.decoder_start_token_ = ld.decoder_start(w.n_vocab_, 0);
  w.tok_embd_ = ld.weight("token_embd.weight", {w.E_, w.n_vocab_});
  w.output_ = ld.has("output.weight") ? ld.weight("output.weight", {w.E_, w.n_vocab_}) : w.tok_embd_;
  w.enc_norm_ = ld.f32("enc.output_norm.weight", w.E_);
  w.dec_norm_ = ld.f32("dec.output_norm.weight", w.E_);
  for (int i = 0; i < n_enc; ++i) w.enc_.push_back(load_layer(w, ld, "enc.blk." + std::to_string(i) + ".", false));
  for (int i = 0; i < n_dec; ++i) w.dec_.push_back(load_layer(w, ld, "dec.blk." + std::to_string(i) + ".", true));
  w.enc_bias_ = t5_relative_bias(ld.tensor("enc.blk.0.attn_rel_b.weight", {w.n_head_, n_buckets}), w.n_head_, n_buckets,
                                 max_distance, true);
  w.dec_bias_ = t5_relative_bias(ld.tensor("dec.blk.0.attn_rel_b.weight", {w.n_head_, n_buckets}), w.n_head_, n_buckets,
                                 max_distance, false);
  return w;
}

}  // namespace pyrt
