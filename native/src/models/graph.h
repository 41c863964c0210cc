// One statement of a model's layers, made once at load from the shared blocks below and executed by
// every path: the CPU prompt pass and batched decode (models/runner.h), chunked NPU prefill (sched/
// builds its task graph from the linear groups here) and CUDA (the same runner on another backend).
// A value is a matrix with one row per row of the pass and a fixed width; a node reads and writes
// values. The graph knows nothing of devices or of how many rows a pass has.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "backends/backend.h"
#include "core/weight.h"
#include "memory/sequence_cache.h"

namespace pyrt {

struct Val {
  int id = -1;
};

enum class OpKind {
  kEmbed,      // out = table rows of the pass's ids (* scale)
  kInput,      // out = rows the caller gives (encoder features, encoder states)
  kNorm,       // out = norm(in)
  kLinear,     // outs[i] = in @ weights[i]^T + biases[i]: a group of weights on one input
  kRope,       // in[0], in[1] (queries, keys) rotated in place
  kAttention,  // out = attention of in[0] (queries) over keys / values (memory/sequence_cache.h)
  kAdd,        // in[0] += in[1] (residual)
  kActivate,   // in[0] = act(in[0]) * in[1] (gated) or act(in[0])
  kScale,      // in[0] *= scale
  kPositions,  // in[0] += learned position rows at each row's position
  kStoreCross  // the sequence's cross-attention cache of `layer` = in[0] (keys), in[1] (values)
};

struct Node {
  OpKind op;
  std::vector<int> in, out;  // value ids
  std::string name;          // linear groups: "qkv", "attn_output", "gate_up", "ffn_down" (schedules, traces)
  int layer = -1;
  const Weight* table = nullptr;  // kEmbed
  NormSpec norm;                  // kNorm (norm.width groups per row)
  std::vector<const Weight*> weights;
  std::vector<const float*> biases;  // kLinear: one per weight, null for none
  const RopeSpec* rope = nullptr;    // kRope
  int rope_heads[2] = {0, 0};        // heads of in[0] and in[1]
  AttentionSpec attn;                // kAttention
  Activation act = Activation::kSilu;
  float scale = 1.0f;                // kEmbed, kScale
  const float* positions = nullptr;  // kPositions: [n_positions, width] host floats
  int64_t n_positions = 0;
};

class Graph {
 public:
  int64_t width(Val v) const { return widths_[size_t(v.id)]; }
  const std::vector<Node>& nodes() const { return nodes_; }
  int n_values() const { return int(widths_.size()); }
  Val output() const { return output_; }
  // The first node of the head (after the last layer): where output rows are picked when they cannot
  // be picked earlier.
  size_t head_begin() const { return head_begin_; }
  // One past the last node that mixes rows (attention): every later node works row by row, so a pass
  // that wants only some rows' outputs can drop the others here (llama.cpp's inp_out_ids).
  size_t rows_independent_from() const { return rows_independent_from_; }
  // Values written before node i and read at or after it (the ones to pick rows from there).
  std::vector<int> live_across(size_t i) const;
  size_t first_def(Val v) const { return first_def_[size_t(v.id)]; }
  // Buffer slot of each value (values whose lifetimes do not overlap share one) and the slot widths.
  int slot(int value) const { return slot_of_[size_t(value)]; }
  const std::vector<int64_t>& slot_widths() const { return slot_widths_; }
  // Everything a backend must hold: linear weights, embedding tables, float vectors (norms, biases,
  // position tables).
  std::vector<const Weight*> linear_weights() const;
  std::vector<const Weight*> tables() const;
  std::vector<std::pair<const float*, int64_t>> vectors() const;
  // The self-attention (kCached) and cross-attention layers the graph reads: what a sequence's cache holds.
  CacheLayout self_layout() const;
  CacheLayout cross_layout() const;

 private:
  friend class GraphBuilder;
  std::vector<Node> nodes_;
  std::vector<int64_t> widths_;
  Val output_;
  size_t head_begin_ = 0, rows_independent_from_ = 0;
  std::vector<size_t> first_def_, last_use_;
  std::vector<int> slot_of_;
  std::vector<int64_t> slot_widths_;
};

inline NormSpec rms_norm(const float* w, int64_t width, float eps) {
  return NormSpec{false, w, nullptr, eps, width};
}
inline NormSpec layer_norm(const float* w, const float* b, int64_t width, float eps) {
  return NormSpec{true, w, b, eps, width};
}

// The shared blocks. Model files state their layers with these; finish() checks and seals the graph.
class GraphBuilder {
 public:
  // Nodes added from here on belong to layer `il` (schedules and traces name it).
  void begin_layer(int il) { layer_ = il; }
  Val input(int64_t width);
  Val embed(const Weight& table, float scale = 1.0f);
  Val norm(Val x, const NormSpec& s);
  // One input, several weights (fused groups: Q/K/V, gate/up): one pass over the input for all.
  std::vector<Val> linear(Val x, const std::vector<const Weight*>& ws, const std::string& name,
                          const std::vector<const float*>& biases = {});
  Val linear(Val x, const Weight& w, const std::string& name, const float* bias = nullptr);
  void rope(Val q, int q_heads, Val k, int k_heads, const RopeSpec& s);
  Val attention(Val q, Val k, Val v, const AttentionSpec& s);  // k, v unused (pass {}) for kCross
  void residual(Val x, Val y);                                 // x += y
  void activate(Val x, Activation a, Val up = {});
  void scale(Val x, float s);
  void positions(Val x, const float* table, int64_t n_positions);
  void store_cross(int layer, Val k, Val v);
  // Gated (gate and up set: down(act(gate x) * up x)) or plain (down(act(up x))) feed-forward.
  struct Ffn {
    const Weight *gate = nullptr, *up = nullptr, *down = nullptr;
    const float *b_gate = nullptr, *b_up = nullptr, *b_down = nullptr;
    Activation act = Activation::kSilu;
  };
  Val ffn(Val x, const Ffn& f);
  // Marks the head's first node (the final norm and output linear follow).
  void head() { head_begin_ = nodes_.size(), layer_ = -1; }
  Graph finish(Val output);  // Val{}: no output (a graph that only fills caches)

 private:
  Val value(int64_t width);
  Node& add(OpKind op, std::vector<int> in, std::vector<int> out);
  std::vector<Node> nodes_;
  std::vector<int64_t> widths_;
  size_t head_begin_ = SIZE_MAX;
  int layer_ = -1;
};

}  // namespace pyrt
