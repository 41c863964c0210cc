// "Return of the Encoder" Mu encoder-decoder (SPEC 3.1, microsoft/encoder-decoder-slm): pre-norm
// RMSNorm blocks, biased linears, NeoX RoPE on the full head (encoder positions centred, decoder
// 0..T-1, none in cross-attention), GQA with *tiled* KV heads (query head h reads KV head h % n_kv),
// tanh-GELU MLP, tied output without rescale.
#include "models/encdec.h"
#include "models/loader.h"
#include "models/registry.h"

namespace pyrt {

namespace {

struct MuLayer {
  const float *attn_norm = nullptr, *cross_norm = nullptr, *ffn_norm = nullptr;  // cross: decoder only
  AttentionWeights self, cross;
  Weight up, down;
  const float *b_up = nullptr, *b_down = nullptr;
};

class MuArch : public EncDecArch {
 public:
  MuArch(const GgufFile& f, const ModelOptions& opts) {
    const std::string arch = f.get_string("general.architecture");
    const ModelLoader ld(f, arch, &opts);
    E_ = ld.pos_int("embedding_length");
    F_ = ld.pos_int("feed_forward_length");
    const int n_head = ld.pos_int("attention.head_count"), n_kv = ld.pos_int("attention.head_count_kv", n_head);
    if (n_head % n_kv)
      ld.bad("head_count " + std::to_string(n_head) + " is not a multiple of head_count_kv " + std::to_string(n_kv));
    const int head_dim = ld.pos_int("attention.key_length");
    if (head_dim % 2) ld.bad("attention.key_length must be even for RoPE");
    q_dim_ = int64_t(n_head) * head_dim, kv_dim_ = int64_t(n_kv) * head_dim;
    eps_ = float(ld.real("attention.layer_norm_rms_epsilon", 1e-6));
    n_ctx_train = ld.pos_int("context_length", 1024);
    n_vocab = ld.vocab_of("token_embd.weight"), n_embd = E_;
    decoder_start = ld.decoder_start(n_vocab, 1);
    act_ = activation_from_name(f.get_string(arch + ".feed_forward_activation", "gelu_tanh"), ld.path());
    rope_ = RopeSpec{rope_inv_freq(head_dim, float(ld.real("rope.freq_base", 10000.0)), nullptr), 1.0f, RopeMode::kNeox,
                     head_dim, head_dim};
    att_.shape = AttentionShape{n_head, n_kv, head_dim};
    att_.head_map = f.get_bool(arch + ".attention.kv_head_tiled", true) ? KvHeadMap::kTiled : KvHeadMap::kGrouped;
    tok_embd_ = ld.weight("token_embd.weight", {E_, n_vocab});
    const float* enc_norm = ld.f32("enc.output_norm.weight", E_);
    const float* dec_norm = ld.f32("dec.output_norm.weight", E_);
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

  // Centred positions i - floor((S-1)/2): exact in fp32 (RoPE is relative), kept for bf16 fidelity.
  int64_t encoder_first_position(int64_t n) const override { return -((n - 1) / 2); }

 private:
  MuLayer layer(const ModelLoader& ld, const std::string& stack, int i, bool decoder) const {
    const std::string p = stack + ".blk." + std::to_string(i) + ".";
    MuLayer L;
    L.attn_norm = ld.f32(p + "attn_norm.weight", E_);
    L.self = ld.attention(p + "attn", E_, q_dim_, kv_dim_);
    if (decoder) {
      L.cross_norm = ld.f32(p + "cross_attn_norm.weight", E_);
      L.cross = ld.attention(p + "cross_attn", E_, q_dim_, kv_dim_);
    }
    L.ffn_norm = ld.f32(p + "ffn_norm.weight", E_);
    L.up = ld.weight(p + "ffn_up.weight", {E_, F_});
    L.down = ld.weight(p + "ffn_down.weight", {F_, E_});
    L.b_up = ld.f32_or_null(p + "ffn_up.bias", F_);
    L.b_down = ld.f32_or_null(p + "ffn_down.bias", E_);
    return L;
  }

  // The encoder (bidirectional self-attention within the input) or the decoder (causal self-attention
  // over the session's cache, then cross-attention, then the tied head).
  Graph stack(bool decoder, const float* final_norm) const {
    GraphBuilder b;
    const Val x = b.embed(tok_embd_);
    const std::vector<MuLayer>& layers = decoder ? dec_ : enc_;
    for (size_t il = 0; il < layers.size(); ++il) {
      const MuLayer& L = layers[il];
      b.begin_layer(int(il));
      AttentionSpec self = att_;
      self.layer = int(il);
      self.source = decoder ? AttentionSpec::Source::kCached : AttentionSpec::Source::kDense;
      self.causal = decoder;
      const std::vector<Val> qkv =
          b.linear(b.norm(x, rms_norm(L.attn_norm, E_, eps_)), {&L.self.q, &L.self.k, &L.self.v}, "qkv",
                   {L.self.bq, L.self.bk, L.self.bv});
      b.rope(qkv[0], att_.shape.n_heads, qkv[1], att_.shape.n_kv_heads, rope_);
      b.residual(x, b.linear(b.attention(qkv[0], qkv[1], qkv[2], self), L.self.o, "attn_output", L.self.bo));
      if (decoder) {
        AttentionSpec cross = att_;
        cross.layer = int(il);
        cross.source = AttentionSpec::Source::kCross;
        cross.causal = false;
        const Val q = b.linear(b.norm(x, rms_norm(L.cross_norm, E_, eps_)), L.cross.q, "cross_q", L.cross.bq);
        b.residual(x, b.linear(b.attention(q, {}, {}, cross), L.cross.o, "cross_output", L.cross.bo));
      }
      GraphBuilder::Ffn ffn;
      ffn.up = &L.up, ffn.down = &L.down, ffn.b_up = L.b_up, ffn.b_down = L.b_down, ffn.act = act_;
      b.residual(x, b.ffn(b.norm(x, rms_norm(L.ffn_norm, E_, eps_)), ffn));
    }
    b.head();
    const Val out = b.norm(x, rms_norm(final_norm, E_, eps_));
    return b.finish(decoder ? b.linear(out, tok_embd_, "output") : out);
  }

  int64_t E_ = 0, F_ = 0, q_dim_ = 0, kv_dim_ = 0;
  float eps_ = 1e-6f;
  Activation act_ = Activation::kGeluTanh;
  RopeSpec rope_;
  AttentionSpec att_;
  Weight tok_embd_;
  std::vector<MuLayer> enc_, dec_;
};

}  // namespace

std::shared_ptr<Model> create_mu(std::shared_ptr<GgufFile> file, const ModelOptions& opts) {
  return std::make_shared<EncDecModel>(std::move(file), opts, [](const GgufFile& f, const ModelOptions& o) {
    return std::unique_ptr<EncDecArch>(std::make_unique<MuArch>(f, o));
  });
}

}  // namespace pyrt
