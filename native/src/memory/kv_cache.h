// Per-session key/value cache: for every layer a key store and a value store (kv_store.h), whose
// formats are chosen separately (kv_cache_k / kv_cache_v), plus causal attention over them.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "memory/kv_store.h"
#include "memory/sequence_cache.h"
#include "pyrt/threadpool.h"

namespace pyrt {

class KvCache {
 public:
  KvCache(int n_layers, int n_kv_heads, int head_dim, const KvSpec& k_spec, const KvSpec& v_spec);
  // Appends T rows of K and V for `layer` (the layer's stores must hold exactly `pos` tokens).
  void store(int layer, int64_t pos, int64_t T, const float* k, const float* v);
  // After this step's attention: lets compressed formats move tokens out of their fp16 windows.
  void finish_step(int layer);
  size_t bytes() const;
  void clear();
  void clear_layer(int layer);
  const KvStore& keys(int layer) const { return *k_[layer]; }
  const KvStore& values(int layer) const { return *v_[layer]; }
  // The layer's keys or values as float rows [size, n_kv_heads * head_dim], read back through the
  // stores' own score/sum paths (tests compare caches across chunkings; attention never uses this).
  std::vector<float> rows(int layer, bool keys, int n_kv_heads, int head_dim) const;
  const KvSpec& k_spec() const { return k_spec_; }
  const KvSpec& v_spec() const { return v_spec_; }

 private:
  KvSpec k_spec_, v_spec_;
  std::vector<std::unique_ptr<KvStore>> k_, v_;
};

struct AttentionOptions {
  float scale = 0.0f;  // 0: 1/sqrt(head_dim); T5 uses 1 (the scaling is folded into its weights)
  KvHeadMap head_map = KvHeadMap::kGrouped;
  bool causal = true;  // query at position p sees keys 0..p; otherwise every key
  // Optional additive bias on a query row's scaled scores (T5 relative position bias).
  std::function<void(int head, int64_t q_pos, int64_t n_keys, float* scores)> add_bias;
  // Prefill over stores with blocked reads: query rows with more keys than online_from go through the
  // keys `key_tile` at a time with an online softmax (running max and sum per row, output rescaled),
  // so a long prompt's scores never outgrow the cache; shorter rows take the exact two-pass softmax,
  // whose numbers are decode's bit for bit (longer rows are within fp32 rounding of decode). Either
  // way a row's bits do not depend on how the prompt was chunked. 0 picks the defaults (2048 and
  // 1024); tests set both small.
  int64_t online_from = 0, key_tile = 0;
};

// T query rows at positions q_pos0..q_pos0+T-1 attend over the first n_keys keys/values of the stores.
// q, out: [T, n_heads*head_dim]. Works for every store format (reads them directly).
void attend(const KvStore& K, const KvStore& V, const float* q, int64_t q_pos0, int64_t T, int64_t n_keys,
            const AttentionShape& s, const AttentionOptions& opt, float* out, ThreadPool& pool);

// Attention over plain float K/V rows ([n_keys, n_kv_heads*head_dim]), e.g. an encoder's self-attention.
void attend_dense(const float* q, const float* k, const float* v, int64_t T, int64_t n_keys, const AttentionShape& s,
                  const AttentionOptions& opt, float* out, ThreadPool& pool);

// Causal attention of T new query rows (positions n_past..n_past+T-1) over cached keys 0..n_past+T-1,
// grouped head map, 1/sqrt(d) scale (decoder-only models).
void attend_causal(const KvCache& cache, int layer, const float* q, int64_t n_past, int64_t T, const AttentionShape& s,
                   float* out, ThreadPool& pool);

}  // namespace pyrt
