// Shape-checked access to a model file's tensors and hyperparameters, shared by every architecture.
// Errors name the file, the tensor or key, and what was expected.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "backends/cpu/ops.h"
#include "pyrt/gguf.h"
#include "pyrt/model.h"

namespace pyrt {

// Q/K/V/O projections of one attention block; biases are null when the file has none (T5).
struct AttentionWeights {
  Weight q, k, v, o;
  const float *bq = nullptr, *bk = nullptr, *bv = nullptr, *bo = nullptr;
};

class ModelLoader {
 public:
  // Weights get the model's activation precision (ModelOptions::activations) when opts is given.
  ModelLoader(const GgufFile& file, std::string arch, const ModelOptions* opts = nullptr)
      : f_(file), prefix_(std::move(arch) + "."), q8_activations_(opts && opts->activations == "q8") {}

  bool has(const std::string& name) const { return f_.find_tensor(name) != nullptr; }
  // The tensor `name` with exactly this GGUF shape (ne order: fastest dimension first).
  const GgufTensorInfo& tensor(const std::string& name, const std::vector<int64_t>& shape) const;
  Weight weight(const std::string& name, const std::vector<int64_t>& shape) const {
    Weight w = weight_from(tensor(name, shape));
    w.q8_activations = q8_activations_;
    return w;
  }
  // 1-D float vectors (norm weights, biases) must be stored as F32.
  const float* f32(const std::string& name, int64_t n) const;
  const float* f32_or_null(const std::string& name, int64_t n) const { return has(name) ? f32(name, n) : nullptr; }
  // "<prefix>_{q,k,v,o}.weight" (+ optional ".bias"): q [n_embd -> q_dim], k/v [n_embd -> kv_dim], o [q_dim -> n_embd].
  AttentionWeights attention(const std::string& prefix, int64_t n_embd, int64_t q_dim, int64_t kv_dim) const;

  // Rows of the 2-D embedding table `name` (the vocabulary size).
  int64_t vocab_of(const std::string& name) const;
  // "<arch>.decoder_start_token_id" (or `fallback`; -1: required), checked against the vocabulary.
  int32_t decoder_start(int64_t n_vocab, int64_t fallback) const;

  // "<arch>.<key>" metadata: a positive int (required, or `fallback` when given and absent), a float.
  int pos_int(const std::string& key) const;
  int pos_int(const std::string& key, int64_t fallback) const;
  double real(const std::string& key, double fallback) const { return f_.get_float(prefix_ + key, fallback); }
  const std::string& path() const { return f_.path(); }
  [[noreturn]] void bad(const std::string& what) const;  // kFormat error prefixed with the path

 private:
  const GgufFile& f_;
  std::string prefix_;
  bool q8_activations_ = false;
};

}  // namespace pyrt
