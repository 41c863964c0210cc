// Per-session key/value cache: for every layer a key store and a value store (kv_store.h), whose
// formats are chosen separately (kv_cache_k / kv_cache_v), plus causal attention over them.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "memory/kv_store.h"
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
  const KvStore& keys(int layer) const { return *k_[layer]; }
  const KvStore& values(int layer) const { return *v_[layer]; }
  const KvSpec& k_spec() const { return k_spec_; }
  const KvSpec& v_spec() const { return v_spec_; }

 private:
  KvSpec k_spec_, v_spec_;
  std::vector<std::unique_ptr<KvStore>> k_, v_;
};

struct AttentionShape {
  int n_heads, n_kv_heads, head_dim;
};
// Causal attention of T new query rows (positions n_past..n_past+T-1) over cached keys 0..n_past+T-1.
// q: [T, n_heads*head_dim], out: [T, n_heads*head_dim]. Query head h reads KV head h / (n_heads/n_kv_heads).
void attend_causal(const KvCache& cache, int layer, const float* q, int64_t n_past, int64_t T, const AttentionShape& s,
                   float* out, ThreadPool& pool);

}  // namespace pyrt
