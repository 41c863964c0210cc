// A Llama-family file's hyperparameters and weights (views into the mapped file), read once with every
// shape checked. The CPU model (llama.cpp) and the CUDA path (backends/cuda) both start from this.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "backends/cpu/ops.h"
#include "pyrt/gguf.h"
#include "pyrt/model.h"

namespace pyrt {

struct LlamaHparams {
  int n_layer = 0, n_embd = 0, n_ff = 0, n_head = 0, n_head_kv = 0, head_dim = 0, n_rot = 0;
  int64_t n_vocab = 0, n_ctx_train = 0;
  float eps = 1e-5f, rope_base = 10000.0f, rope_scale = 1.0f;
};

struct LlamaLayer {
  const float* attn_norm = nullptr;
  const float* ffn_norm = nullptr;
  Weight wq, wk, wv, wo, w_gate, w_up, w_down;
};

struct LlamaWeights {
  LlamaHparams hp;
  Weight tok_embd, output;  // output is tok_embd when the file ties them
  const float* output_norm = nullptr;
  std::vector<LlamaLayer> layers;
  std::vector<float> inv_freq;  // RoPE, n_rot / 2 (rope_freqs.weight factors applied)
};

// Errors (kFormat / kUnsupported) name the file and the key or tensor. `opts` sets the weights'
// activation precision (ModelOptions::activations); null leaves the default.
LlamaWeights load_llama_weights(const GgufFile& file, const std::string& arch, const ModelOptions* opts);

}  // namespace pyrt
