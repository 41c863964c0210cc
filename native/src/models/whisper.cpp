// Whisper (OpenAI; HF WhisperForConditionalGeneration): log-mel front end, two GELU convolutions
// (the second with stride 2), sinusoidal encoder positions, pre-LayerNorm transformer blocks with
// biased projections (the key projection has none), a text decoder with learned positions, causal
// self-attention and cross-attention, output tied to the token embedding.
#include <cmath>

#include "backends/cpu/audio.h"
#include "backends/cpu/ops.h"
#include "models/encdec.h"
#include "models/loader.h"
#include "models/registry.h"
#include "pyrt/error.h"

namespace pyrt {

namespace {

struct Norm {
  const float *w = nullptr, *b = nullptr;
};

struct WhisperLayer {
  Norm attn_norm, cross_norm, ffn_norm;
  AttentionWeights self, cross;
  Weight up, down;
  const float *b_up = nullptr, *b_down = nullptr;
};

class WhisperModel : public EncDecModel, public SpeechEncoder {
 public:
  WhisperModel(std::shared_ptr<GgufFile> f, const ModelOptions& opts);
  int64_t vocab_size() const override { return n_vocab_; }
  int64_t context_length() const override { return n_text_ctx_; }
  int64_t embedding_length() const override { return E_; }
  const SpeechEncoder* speech() const override { return this; }
  int sample_rate() const override { return sample_rate_; }
  void encode(const int32_t*, int64_t, float*) const override {
    fail(ErrorCode::kUnsupported, "whisper encodes audio, not token ids: use the audio features (transcribe)");
  }
  std::vector<float> audio_features(const float* pcm, int64_t n, int64_t* n_mels, int64_t* n_frames) const override;
  std::vector<float> encode_audio(const float* features, int64_t n_mels, int64_t n_frames,
                                  int64_t* n_states) const override;
  void cross_kv(int layer, const float* states, int64_t n, float* k, float* v) const override;
  void decode(DecoderState& st, const int32_t* ids, int64_t T, float* logits, bool all_logits) const override;

 private:
  WhisperLayer load_layer(const ModelLoader& ld, const std::string& p, bool decoder) const;
  void norm(const Norm& n, const float* x, float* out, int64_t T) const {
    layer_norm_rows(x, n.w, n.b, out, T, E_, eps_);
  }
  void mlp(const WhisperLayer& L, const float* xn, int64_t T, float* out) const;

