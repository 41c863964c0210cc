// Whisper (OpenAI; HF WhisperForConditionalGeneration): log-mel front end, two GELU convolutions
// (the second with stride 2), sinusoidal encoder positions, pre-LayerNorm transformer blocks with
// biased projections (the key projection has none), a text decoder with learned positions, causal
// self-attention and cross-attention, output tied to the token embedding.
#include "backends/cpu/audio.h"
#include "models/encdec.h"
#include "models/loader.h"
#include "models/registry.h"
#include "pyrt/error.h"

namespace pyrt {

namespace {

struct WhisperLayer {
  NormSpec attn_norm, cross_norm, ffn_norm;  // cross: decoder only
  AttentionWeights self, cross;
  Weight up, down;
  const float *b_up = nullptr, *b_down = nullptr;
};

class WhisperArch : public EncDecArch, public SpeechFrontEnd {
 public:
  WhisperArch(const GgufFile& f, const ModelOptions& opts) {
    const std::string arch = f.get_string("general.architecture");
    const ModelLoader ld(f, arch, &opts);
    E_ = ld.pos_int("embedding_length");
    F_ = ld.pos_int("feed_forward_length");
    const int n_head = ld.pos_int("attention.head_count");
    if (E_ % n_head) ld.bad("embedding_length is not a multiple of head_count");
    shape_ = AttentionShape{n_head, n_head, int(E_ / n_head)};
    eps_ = float(ld.real("attention.layer_norm_epsilon", 1e-5));
    n_ctx_train = ld.pos_int("context_length");
    n_audio_ctx_ = ld.pos_int("audio.context_length");
    n_mels_ = ld.pos_int("audio.mel_count");
    sample_rate_ = ld.pos_int("audio.sample_rate", 16000);
    mel_opt_.n_fft = ld.pos_int("audio.n_fft", 400);
    mel_opt_.hop = ld.pos_int("audio.hop_length", 160);
    mel_opt_.n_frames = int(2 * n_audio_ctx_);  // conv2 halves the frames
    act_ = activation_from_name(f.get_string(arch + ".feed_forward_activation", "gelu"), ld.path());
    const GgufTensorInfo& filters = ld.tensor("audio.mel_filters", {mel_opt_.n_fft / 2 + 1, n_mels_});
    if (filters.type != GgmlType::F32) ld.bad("audio.mel_filters must be F32");
    mel_filters_ = reinterpret_cast<const float*>(filters.data);
    n_vocab = ld.vocab_of("token_embd.weight"), n_embd = E_;
    decoder_start = ld.decoder_start(n_vocab, -1);
    tok_embd_ = ld.weight("token_embd.weight", {E_, n_vocab});
    conv1_ = ld.weight("enc.conv1.weight", {int64_t(n_mels_) * 3, E_});
    conv2_ = ld.weight("enc.conv2.weight", {E_ * 3, E_});
    conv1_b_ = ld.f32("enc.conv1.bias", E_);
    conv2_b_ = ld.f32("enc.conv2.bias", E_);
    const GgufTensorInfo& pos = ld.tensor("enc.position_embd.weight", {E_, n_audio_ctx_});
    if (pos.type != GgmlType::F32) ld.bad("enc.position_embd.weight must be F32");
    enc_pos_ = reinterpret_cast<const float*>(pos.data);
    const GgufTensorInfo& dpos = ld.tensor("dec.position_embd.weight", {E_, n_ctx_train});
    dec_pos_.resize(size_t(E_ * n_ctx_train));
    dequantize_row(dpos.type, dpos.data, dec_pos_.data(), E_ * n_ctx_train);
    const NormSpec enc_norm = norm(ld, "enc.output_norm"), dec_norm = norm(ld, "dec.output_norm");
    for (int i = 0, n = ld.pos_int("block_count"); i < n; ++i) enc_.push_back(layer(ld, "enc", i, false));
    for (int i = 0, n = ld.pos_int("decoder_block_count"); i < n; ++i) dec_.push_back(layer(ld, "dec", i, true));

    encoder_ = stack(false, enc_norm);
    graph_ = stack(true, dec_norm);
    GraphBuilder c;
    const Val states = c.input(E_);
    for (size_t il = 0; il < dec_.size(); ++il) {
      const AttentionWeights& a = dec_[il].cross;
      const std::vector<Val> kv = c.linear(states, {&a.k, &a.v}, "cross_kv", {a.bk, a.bv});
      c.store_cross(int(il), kv[0], kv[1]);
    }
    cross_ = c.finish(Val{});
  }

  const SpeechFrontEnd* front_end() const override { return this; }
  int sample_rate() const override { return sample_rate_; }
  std::vector<float> features(const float* pcm, int64_t n, int64_t* n_mels, int64_t* n_frames,
                              ThreadPool& pool) const override {
    *n_mels = n_mels_;
    *n_frames = mel_opt_.n_frames;
    return whisper_log_mel(pcm, n, mel_filters_, n_mels_, mel_opt_, pool);
  }

