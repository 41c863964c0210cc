// The compute interface every device implements (the CPU in backends/cpu, CUDA in backends/cuda): the
// position-wise operations of a model's layers on activation buffers in the device's memory. A model
// states its layers once (models/graph.h); the runner (models/runner.h) executes that statement by
// calling these, so no model file knows which device runs it. Attention over a sequence's cache is
// memory's (memory/sequence_cache.h): the cache formats and their readers live there.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/weight.h"

namespace pyrt {

enum class Activation { kRelu, kGeluTanh, kGeluErf, kSilu };
// Activation names as written in model files: "relu", "gelu_tanh" (gelu_new, gelu_pytorch_tanh), "gelu", "silu".
Activation activation_from_name(const std::string& name, const std::string& where);

enum class RopeMode { kNorm, kNeox };  // adjacent pairs (ggml NORM) vs rotate-half (NeoX)

// RMSNorm or LayerNorm over groups of `width` values: a row when width is the row's width, each head
// when it is the head dimension (Qwen3 / Gemma 3 per-head Q/K norms).
struct NormSpec {
  bool layer_norm = false;  // false: RMSNorm x / sqrt(mean(x^2) + eps) * w; true: (x - mean) / sd * w + b
  const float* w = nullptr;
  const float* b = nullptr;  // LayerNorm only (optional)
  float eps = 1e-5f;
  int64_t width = 0;
};

// Rotary embedding of the first n_rot dims of each head: angle_i = pos * pos_scale * inv_freq[i].
struct RopeSpec {
  std::vector<float> inv_freq;  // n_rot / 2 (frequency factors applied)
  float pos_scale = 1.0f;       // linear RoPE scaling
  RopeMode mode = RopeMode::kNorm;
  int n_rot = 0, head_dim = 0;
};

// A padding row's position (real positions may be negative: Mu centres its encoder's on 0).
constexpr int64_t kPaddingPosition = INT64_MIN;

// Positions of a pass's rows: row r is at positions[r] (rows without a position are padding).
struct RowPositions {
  const int64_t* pos = nullptr;  // [n_rows]; kPaddingPosition: padding
  int64_t n_rows = 0;
  int64_t first_pos = 0;    // when contiguous: pos[r] = first_pos + r for every row
  bool contiguous = false;  // one sequence's consecutive positions, no padding
};

// Per-pass scratch a backend keeps between the operations of one pass (RoPE angles of the pass's
// positions, uploaded index tables): created by begin_pass, passed back to every operation.
class PassScratch {
 public:
  virtual ~PassScratch() = default;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const std::string& name() const = 0;  // "cpu", "cuda", "cuda-sim"
  // Activations live in host memory: the runner may bind a caller's buffer (logits) as an output.
  virtual bool host_memory() const = 0;

  // Everything a model's graph will read, handed over once at load (the GPU uploads it): linear
  // weights, embedding tables and float vectors (norms, biases). Fails with kUnsupported naming the
  // tensor where the device cannot run it.
  virtual void prepare(const std::vector<const Weight*>& weights, const std::vector<const Weight*>& tables,
                       const std::vector<std::pair<const float*, int64_t>>& vectors) = 0;
  virtual size_t weight_bytes() const { return 0; }  // device memory the prepared weights take

  // Device memory for n floats (contents undefined); release() gives it back.
  virtual float* alloc(int64_t n) = 0;
  virtual void release(float* p) = 0;
  virtual void upload(const float* host, int64_t n, float* dst) = 0;
  virtual void download(const float* src, int64_t n, float* host) = 0;
  virtual void zero(float* x, int64_t n) = 0;
  // dst row i = src row rows[i] (rows increasing, so dst may be src: rows move towards the front).
  virtual void gather_rows(const float* src, const std::vector<int64_t>& rows, int64_t width, float* dst) = 0;

  virtual std::unique_ptr<PassScratch> begin_pass(const RowPositions& pos) = 0;

  // out[t] = table row ids[t] * scale (ids are host memory, checked against the vocabulary).
  virtual void embed(const Weight& table, const int32_t* ids, int64_t n, float scale, float* out) = 0;
  // rows x width-groups: out = norm(x) (x and out may be the same buffer).
  virtual void norm(const NormSpec& s, const float* x, float* out, int64_t n_groups) = 0;
  // ys[i] = x @ ws[i]^T + biases[i] for weights that read the same input (one pass over the input).
  virtual void linear(const Weight* const* ws, const float* const* biases, float* const* ys, int n, const float* x,
                      int64_t rows) = 0;
  // Rotates the n_heads heads of every positioned row of x in place.
  virtual void rope(const RopeSpec& s, float* x, int n_heads, const RowPositions& pos, PassScratch& scratch) = 0;
  virtual void add(float* x, const float* y, int64_t n) = 0;  // x += y
  // gate = act(gate) * up (up null: gate = act(gate)).
  virtual void activate(Activation a, float* gate, const float* up, int64_t n) = 0;
  virtual void scale(float* x, float s, int64_t n) = 0;
  // x row r += table row pos[r] (learned absolute positions, [n_positions, width] host floats).
  virtual void add_positions(const float* table, int64_t width, const RowPositions& pos, float* x) = 0;
};

}  // namespace pyrt
