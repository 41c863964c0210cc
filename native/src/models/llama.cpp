// Llama family decoder: RMSNorm, RoPE (adjacent pairs: the converter permutes HF Q/K for it), GQA
// attention over the session's cache, SwiGLU FFN, tied or untied output.
#include "models/decoder.h"
#include "models/llama_weights.h"
#include "models/registry.h"

namespace pyrt {

namespace {

class LlamaArch : public DecoderArch {
 public:
  LlamaArch(const GgufFile& f, const ModelOptions& opts)
      : w_(load_llama_weights(f, f.get_string("general.architecture"), &opts)) {
    const LlamaHparams& hp = w_.hp;
    n_vocab = hp.n_vocab, n_ctx_train = hp.n_ctx_train, n_embd = hp.n_embd;
    rope_ = RopeSpec{w_.inv_freq, hp.rope_scale, RopeMode::kNorm, hp.n_rot, hp.head_dim};
    GraphBuilder b;
    Val x = b.embed(w_.tok_embd);
    for (int il = 0; il < hp.n_layer; ++il) {
      const LlamaLayer& L = w_.layers[size_t(il)];
      b.begin_layer(il);
      const std::vector<Val> qkv =
          b.linear(b.norm(x, rms_norm(L.attn_norm, hp.n_embd, hp.eps)), {&L.wq, &L.wk, &L.wv}, "qkv");
      b.rope(qkv[0], hp.n_head, qkv[1], hp.n_head_kv, rope_);
      AttentionSpec att;
      att.layer = il;
      att.shape = AttentionShape{hp.n_head, hp.n_head_kv, hp.head_dim};
      b.residual(x, b.linear(b.attention(qkv[0], qkv[1], qkv[2], att), L.wo, "attn_output"));
      b.residual(x, b.ffn(b.norm(x, rms_norm(L.ffn_norm, hp.n_embd, hp.eps)), {&L.w_gate, &L.w_up, &L.w_down}));
    }
    b.head();
    graph_ = b.finish(b.linear(b.norm(x, rms_norm(w_.output_norm, hp.n_embd, hp.eps)), w_.output, "output"));
  }

 private:
  LlamaWeights w_;
  RopeSpec rope_;
};

}  // namespace

std::shared_ptr<Model> create_llama(std::shared_ptr<GgufFile> file, const ModelOptions& opts) {
  return std::make_shared<DecoderModel>(std::move(file), opts, [](const GgufFile& f, const ModelOptions& o) {
    return std::unique_ptr<DecoderArch>(std::make_unique<LlamaArch>(f, o));
  });
}

}  // namespace pyrt