  int64_t E_ = 0, F_ = 0, n_vocab_ = 0, n_text_ctx_ = 0, n_audio_ctx_ = 0;
  int n_head_ = 0, head_dim_ = 0, n_mels_ = 0, sample_rate_ = 16000;
  float eps_ = 1e-5f;
  Activation act_ = Activation::kGeluErf;
  LogMelOptions mel_opt_;
  const float* mel_filters_ = nullptr;
  Weight conv1_, conv2_, tok_embd_;
  const float *conv1_b_ = nullptr, *conv2_b_ = nullptr, *enc_pos_ = nullptr;
  std::vector<float> dec_pos_;  // [n_text_ctx, E], dequantized once
  Norm enc_norm_, dec_norm_;
  std::vector<WhisperLayer> enc_, dec_;
};

WhisperLayer WhisperModel::load_layer(const ModelLoader& ld, const std::string& p, bool decoder) const {
  auto norm_at = [&](const std::string& name) {
    return Norm{ld.f32(p + name + ".weight", E_), ld.f32_or_null(p + name + ".bias", E_)};
  };
  auto attention = [&](const std::string& a) { return ld.attention(p + a, E_, E_, E_); };
  WhisperLayer L;
  L.attn_norm = norm_at("attn_norm");
  L.self = attention("attn");
  if (decoder) {
    L.cross_norm = norm_at("cross_attn_norm");
    L.cross = attention("cross_attn");
  }
  L.ffn_norm = norm_at("ffn_norm");
  L.up = ld.weight(p + "ffn_up.weight", {E_, F_});
  L.down = ld.weight(p + "ffn_down.weight", {F_, E_});
  L.b_up = ld.f32_or_null(p + "ffn_up.bias", F_);
  L.b_down = ld.f32_or_null(p + "ffn_down.bias", E_);
  return L;
}

WhisperModel::WhisperModel(std::shared_ptr<GgufFile> f, const ModelOptions& opts) : EncDecModel(std::move(f), opts) {
  const ModelLoader ld(*file_, arch_, &opts_);
  E_ = ld.pos_int("embedding_length");
  F_ = ld.pos_int("feed_forward_length");
  n_head_ = ld.pos_int("attention.head_count");
  if (E_ % n_head_) ld.bad("embedding_length is not a multiple of head_count");
  head_dim_ = static_cast<int>(E_ / n_head_);
  const int n_enc = ld.pos_int("block_count"), n_dec = ld.pos_int("decoder_block_count");
  eps_ = static_cast<float>(ld.real("attention.layer_norm_epsilon", 1e-5));
  n_text_ctx_ = ld.pos_int("context_length");
  n_audio_ctx_ = ld.pos_int("audio.context_length");
  n_mels_ = ld.pos_int("audio.mel_count");
  sample_rate_ = ld.pos_int("audio.sample_rate", 16000);
  mel_opt_.n_fft = ld.pos_int("audio.n_fft", 400);
  mel_opt_.hop = ld.pos_int("audio.hop_length", 160);
  mel_opt_.n_frames = static_cast<int>(2 * n_audio_ctx_);  // conv2 halves the frames
  act_ = activation_from_name(file_->get_string(arch_ + ".feed_forward_activation", "gelu"), ld.path());
  const GgufTensorInfo& filters = ld.tensor("audio.mel_filters", {mel_opt_.n_fft / 2 + 1, n_mels_});
  if (filters.type != GgmlType::F32) ld.bad("audio.mel_filters must be F32");
  mel_filters_ = reinterpret_cast<const float*>(filters.data);

  const GgufTensorInfo* emb = file_->find_tensor("token_embd.weight");
  if (!emb || emb->ne.size() != 2) ld.bad("tensor 'token_embd.weight' is missing or not 2-D");
  n_vocab_ = emb->ne[1];
  const int64_t start = file_->get_int(arch_ + ".decoder_start_token_id", -1);
  if (start < 0 || start >= n_vocab_)
    ld.bad("decoder_start_token_id " + std::to_string(start) + " is outside the vocabulary");
  decoder_start_ = static_cast<int32_t>(start);
  tok_embd_ = ld.weight("token_embd.weight", {E_, n_vocab_});
  conv1_ = ld.weight("enc.conv1.weight", {int64_t(n_mels_) * 3, E_});
  conv2_ = ld.weight("enc.conv2.weight", {E_ * 3, E_});
  conv1_b_ = ld.f32("enc.conv1.bias", E_);
  conv2_b_ = ld.f32("enc.conv2.bias", E_);
  const GgufTensorInfo& pos = ld.tensor("enc.position_embd.weight", {E_, n_audio_ctx_});
  if (pos.type != GgmlType::F32) ld.bad("enc.position_embd.weight must be F32");
  enc_pos_ = reinterpret_cast<const float*>(pos.data);
  const GgufTensorInfo& dpos = ld.tensor("dec.position_embd.weight", {E_, n_text_ctx_});
  dec_pos_.resize(static_cast<size_t>(E_ * n_text_ctx_));
  dequantize_row(dpos.type, dpos.data, dec_pos_.data(), E_ * n_text_ctx_);
  enc_norm_ = Norm{ld.f32("enc.output_norm.weight", E_), ld.f32_or_null("enc.output_norm.bias", E_)};
  dec_norm_ = Norm{ld.f32("dec.output_norm.weight", E_), ld.f32_or_null("dec.output_norm.bias", E_)};
  for (int i = 0; i < n_enc; ++i) enc_.push_back(load_layer(ld, "enc.blk." + std::to_string(i) + ".", false));
  for (int i = 0; i < n_dec; ++i) dec_.push_back(load_layer(ld, "dec.blk." + std::to_string(i) + ".", true));
  if (tokenizer_ && tokenizer_->vocab_size() > n_vocab_) ld.bad("tokenizer has more tokens than the embedding");

  n_dec_layers_ = n_dec;
  self_kv_heads_ = cross_kv_heads_ = n_head_;
  self_head_dim_ = cross_head_dim_ = head_dim_;
}

std::vector<float> WhisperModel::audio_features(const float* pcm, int64_t n, int64_t* n_mels, int64_t* n_frames) const {
  *n_mels = n_mels_;
  *n_frames = mel_opt_.n_frames;
  return whisper_log_mel(pcm, n, mel_filters_, n_mels_, mel_opt_, pool());
}

void WhisperModel::mlp(const WhisperLayer& L, const float* xn, int64_t T, float* out) const {
  std::vector<float> h(static_cast<size_t>(T * F_));
  linear(L.up, L.b_up, xn, T, h.data(), pool());
  activate(act_, h.data(), T * F_);
  linear(L.down, L.b_down, h.data(), T, out, pool());
}

std::vector<float> WhisperModel::encode_audio(const float* features, int64_t n_mels, int64_t n_frames,
                                              int64_t* n_states) const {
  if (n_mels != n_mels_ || n_frames != mel_opt_.n_frames) {
    fail(ErrorCode::kInvalidArgument, "whisper expects features [" + std::to_string(n_mels_) + ", " +
                                          std::to_string(mel_opt_.n_frames) + "] (30 s of audio), got [" +
                                          std::to_string(n_mels) + ", " + std::to_string(n_frames) + "]");
  }
  ThreadPool& tp = pool();
  // Features are [n_mels, n_frames]; the convolutions read time-major rows.
  std::vector<float> x_t(static_cast<size_t>(n_frames * n_mels));
  for (int64_t m = 0; m < n_mels; ++m)
    for (int64_t t = 0; t < n_frames; ++t) x_t[t * n_mels + m] = features[m * n_frames + t];
  std::vector<float> h1(static_cast<size_t>(n_frames * E_));
  const int64_t T1 = conv1d(conv1_, conv1_b_, x_t.data(), n_frames, n_mels, 3, 1, 1, h1.data(), tp);
  activate(Activation::kGeluErf, h1.data(), T1 * E_);
  const int64_t S = (T1 + 2 - 3) / 2 + 1;
  std::vector<float> x(static_cast<size_t>(S * E_));
  conv1d(conv2_, conv2_b_, h1.data(), T1, E_, 3, 2, 1, x.data(), tp);
  activate(Activation::kGeluErf, x.data(), S * E_);
  add_inplace(x.data(), enc_pos_, S * E_);

  const AttentionShape shape{n_head_, n_head_, head_dim_};
  AttentionOptions opt;
  opt.causal = false;
  std::vector<float> xn(S * E_), q(S * E_), k(S * E_), v(S * E_), att(S * E_), tmp(S * E_);
  for (const WhisperLayer& L : enc_) {
    norm(L.attn_norm, x.data(), xn.data(), S);
    linear(L.self.q, L.self.bq, xn.data(), S, q.data(), tp);
    linear(L.self.k, L.self.bk, xn.data(), S, k.data(), tp);
    linear(L.self.v, L.self.bv, xn.data(), S, v.data(), tp);
    attend_dense(q.data(), k.data(), v.data(), S, S, shape, opt, att.data(), tp);
    linear(L.self.o, L.self.bo, att.data(), S, tmp.data(), tp);
    add_inplace(x.data(), tmp.data(), S * E_);
    norm(L.ffn_norm, x.data(), xn.data(), S);
    mlp(L, xn.data(), S, tmp.data());
    add_inplace(x.data(), tmp.data(), S * E_);
  }
  std::vector<float> out(static_cast<size_t>(S * E_));
  norm(enc_norm_, x.data(), out.data(), S);
  *n_states = S;
  return out;
}

void WhisperModel::cross_kv(int layer, const float* states, int64_t n, float* k, float* v) const {
  const AttentionWeights& c = dec_[layer].cross;
  linear(c.k, c.bk, states, n, k, pool());
  linear(c.v, c.bv, states, n, v, pool());
}

void WhisperModel::decode(DecoderState& st, const int32_t* ids, int64_t T, float* logits, bool all_logits) const {
  ThreadPool& tp = pool();
  const AttentionShape shape{n_head_, n_head_, head_dim_};
  AttentionOptions self_opt, cross_opt;
  cross_opt.causal = false;
  std::vector<float> x(T * E_), xn(T * E_), q(T * E_), k(T * E_), v(T * E_), att(T * E_), tmp(T * E_);
  embed_tokens(tok_embd_, ids, T, x.data());
  add_inplace(x.data(), dec_pos_.data() + st.n_past * E_, T * E_);  // the session keeps n_past + T <= context
  for (size_t il = 0; il < dec_.size(); ++il) {
    const WhisperLayer& L = dec_[il];
    const int layer = static_cast<int>(il);
    norm(L.attn_norm, x.data(), xn.data(), T);
    linear(L.self.q, L.self.bq, xn.data(), T, q.data(), tp);
    linear(L.self.k, L.self.bk, xn.data(), T, k.data(), tp);
    linear(L.self.v, L.self.bv, xn.data(), T, v.data(), tp);
    st.self.store(layer, st.n_past, T, k.data(), v.data());
    attend(st.self.keys(layer), st.self.values(layer), q.data(), st.n_past, T, st.n_past + T, shape, self_opt,
           att.data(), tp);
    st.self.finish_step(layer);
    linear(L.self.o, L.self.bo, att.data(), T, tmp.data(), tp);
    add_inplace(x.data(), tmp.data(), T * E_);

    norm(L.cross_norm, x.data(), xn.data(), T);
    linear(L.cross.q, L.cross.bq, xn.data(), T, q.data(), tp);
    attend(st.cross.keys(layer), st.cross.values(layer), q.data(), 0, T, st.encoder_length, shape, cross_opt,
           att.data(), tp);
    linear(L.cross.o, L.cross.bo, att.data(), T, tmp.data(), tp);
    add_inplace(x.data(), tmp.data(), T * E_);

    norm(L.ffn_norm, x.data(), xn.data(), T);
    mlp(L, xn.data(), T, tmp.data());
    add_inplace(x.data(), tmp.data(), T * E_);
  }
  const int64_t first = all_logits ? 0 : T - 1, n_out = T - first;
  norm(dec_norm_, x.data() + first * E_, xn.data(), n_out);
  matmul(tok_embd_, xn.data(), n_out, logits, tp);
}

}  // namespace

std::shared_ptr<Model> create_whisper(std::shared_ptr<GgufFile> file, const ModelOptions& opts) {
  return std::make_shared<WhisperModel>(std::move(file), opts);
}

}  // namespace pyrt
