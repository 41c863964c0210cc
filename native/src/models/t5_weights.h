// A T5 file's hyperparameters and weights (views into the mapped file; the relative position bias
// dequantized with its bucket tables), read once with every shape checked. The CPU model (t5.cpp)
// and the CUDA path (backends/cuda) both start from this.
#pragma once
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "backends/cpu/ops.h"
#include "memory/attention_bias.h"
#include "models/loader.h"
#include "models/t5.h"
#include "pyrt/gguf.h"
#include "pyrt/model.h"

namespace pyrt {

struct T5Layer {
  const float* attn_norm = nullptr;
  AttentionWeights self;
  const float* cross_norm = nullptr;  // decoder only
  AttentionWeights cross;
  const float* ffn_norm = nullptr;
  Weight up, gate, down;  // gate only for gated FFNs (v1.1)
};

struct T5Weights {
  int64_t E_ = 0, F_ = 0, inner_ = 0, n_vocab_ = 0, n_ctx_train_ = 0;
  int n_head_ = 0, d_kv_ = 0;
  float eps_ = 1e-6f, logit_scale_ = 1.0f;
  Activation act_ = Activation::kRelu;
  bool gated_ = false;
  int32_t decoder_start_token_ = 0;
  Weight tok_embd_, output_;
  const float *enc_norm_ = nullptr, *dec_norm_ = nullptr;
  std::vector<T5Layer> enc_, dec_;
  RelativeBias enc_bias_, dec_bias_;
};

// One stack's relative position bias from its table tensor [n_head, num_buckets] and the bucket rules.
RelativeBias t5_relative_bias(const GgufTensorInfo& t, int heads, int num_buckets, int max_distance,
                              bool bidirectional);

// Errors (kFormat) name the file and the key or tensor; `opts` sets the weights' activation precision.
T5Weights load_t5_weights(const GgufFile& file, const std::string& arch, const ModelOptions* opts);

}  // namespace pyrt