  // The two GELU convolutions over [n_mels, n_frames] features: the encoder graph's input rows.
  std::vector<float> encoder_input(const float* features, int64_t n_mels, int64_t n_frames, int64_t* rows,
                                   ThreadPool& pool) const override {
    if (n_mels != n_mels_ || n_frames != mel_opt_.n_frames) {
      fail(ErrorCode::kInvalidArgument, "whisper expects features [" + std::to_string(n_mels_) + ", " +
                                            std::to_string(mel_opt_.n_frames) + "] (30 s of audio), got [" +
                                            std::to_string(n_mels) + ", " + std::to_string(n_frames) + "]");
    }
    // Features are [n_mels, n_frames]; the convolutions read time-major rows.
    std::vector<float> x_t(size_t(n_frames * n_mels));
    for (int64_t m = 0; m < n_mels; ++m)
      for (int64_t t = 0; t < n_frames; ++t) x_t[size_t(t * n_mels + m)] = features[m * n_frames + t];
    std::vector<float> h1(size_t(n_frames * E_));
    const int64_t T1 = conv1d(conv1_, conv1_b_, x_t.data(), n_frames, n_mels, 3, 1, 1, h1.data(), pool);
    activate(Activation::kGeluErf, h1.data(), T1 * E_);
    const int64_t S = (T1 + 2 - 3) / 2 + 1;
    std::vector<float> x(size_t(S * E_));
    conv1d(conv2_, conv2_b_, h1.data(), T1, E_, 3, 2, 1, x.data(), pool);
    activate(Activation::kGeluErf, x.data(), S * E_);
    *rows = S;
    return x;
  }

 private:
  NormSpec norm(const ModelLoader& ld, const std::string& name) const {
    return layer_norm(ld.f32(name + ".weight", E_), ld.f32_or_null(name + ".bias", E_), E_, eps_);
  }

  WhisperLayer layer(const ModelLoader& ld, const std::string& stack, int i, bool decoder) const {
    const std::string p = stack + ".blk." + std::to_string(i) + ".";
    WhisperLayer L;
    L.attn_norm = norm(ld, p + "attn_norm");
    L.self = ld.attention(p + "attn", E_, E_, E_);
    if (decoder) {
      L.cross_norm = norm(ld, p + "cross_attn_norm");
      L.cross = ld.attention(p + "cross_attn", E_, E_, E_);
    }
    L.ffn_norm = norm(ld, p + "ffn_norm");
    L.up = ld.weight(p + "ffn_up.weight", {E_, F_});
    L.down = ld.weight(p + "ffn_down.weight", {F_, E_});
    L.b_up = ld.f32_or_null(p + "ffn_up.bias", F_);
    L.b_down = ld.f32_or_null(p + "ffn_down.bias", E_);
    return L;
  }

  // The encoder (front end rows + sinusoidal positions, bidirectional) or the decoder (token and
  // learned positions, causal self-attention over the session's cache, cross-attention, tied head).
  Graph stack(bool decoder, const NormSpec& final_norm) const {
    GraphBuilder b;
    const Val x = decoder ? b.embed(tok_embd_) : b.input(E_);
    if (decoder)
      b.positions(x, dec_pos_.data(), n_ctx_train);
    else
      b.positions(x, enc_pos_, n_audio_ctx_);
    const std::vector<WhisperLayer>& layers = decoder ? dec_ : enc_;
    for (size_t il = 0; il < layers.size(); ++il) {
      const WhisperLayer& L = layers[il];
      b.begin_layer(int(il));
      AttentionSpec self;
      self.layer = int(il);
      self.shape = shape_;
      self.source = decoder ? AttentionSpec::Source::kCached : AttentionSpec::Source::kDense;
      self.causal = decoder;
      const std::vector<Val> qkv =
          b.linear(b.norm(x, L.attn_norm), {&L.self.q, &L.self.k, &L.self.v}, "qkv", {L.self.bq, L.self.bk, L.self.bv});
      b.residual(x, b.linear(b.attention(qkv[0], qkv[1], qkv[2], self), L.self.o, "attn_output", L.self.bo));
      if (decoder) {
        AttentionSpec cross = self;
        cross.source = AttentionSpec::Source::kCross;
        cross.causal = false;
        const Val q = b.linear(b.norm(x, L.cross_norm), L.cross.q, "cross_q", L.cross.bq);
        b.residual(x, b.linear(b.attention(q, {}, {}, cross), L.cross.o, "cross_output", L.cross.bo));
      }
      GraphBuilder::Ffn ffn;
      ffn.up = &L.up, ffn.down = &L.down, ffn.b_up = L.b_up, ffn.b_down = L.b_down, ffn.act = act_;
      b.residual(x, b.ffn(b.norm(x, L.ffn_norm), ffn));
    }
    b.head();
    const Val out = b.norm(x, final_norm);
    return b.finish(decoder ? b.linear(out, tok_embd_, "output") : out);
  }

  int64_t E_ = 0, F_ = 0, n_audio_ctx_ = 0;
  int n_mels_ = 0, sample_rate_ = 16000;
  float eps_ = 1e-5f;
  AttentionShape shape_{0, 0, 0};
  Activation act_ = Activation::kGeluErf;
  LogMelOptions mel_opt_;
  const float* mel_filters_ = nullptr;
  Weight conv1_, conv2_, tok_embd_;
  const float *conv1_b_ = nullptr, *conv2_b_ = nullptr, *enc_pos_ = nullptr;
  std::vector<float> dec_pos_;  // [n_text_ctx, E], dequantized once
  std::vector<WhisperLayer> enc_, dec_;
};

}  // namespace

std::shared_ptr<Model> create_whisper(std::shared_ptr<GgufFile> file, const ModelOptions& opts) {
  return std::make_shared<EncDecModel>(std::move(file), opts, [](const GgufFile& f, const ModelOptions& o) {
    return std::unique_ptr<EncDecArch>(std::make_unique<WhisperArch>(f, o));
  });
}

}  // namespace pyrt
