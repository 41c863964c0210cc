// What a device's memory offers a model (the CPU's in memory/cpu_memory.h, the GPU's in
// memory/cuda/): one sequence's caches (self-attention K/V that grow with the tokens fed, cross-
// attention K/V fixed per encoder input), and the attention that reads them. The runner hands every
// attention of a pass to one call, so a device decides how to batch the pass's sequences (the CPU
// one pool job, the GPU one Lean Attention launch).
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "memory/attention_bias.h"
#include "memory/kv_store.h"

namespace pyrt {

struct AttentionShape {
  int n_heads, n_kv_heads, head_dim;
};

// Which KV head a query head reads: Llama/HF repeat_interleave groups consecutive query heads
// (h / (n_heads / n_kv_heads)); Mu tiles the KV heads (cat([kv] * G)), so h reads h % n_kv_heads.
enum class KvHeadMap { kGrouped, kTiled };

struct AttentionSpec {
  enum class Source {
    kCached,  // appends the rows' keys / values to the sequence's cache of `layer`, attends over it
    kCross,   // the sequence's cross-attention cache of `layer` (keys / values from the encoder)
    kDense    // within each sequence's rows of the pass, no cache (encoders)
  } source = Source::kCached;
  int layer = 0;
  AttentionShape shape{0, 0, 0};
  KvHeadMap head_map = KvHeadMap::kGrouped;
  float scale = 0.0f;                  // 0: 1/sqrt(head_dim)
  bool causal = true;                  // the row at position p sees keys at positions <= p
  const RelativeBias* bias = nullptr;  // additive bias by relative position (T5)
};

// The cached layers of one kind (self or cross): a sequence's cache holds n_layers of them.
struct CacheLayout {
  int n_layers = 0, n_kv_heads = 0, head_dim = 0;
};

class SequenceCache {
 public:
  virtual ~SequenceCache() = default;
  virtual size_t bytes() const = 0;
  virtual void clear() = 0;                  // the self-attention cache (cross-attention K/V stay)
  virtual int64_t cross_length() const = 0;  // -1: no cross K/V stored
  // Prompts must be fed in one pass (KIVI: a later pass would read earlier prompt tokens quantized
  // where one pass reads them in fp16, the paper's prefill).
  virtual bool one_pass_prompts() const { return false; }
  virtual void add_stats(std::map<std::string, double>& out) const {}
  // Layer `layer`'s cached keys or values as float rows [size, kv_width] (tests; kUnsupported where absent).
  virtual std::vector<float> rows(int layer, bool keys) const;
};

// n consecutive rows of a pass, row0.., that belong to one sequence at positions pos0..
struct SeqRows {
  SequenceCache* cache = nullptr;  // null for kDense
  int64_t row0 = 0, n = 0, pos0 = 0;
};

class KvMemory {
 public:
  virtual ~KvMemory() = default;
  // Key and value formats are the memory's (one per model); n_ctx bounds the self-attention cache.
  virtual std::unique_ptr<SequenceCache> new_sequence(const CacheLayout& self, const CacheLayout& cross,
                                                      int64_t n_ctx) = 0;
  // out rows of every sequence = attention of its q rows. q, k, v, out: [rows, heads * head_dim] in the
  // backend's memory; rows outside `seqs` (padding) are not touched.
  virtual void attend(const AttentionSpec& s, const std::vector<SeqRows>& seqs, const float* q, const float* k,
                      const float* v, float* out) = 0;
  // The cross-attention K/V of `layer` (n rows each), replacing what the sequence held for that layer.
  virtual void store_cross(SequenceCache& c, int layer, const float* k, const float* v, int64_t n) = 0;
  virtual void set_cross_length(SequenceCache& c, int64_t n) = 0;  // -1: none
  virtual const KvSpec& key_spec() const = 0;
  virtual const KvSpec& value_spec() const = 0;
};

}  // namespace pyrt
