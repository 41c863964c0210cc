#pragma once
#include <cuda_fp16.h>

#include <cstdint>

// Kernel launches and dynamic shared memory go through these two macros so that the CUDA simulator
// (kernels/sim) can compile the same sources as host C++; it defines its own versions.
#ifndef PYRT_CUDA_SIM
#define PYRT_LAUNCH(grid, block, smem, stream, ...) __VA_ARGS__<<<grid, block, smem, stream>>>
#define PYRT_DYNAMIC_SHARED(T, name) extern __shared__ __align__(128) T name[]
#endif

namespace pyrt::cuda {

// Blocks of `threads` covering n items.
inline int blocks_for(int64_t n, int threads) {
  return static_cast<int>((n + threads - 1) / threads);
}

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// One element of a ggml-format row (block of 32 along the row).
__device__ __forceinline__ float q8_0_at(const uint8_t* row, int c) {
  const uint8_t* blk = row + (c >> 5) * 34;
  const float d = __half2float(*reinterpret_cast<const __half*>(blk));
  return d * static_cast<float>(reinterpret_cast<const int8_t*>(blk + 2)[c & 31]);
}
__device__ __forceinline__ float q4_0_at(const uint8_t* row, int c) {
  const uint8_t* blk = row + (c >> 5) * 18;
  const float d = __half2float(*reinterpret_cast<const __half*>(blk));
  const int j = c & 31;
  const uint8_t byte = blk[2 + (j & 15)];
  return d * static_cast<float>((j < 16 ? (byte & 0x0F) : (byte >> 4)) - 8);
}

}  // namespace pyrt::cuda
