// The decoder's KV cache on the GPU: appending a step's keys/values in the cache's format (f16, or
// ggml q8_0 / q4_0 blocks along the head dimension, bit for bit what the CPU runtime's quantizers
// write), and fp16 copies of a cached range for the prefill attention kernel.
#include "common.cuh"
#include "pyrt_cuda.h"

namespace pyrt::cuda {
namespace {

// f16: one thread per element: token t, head h, channel c -> cache[h][pos0 + t][c].
__global__ void append_f16_kernel(const float* src, int T, int n_heads, int D, half* cache, int capacity, int pos0) {
  const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= int64_t(T) * n_heads * D) return;
  const int c = int(idx % D), h = int((idx / D) % n_heads), t = int(idx / (int64_t(D) * n_heads));
  cache[(int64_t(h) * capacity + pos0 + t) * D + c] = __float2half_rn(src[idx]);
}

// q8_0 / q4_0: one warp per block of 32 values (lane j holds value j), the CPU quantizers' arithmetic.
template <KvFormat F>
__global__ void append_quant_kernel(const float* src, int T, int n_heads, int D, uint8_t* cache, int capacity,
                                    int pos0) {
  const int64_t block = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32, blocks_per_row = D / 32;
  if (block >= int64_t(T) * n_heads * blocks_per_row) return;  // whole warps leave together
  const int bi = int(block % blocks_per_row), h = int((block / blocks_per_row) % n_heads);
  const int t = int(block / (int64_t(blocks_per_row) * n_heads));
  const float x = src[block * 32 + lane];
  const int row_bytes = kv_row_bytes(F, D);
  uint8_t* dst = cache + (int64_t(h) * capacity + pos0 + t) * row_bytes;
  const float amax = warp_max(fabsf(x));
  if constexpr (F == KvFormat::kQ8_0) {
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    uint8_t* blk = dst + bi * 34;
    if (lane == 0) *reinterpret_cast<half*>(blk) = __float2half_rn(d);
    reinterpret_cast<int8_t*>(blk + 2)[lane] = static_cast<int8_t>(roundf(x * id));
  } else {
    // The signed value of the first element with the largest magnitude (the CPU keeps the first).
    const unsigned at_max = __ballot_sync(0xffffffffu, fabsf(x) == amax);
    const float mx = __shfl_sync(0xffffffffu, x, __ffs(int(at_max)) - 1);
    const float d = mx / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    const int q = min(15, int(static_cast<int8_t>(x * id + 8.5f)));
    const int q_hi = __shfl_down_sync(0xffffffffu, q, 16);  // value j + 16 for lanes j < 16
    uint8_t* blk = dst + bi * 18;
    if (lane == 0) *reinterpret_cast<half*>(blk) = __float2half_rn(d);
    if (lane < 16) blk[2 + lane] = static_cast<uint8_t>(q | (q_hi << 4));
  }
}

// cache[h][0..n) -> out[h][0..n) as fp16, one thread per element.
template <KvFormat F>
__global__ void to_f16_kernel(const uint8_t* cache, int n_heads, int capacity, int n, int D, half* out) {
  const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= int64_t(n_heads) * n * D) return;
  const int c = int(idx % D), i = int((idx / D) % n), h = int(idx / (int64_t(D) * n));
  const uint8_t* row = cache + (int64_t(h) * capacity + i) * kv_row_bytes(F, D);
  const float v = F == KvFormat::kQ8_0 ? q8_0_at(row, c) : q4_0_at(row, c);
  out[idx] = __float2half_rn(v);
}

}  // namespace

cudaError_t kv_append(KvFormat format, const float* src, int T, int n_heads, int D, void* cache, int capacity, int pos0,
                      cudaStream_t stream) {
  if (T < 0 || n_heads <= 0 || D <= 0 || D % 32 != 0 || pos0 < 0 || pos0 + T > capacity) return cudaErrorInvalidValue;
  const int64_t n = int64_t(T) * n_heads * D;
  if (n == 0) return cudaSuccess;
  auto* bytes = static_cast<uint8_t*>(cache);
  switch (format) {
    case KvFormat::kF16:
      PYRT_LAUNCH(blocks_for(n, 256), 256, 0, stream, append_f16_kernel)(src, T, n_heads, D, static_cast<half*>(cache),
                                                                         capacity, pos0);
      break;
    case KvFormat::kQ8_0:
      PYRT_LAUNCH(blocks_for(n / 32, 8), 256, 0, stream, append_quant_kernel<KvFormat::kQ8_0>)(src, T, n_heads, D,
                                                                                               bytes, capacity, pos0);
      break;
    case KvFormat::kQ4_0:
      PYRT_LAUNCH(blocks_for(n / 32, 8), 256, 0, stream, append_quant_kernel<KvFormat::kQ4_0>)(src, T, n_heads, D,
                                                                                               bytes, capacity, pos0);
      break;
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

cudaError_t kv_to_f16(KvFormat format, const void* cache, int n_heads, int capacity, int n, int D, half* out,
                      cudaStream_t stream) {
  if (n_heads <= 0 || D <= 0 || D % 32 != 0 || n < 0 || n > capacity) return cudaErrorInvalidValue;
  const int64_t total = int64_t(n_heads) * n * D;
  if (total == 0) return cudaSuccess;
  const auto* bytes = static_cast<const uint8_t*>(cache);
  switch (format) {
    case KvFormat::kQ8_0:
      PYRT_LAUNCH(blocks_for(total, 256), 256, 0, stream, to_f16_kernel<KvFormat::kQ8_0>)(bytes, n_heads, capacity, n,
                                                                                          D, out);
      break;
    case KvFormat::kQ4_0:
      PYRT_LAUNCH(blocks_for(total, 256), 256, 0, stream, to_f16_kernel<KvFormat::kQ4_0>)(bytes, n_heads, capacity, n,
                                                                                          D, out);
      break;
    default: return cudaErrorInvalidValue;  // f16 caches are read in place
  }
  return cudaGetLastError();
}

}  // namespace pyrt::cuda
