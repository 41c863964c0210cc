// T5 v1.0 / v1.1 / FLAN-T5 (SPEC 3.2), llama.cpp's GGUF layout ("t5", enc.blk.* / dec.blk.*):
// RMSNorm without bias, no 1/sqrt(d) scaling, relative position bias owned by block 0 of each stack
// and shared by its layers, ReLU or gated-GELU FFN, tied head with logit_scale = d_model^-0.5 (v1.0)
// or an untied head (v1.1).
#include "models/encdec.h"
#include "models/registry.h"
#include "models/t5_weights.h"
#include "pyrt/error.h"

namespace pyrt {

namespace {

class T5Arch : public EncDecArch {
 public:
  T5Arch(const GgufFile& f, const ModelOptions& opts)
      : w_(load_t5_weights(f, f.get_string("general.architecture"), &opts)) {
    n_vocab = w_.n_vocab_, n_ctx_train = w_.n_ctx_train_, n_embd = w_.E_;
    decoder_start = w_.decoder_start_token_;
    encoder_ = stack(false);
    graph_ = stack(true);
    GraphBuilder c;
    const Val states = c.input(w_.E_);
    for (size_t il = 0; il < w_.dec_.size(); ++il) {
      const AttentionWeights& a = w_.dec_[il].cross;
      const std::vector<Val> kv = c.linear(states, {&a.k, &a.v}, "cross_kv");
      c.store_cross(int(il), kv[0], kv[1]);
    }
    cross_ = c.finish(Val{});
  }

 private:
  // The encoder (bidirectional, its own bias) or the decoder (causal self-attention over the session's
  // cache with the decoder's bias, unbiased cross-attention, then the head).
  Graph stack(bool decoder) const {
    const T5Weights& w = w_;
    GraphBuilder b;
    const Val x = b.embed(w.tok_embd_);
    const std::vector<T5Layer>& layers = decoder ? w.dec_ : w.enc_;
    for (size_t il = 0; il < layers.size(); ++il) {
      const T5Layer& L = layers[il];
      b.begin_layer(int(il));
      AttentionSpec self;
      self.layer = int(il);
      self.shape = AttentionShape{w.n_head_, w.n_head_, w.d_kv_};
      self.scale = 1.0f;  // T5 folds 1/sqrt(d) into its weights
      self.source = decoder ? AttentionSpec::Source::kCached : AttentionSpec::Source::kDense;
      self.causal = decoder;
      self.bias = decoder ? &w.dec_bias_ : &w.enc_bias_;
      const std::vector<Val> qkv =
          b.linear(b.norm(x, rms_norm(L.attn_norm, w.E_, w.eps_)), {&L.self.q, &L.self.k, &L.self.v}, "qkv");
      b.residual(x, b.linear(b.attention(qkv[0], qkv[1], qkv[2], self), L.self.o, "attn_output"));
      if (decoder) {
        AttentionSpec cross = self;
        cross.source = AttentionSpec::Source::kCross;
        cross.causal = false;
        cross.bias = nullptr;
        const Val q = b.linear(b.norm(x, rms_norm(L.cross_norm, w.E_, w.eps_)), L.cross.q, "cross_q");
        b.residual(x, b.linear(b.attention(q, {}, {}, cross), L.cross.o, "cross_output"));
      }
      GraphBuilder::Ffn ffn;
      ffn.gate = w.gated_ ? &L.gate : nullptr, ffn.up = &L.up, ffn.down = &L.down, ffn.act = w.act_;
      b.residual(x, b.ffn(b.norm(x, rms_norm(L.ffn_norm, w.E_, w.eps_)), ffn));
    }
    b.head();
    const Val out = b.norm(x, rms_norm(decoder ? w.dec_norm_ : w.enc_norm_, w.E_, w.eps_));
    if (!decoder) return b.finish(out);
    const Val logits = b.linear(out, w.output_, "output");
    if (w.logit_scale_ != 1.0f) b.scale(logits, w.logit_scale_);
    return b.finish(logits);
  }

  T5Weights w_;
};

}  // namespace

std::shared_ptr<Model> create_t5(std::shared_ptr<GgufFile> file, const ModelOptions& opts) {
  return std::make_shared<EncDecModel>(std::move(file), opts, [](const GgufFile& f, const ModelOptions& o) {
    return std::unique_ptr<EncDecArch>(std::make_unique<T5Arch>(f, o));
  });
}

}  // namespace pyrt
