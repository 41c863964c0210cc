// Per-session key/value cache: one buffer per layer, rows of kv_dim per position, f32 or f16.
// Storage grows in steps as positions are used, so a long context costs memory only when filled.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "pyrt/threadpool.h"

namespace pyrt {

enum class KvType { kF32, kF16 };
KvType parse_kv_type(const std::string& name);
const char* kv_type_name(KvType t);

class KvCache {
 public:
  KvCache(int n_layers, int64_t kv_dim, int64_t n_ctx, KvType type);
  void ensure_capacity(int64_t n_positions);
  // Writes T rows of K and V for `layer` starting at position `pos`.
  void store(int layer, int64_t pos, int64_t T, const float* k, const float* v);
  KvType type() const { return type_; }
  int64_t n_ctx() const { return n_ctx_; }
  int64_t kv_dim() const { return kv_dim_; }
  size_t bytes() const;  // bytes actually allocated
  const uint8_t* k_data(int layer) const { return k_[layer].data(); }
  const uint8_t* v_data(int layer) const { return v_[layer].data(); }
  size_t row_bytes() const { return static_cast<size_t>(kv_dim_) * (type_ == KvType::kF32 ? 4 : 2); }
  void clear();

 private:
  int64_t kv_dim_, n_ctx_, capacity_ = 0;
  KvType type_;
  std::vector<std::vector<uint8_t>> k_, v_;
};

struct AttentionShape {
  int n_heads, n_kv_heads, head_dim;
};
// Causal attention of T new query rows (positions n_past..n_past+T-1) over cached keys 0..n_past+T-1.
// q: [T, n_heads*head_dim], out: [T, n_heads*head_dim]. Query head h reads KV head h / (n_heads/n_kv_heads).
void attend_causal(const KvCache& cache, int layer, const float* q, int64_t n_past, int64_t T, const AttentionShape& s,
                   float* out, ThreadPool& pool);

}  // namespace pyrt
