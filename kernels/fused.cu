// The per-token layer glue of a decoder on the GPU: RMSNorm, rotary embedding and SwiGLU, each one
// pass over its rows (no intermediate tensors), plus fp16 rows from ggml-quantized weights so
// prefill can feed them to the tensor-core GEMM (gemm_tc.cu).
#include <algorithm>

#include "common.cuh"
#include "pyrt_cuda.h"

namespace pyrt::cuda {
namespace {

constexpr int kNormThreads = 256;

// Sum of v over the CTA (kNormThreads threads), returned to every thread.
__device__ float block_sum(float v, float* warp_sums) {
  v = warp_sum(v);
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = v;
  __syncthreads();
  if (threadIdx.x < 32) {
    float t = threadIdx.x < kNormThreads / 32 ? warp_sums[threadIdx.x] : 0.0f;
    t = warp_sum(t);
    if (threadIdx.x == 0) warp_sums[0] = t;
  }
  __syncthreads();
  const float total = warp_sums[0];
  __syncthreads();  // warp_sums is reused by the next reduction
  return total;
}

// One CTA per row: each thread sums squares over a strided slice, warps reduce, then every thread
// scales its slice. Sums in fp32 like the CPU path (the order differs: a tolerance, not bits).
__global__ void __launch_bounds__(kNormThreads)
    rms_norm_kernel(const float* x, const float* w, float* y, int n, float eps) {
  __shared__ float warp_sums[kNormThreads / 32];
  const float* xr = x + size_t(blockIdx.x) * n;
  float* yr = y + size_t(blockIdx.x) * n;
  float ss = 0.0f;
  for (int i = threadIdx.x; i < n; i += kNormThreads) ss += xr[i] * xr[i];
  const float inv = rsqrtf(block_sum(ss, warp_sums) / static_cast<float>(n) + eps);
  for (int i = threadIdx.x; i < n; i += kNormThreads) yr[i] = xr[i] * inv * w[i];
}

// LayerNorm, one CTA per row: the mean, then the variance about it (two passes, as on the CPU).
__global__ void __launch_bounds__(kNormThreads)
    layer_norm_kernel(const float* x, const float* w, const float* b, float* y, int n, float eps) {
  __shared__ float warp_sums[kNormThreads / 32];
  const float* xr = x + size_t(blockIdx.x) * n;
  float* yr = y + size_t(blockIdx.x) * n;
  float sum = 0.0f;
  for (int i = threadIdx.x; i < n; i += kNormThreads) sum += xr[i];
  const float mean = block_sum(sum, warp_sums) / static_cast<float>(n);
  float ss = 0.0f;
  for (int i = threadIdx.x; i < n; i += kNormThreads) ss += (xr[i] - mean) * (xr[i] - mean);
  const float inv = rsqrtf(block_sum(ss, warp_sums) / static_cast<float>(n) + eps);
  for (int i = threadIdx.x; i < n; i += kNormThreads) yr[i] = (xr[i] - mean) * inv * w[i] + (b ? b[i] : 0.0f);
}

__global__ void add_bias_kernel(float* y, const float* bias, int64_t rows, int n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < rows * n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] += bias[i % n];
}

__global__ void scale_kernel(float* x, float s, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    x[i] *= s;
}

__global__ void add_positions_kernel(float* x, const float* table, const int* positions, int rows, int width) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < int64_t(rows) * width;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int p = positions[i / width];
    if (p >= 0) x[i] += table[int64_t(p) * width + i % width];
  }
}

// One thread per rotated pair (token t, head h, pair i): the CPU rope()'s pairing, (2i, 2i + 1) for
// ggml's normal mode and (i, i + n_rot / 2) for NeoX; channels past n_rot are left as they are.
__global__ void rope_kernel(float* x, int T, int n_heads, int head_dim, int n_rot, int pos0, const int* positions,
                            const float* inv_freq, bool neox) {
  const int half_rot = n_rot / 2;
  const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= int64_t(T) * n_heads * half_rot) return;
  const int i = int(idx % half_rot);
  const int h = int((idx / half_rot) % n_heads);
  const int t = int(idx / (int64_t(half_rot) * n_heads));
  float* v = x + (int64_t(t) * n_heads + h) * head_dim;
  const float theta = static_cast<float>(positions ? positions[t] : pos0 + t) * inv_freq[i];
  float s, c;
  sincosf(theta, &s, &c);
  const int a = neox ? i : 2 * i, b = neox ? i + half_rot : 2 * i + 1;
  const float x0 = v[a], x1 = v[b];
  v[a] = x0 * c - x1 * s;
  v[b] = x0 * s + x1 * c;
}

