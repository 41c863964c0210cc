// Reads a Llama-family file's hyperparameters and weight views (see llama_weights.h).
#include "models/llama_weights.h"

#include "models/loader.h"
#include "pyrt/error.h"

namespace pyrt {

LlamaWeights load_llama_weights(const GgufFile& g, const std::string& arch, const ModelOptions* opts) {
  LlamaWeights w;
  LlamaHparams& hp = w.hp;
  const std::string a = arch + ".";
  const ModelLoader ld(g, arch, opts);
  hp.n_layer = ld.pos_int("block_count");
  hp.n_embd = ld.pos_int("embedding_length");
  hp.n_ff = ld.pos_int("feed_forward_length");
  hp.n_head = ld.pos_int("attention.head_count");
  hp.n_head_kv = static_cast<int>(g.get_int(a + "attention.head_count_kv", hp.n_head));
  if (hp.n_head_kv <= 0 || hp.n_head % hp.n_head_kv != 0) {
    fail(ErrorCode::kFormat, g.path() + ": head_count " + std::to_string(hp.n_head) +
                                 " is not a multiple of head_count_kv " + std::to_string(hp.n_head_kv));
  }
  if (hp.n_embd % hp.n_head != 0)
    fail(ErrorCode::kFormat, g.path() + ": embedding_length is not a multiple of head_count");
  hp.head_dim = static_cast<int>(g.get_int(a + "attention.key_length", hp.n_embd / hp.n_head));
  hp.n_rot = static_cast<int>(g.get_int(a + "rope.dimension_count", hp.head_dim));
  if (hp.n_rot <= 0 || hp.n_rot > hp.head_dim || hp.n_rot % 2)
    fail(ErrorCode::kFormat, g.path() + ": invalid rope.dimension_count " + std::to_string(hp.n_rot));
  hp.eps = static_cast<float>(g.get_float(a + "attention.layer_norm_rms_epsilon", 1e-5));
  hp.rope_base = static_cast<float>(g.get_float(a + "rope.freq_base", 10000.0));
  hp.n_ctx_train = g.get_int(a + "context_length", 2048);
  const std::string scaling = g.get_string(a + "rope.scaling.type", "none");
  if (scaling == "linear") {
    hp.rope_scale = 1.0f / static_cast<float>(g.get_float(a + "rope.scaling.factor", 1.0));
  } else if (scaling != "none" && !scaling.empty()) {
    fail(ErrorCode::kUnsupported, g.path() + ": rope scaling '" + scaling + "' is not supported yet (none, linear)");
  }

  const GgufTensorInfo* emb = g.find_tensor("token_embd.weight");
  if (!emb || emb->ne.size() != 2)
    fail(ErrorCode::kFormat, g.path() + ": tensor 'token_embd.weight' is missing or not 2-D");
  hp.n_vocab = emb->ne[1];
  const int64_t E = hp.n_embd, q_dim = int64_t(hp.n_head) * hp.head_dim, kv_dim = int64_t(hp.n_head_kv) * hp.head_dim;
  w.tok_embd = ld.weight("token_embd.weight", {E, hp.n_vocab});
  w.output_norm = ld.f32("output_norm.weight", E);
  w.output = ld.has("output.weight") ? ld.weight("output.weight", {E, hp.n_vocab}) : w.tok_embd;
  w.layers.resize(hp.n_layer);
  for (int i = 0; i < hp.n_layer; ++i) {
    const std::string p = "blk." + std::to_string(i) + ".";
    LlamaLayer& L = w.layers[i];
    L.attn_norm = ld.f32(p + "attn_norm.weight", E);
    L.ffn_norm = ld.f32(p + "ffn_norm.weight", E);
    L.wq = ld.weight(p + "attn_q.weight", {E, q_dim});
    L.wk = ld.weight(p + "attn_k.weight", {E, kv_dim});
    L.wv = ld.weight(p + "attn_v.weight", {E, kv_dim});
    L.wo = ld.weight(p + "attn_output.weight", {q_dim, E});
    L.w_gate = ld.weight(p + "ffn_gate.weight", {E, hp.n_ff});
    L.w_up = ld.weight(p + "ffn_up.weight", {E, hp.n_ff});
    L.w_down = ld.weight(p + "ffn_down.weight", {hp.n_ff, E});
  }
  const float* freq_factors = nullptr;
  if (ld.has("rope_freqs.weight")) freq_factors = ld.f32("rope_freqs.weight", hp.n_rot / 2);
  w.inv_freq = rope_inv_freq(hp.n_rot, hp.rope_base, freq_factors);
  return w;
}

}  // namespace pyrt
