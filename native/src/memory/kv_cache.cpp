#include "memory/kv_cache.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "backends/cpu/kernels.h"
#include "pyrt/error.h"
#include "pyrt/ggml_types.h"

namespace pyrt {

KvType parse_kv_type(const std::string& name) {
  if (name == "f32") return KvType::kF32;
  if (name == "f16") return KvType::kF16;
  fail(ErrorCode::kInvalidArgument, "unknown kv cache type '" + name + "' (supported: f32, f16)");
}

const char* kv_type_name(KvType t) { return t == KvType::kF32 ? "f32" : "f16"; }

KvCache::KvCache(int n_layers, int64_t kv_dim, int64_t n_ctx, KvType type)
    : kv_dim_(kv_dim), n_ctx_(n_ctx), type_(type), k_(n_layers), v_(n_layers) {}

void KvCache::ensure_capacity(int64_t n) {
  if (n <= capacity_) return;
  constexpr int64_t kStep = 256;
  const int64_t cap = std::min(n_ctx_, std::max(n, std::min(n_ctx_, (capacity_ * 3 / 2 + kStep - 1) / kStep * kStep)));
  for (auto* bufs : {&k_, &v_})
    for (auto& b : *bufs) b.resize(static_cast<size_t>(cap) * row_bytes());
  capacity_ = cap;
}

void KvCache::store(int layer, int64_t pos, int64_t T, const float* k, const float* v) {
  ensure_capacity(pos + T);
  const int64_t n = T * kv_dim_;
  uint8_t* kd = k_[layer].data() + pos * row_bytes();
  uint8_t* vd = v_[layer].data() + pos * row_bytes();
  if (type_ == KvType::kF32) {
    std::memcpy(kd, k, n * sizeof(float));
    std::memcpy(vd, v, n * sizeof(float));
    return;
  }
  auto* kh = reinterpret_cast<uint16_t*>(kd);
  auto* vh = reinterpret_cast<uint16_t*>(vd);
  for (int64_t i = 0; i < n; ++i) {
    kh[i] = fp32_to_fp16(k[i]);
    vh[i] = fp32_to_fp16(v[i]);
  }
}

size_t KvCache::bytes() const {
  size_t total = 0;
  for (const auto* bufs : {&k_, &v_})
    for (const auto& b : *bufs) total += b.capacity();
  return total;
}

void KvCache::clear() {
  for (auto* bufs : {&k_, &v_})
    for (auto& b : *bufs) std::vector<uint8_t>().swap(b);
  capacity_ = 0;
}

void attend_causal(const KvCache& cache, int layer, const float* q, int64_t n_past, int64_t T, const AttentionShape& s,
                   float* out, ThreadPool& pool) {
  const cpu::KernelTable& k = cpu::kernels();
  const int group = s.n_heads / s.n_kv_heads;
  const int64_t d = s.head_dim, q_stride = static_cast<int64_t>(s.n_heads) * d;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const bool f16 = cache.type() == KvType::kF16;
  const uint8_t* K = cache.k_data(layer);
  const uint8_t* V = cache.v_data(layer);
  const size_t row = cache.row_bytes(), elt = f16 ? 2 : 4;
  pool.run(T * s.n_heads, [&](int64_t task) {
    thread_local std::vector<float> scores;
    const int64_t t = task / s.n_heads;
    const int h = static_cast<int>(task % s.n_heads), kvh = h / group;
    const int64_t n_keys = n_past + t + 1;
    const float* qh = q + t * q_stride + h * d;
    scores.resize(static_cast<size_t>(n_keys));
    float mx = -INFINITY;
    for (int64_t j = 0; j < n_keys; ++j) {
      const uint8_t* kr = K + j * row + kvh * d * elt;
      const float sc = (f16 ? k.dot_f16(kr, qh, d) : k.dot_f32(reinterpret_cast<const float*>(kr), qh, d)) * scale;
      scores[j] = sc;
      mx = std::max(mx, sc);
    }
    float sum = 0;
    for (int64_t j = 0; j < n_keys; ++j) {
      scores[j] = std::exp(scores[j] - mx);
      sum += scores[j];
    }
    float* o = out + t * q_stride + h * d;
    std::fill(o, o + d, 0.0f);
    const float inv = 1.0f / sum;
    for (int64_t j = 0; j < n_keys; ++j) {
      const uint8_t* vr = V + j * row + kvh * d * elt;
      if (f16) k.axpy_f16(scores[j] * inv, reinterpret_cast<const uint16_t*>(vr), o, d);
      else k.axpy_f32(scores[j] * inv, reinterpret_cast<const float*>(vr), o, d);
    }
  });
}

}  // namespace pyrt