// Full-precision math (expf, tanhf, erff, not the __ intrinsics): the CPU's accuracy at large |x|.
template <Act A>
__device__ __forceinline__ float activation(float x) {
  if constexpr (A == Act::kRelu)
    return x > 0.0f ? x : 0.0f;
  else if constexpr (A == Act::kGeluTanh)
    return 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
  else if constexpr (A == Act::kGeluErf)
    return 0.5f * x * (1.0f + erff(x * 0.7071067811865476f));
  else
    return x / (1.0f + expf(-x));
}

template <Act A>
__global__ void act_mul_kernel(float* x, const float* up, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float a = activation<A>(x[i]);
    x[i] = up ? a * up[i] : a;
  }
}

// One thread per element: block of 32 along the row, ggml layouts (SPEC 4.2; Q4_1 adds an fp16 min).
template <int TYPE>
__global__ void dequant_kernel(const uint8_t* w, half* out, int N, int K) {
  const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= int64_t(N) * K) return;
  const int row = int(idx / K), c = int(idx % K);
  constexpr int kBlockBytes = TYPE == 8 ? 34 : (TYPE == 2 ? 18 : 20);
  const uint8_t* blk = w + (size_t(row) * (K / 32) + c / 32) * kBlockBytes;
  const float d = __half2float(*reinterpret_cast<const half*>(blk));
  const int j = c & 31;
  float v;
  if constexpr (TYPE == 8) {
    v = d * static_cast<float>(reinterpret_cast<const int8_t*>(blk + 2)[j]);
  } else if constexpr (TYPE == 2) {
    const uint8_t byte = blk[2 + (j & 15)];
    v = d * static_cast<float>((j < 16 ? (byte & 0x0F) : (byte >> 4)) - 8);
  } else {
    const float m = __half2float(*reinterpret_cast<const half*>(blk + 2));
    const uint8_t byte = blk[4 + (j & 15)];
    v = d * static_cast<float>(j < 16 ? (byte & 0x0F) : (byte >> 4)) + m;
  }
  out[idx] = __float2half_rn(v);
}

__global__ void add_kernel(float* x, const float* y, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    x[i] += y[i];
}

__global__ void to_half_kernel(const float* x, half* y, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = __float2half_rn(x[i]);
}

}  // namespace

cudaError_t rms_norm(const float* x, const float* w, float* y, int rows, int n, float eps, cudaStream_t stream) {
  if (rows < 0 || n <= 0) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  PYRT_LAUNCH(rows, kNormThreads, 0, stream, rms_norm_kernel)(x, w, y, n, eps);
  return cudaGetLastError();
}

cudaError_t layer_norm(const float* x, const float* w, const float* b, float* y, int rows, int n, float eps,
                       cudaStream_t stream) {
  if (rows < 0 || n <= 0) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  PYRT_LAUNCH(rows, kNormThreads, 0, stream, layer_norm_kernel)(x, w, b, y, n, eps);
  return cudaGetLastError();
}

namespace {
int elementwise_grid(int64_t n) {
  return static_cast<int>(std::min<int64_t>(blocks_for(n, 256), 65535));
}
}  // namespace

cudaError_t add_bias(float* y, const float* bias, int64_t rows, int n, cudaStream_t stream) {
  if (rows < 0 || n <= 0) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  PYRT_LAUNCH(elementwise_grid(rows * n), 256, 0, stream, add_bias_kernel)(y, bias, rows, n);
  return cudaGetLastError();
}

cudaError_t scale(float* x, float s, int64_t n, cudaStream_t stream) {
  if (n < 0) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  PYRT_LAUNCH(elementwise_grid(n), 256, 0, stream, scale_kernel)(x, s, n);
  return cudaGetLastError();
}

cudaError_t add_positions(float* x, const float* table, const int* positions, int rows, int width,
                          cudaStream_t stream) {
  if (rows < 0 || width <= 0) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  PYRT_LAUNCH(elementwise_grid(int64_t(rows) * width), 256, 0, stream, add_positions_kernel)(x, table, positions, rows,
                                                                                             width);
  return cudaGetLastError();
}

namespace {
cudaError_t launch_rope(float* x, int T, int n_heads, int head_dim, int n_rot, int pos0, const int* positions,
                        const float* inv_freq, bool neox, cudaStream_t stream) {
  if (T < 0 || n_heads <= 0 || n_rot <= 0 || n_rot % 2 != 0 || n_rot > head_dim || pos0 < 0)
    return cudaErrorInvalidValue;
  const int64_t pairs = int64_t(T) * n_heads * (n_rot / 2);
  if (pairs == 0) return cudaSuccess;
  PYRT_LAUNCH(blocks_for(pairs, 256), 256, 0, stream, rope_kernel)(x, T, n_heads, head_dim, n_rot, pos0, positions,
                                                                   inv_freq, neox);
  return cudaGetLastError();
}
}  // namespace

cudaError_t rope(float* x, int T, int n_heads, int head_dim, int n_rot, int pos0, const float* inv_freq, bool neox,
                 cudaStream_t stream) {
  return launch_rope(x, T, n_heads, head_dim, n_rot, pos0, nullptr, inv_freq, neox, stream);
}

cudaError_t rope_positions(float* x, int T, int n_heads, int head_dim, int n_rot, const int* positions,
                           const float* inv_freq, bool neox, cudaStream_t stream) {
  return launch_rope(x, T, n_heads, head_dim, n_rot, 0, positions, inv_freq, neox, stream);
}

cudaError_t act_mul(Act act, float* x, const float* up, int64_t n, cudaStream_t stream) {
  if (n < 0) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  const int grid = static_cast<int>(std::min<int64_t>(blocks_for(n, 256), 65535));
  switch (act) {
    case Act::kRelu: PYRT_LAUNCH(grid, 256, 0, stream, act_mul_kernel<Act::kRelu>)(x, up, n); break;
    case Act::kGeluTanh: PYRT_LAUNCH(grid, 256, 0, stream, act_mul_kernel<Act::kGeluTanh>)(x, up, n); break;
    case Act::kGeluErf: PYRT_LAUNCH(grid, 256, 0, stream, act_mul_kernel<Act::kGeluErf>)(x, up, n); break;
    case Act::kSilu: PYRT_LAUNCH(grid, 256, 0, stream, act_mul_kernel<Act::kSilu>)(x, up, n); break;
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

cudaError_t swiglu(float* gate, const float* up, int64_t n, cudaStream_t stream) {
  return act_mul(Act::kSilu, gate, up, n, stream);
}

cudaError_t add_inplace(float* x, const float* y, int64_t n, cudaStream_t stream) {
  if (n < 0) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  PYRT_LAUNCH(static_cast<int>(std::min<int64_t>(blocks_for(n, 256), 65535)), 256, 0, stream, add_kernel)(x, y, n);
  return cudaGetLastError();
}

cudaError_t f32_to_f16(const float* x, half* y, int64_t n, cudaStream_t stream) {
  if (n < 0) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  PYRT_LAUNCH(static_cast<int>(std::min<int64_t>(blocks_for(n, 256), 65535)), 256, 0, stream, to_half_kernel)(x, y, n);
  return cudaGetLastError();
}

cudaError_t dequant_rows_f16(int ggml_type, const void* w, half* out, int N, int K, cudaStream_t stream) {
  if (N <= 0 || K <= 0 || K % 32 != 0) return cudaErrorInvalidValue;
  const auto* wb = static_cast<const uint8_t*>(w);
  const int grid = blocks_for(int64_t(N) * K, 256);
  switch (ggml_type) {
    case 8: PYRT_LAUNCH(grid, 256, 0, stream, dequant_kernel<8>)(wb, out, N, K); break;
    case 2: PYRT_LAUNCH(grid, 256, 0, stream, dequant_kernel<2>)(wb, out, N, K); break;
    case 3: PYRT_LAUNCH(grid, 256, 0, stream, dequant_kernel<3>)(wb, out, N, K); break;
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace pyrt::cuda
