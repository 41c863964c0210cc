// Dequantizing GEMV for decode (F16 rows too): a warp per output row, lanes across 32-element blocks (so a warp
// reads consecutive blocks), x staged once per CTA in shared memory.
#include "common.cuh"
#include "pyrt_cuda.h"

namespace pyrt::cuda {
namespace {

constexpr int kRowsPerCta = 4;

template <int TYPE>
__global__ void __launch_bounds__(kRowsPerCta * 32) gemv_kernel(const uint8_t* w, const float* x, float* y, int N, int K) {
  PYRT_DYNAMIC_SHARED(float, sx);
  for (int i = threadIdx.x; i < K; i += blockDim.x) sx[i] = x[i];
  __syncthreads();
  const int row = blockIdx.x * kRowsPerCta + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (row >= N) return;
  constexpr int kBlockBytes = TYPE == 1 ? 64 : TYPE == 8 ? 34 : (TYPE == 2 ? 18 : 20);
  const int n_blocks = K / 32;
  const uint8_t* r = w + size_t(row) * n_blocks * kBlockBytes;
  float sum = 0.0f;
  for (int bi = lane; bi < n_blocks; bi += 32) {
    const uint8_t* blk = r + size_t(bi) * kBlockBytes;
    const float* xs = sx + bi * 32;
    float s = 0.0f;
    if constexpr (TYPE == 1) {  // F16 rows: 32 values per "block", no scale
      const __half* hs = reinterpret_cast<const __half*>(blk);
#pragma unroll
      for (int j = 0; j < 32; ++j) s += __half2float(hs[j]) * xs[j];
      sum += s;
      continue;
    }
    const float d = __half2float(*reinterpret_cast<const __half*>(blk));
    if constexpr (TYPE == 8) {
      const int8_t* qs = reinterpret_cast<const int8_t*>(blk + 2);
#pragma unroll
      for (int j = 0; j < 32; ++j) s += qs[j] * xs[j];
      sum += d * s;
    } else if constexpr (TYPE == 2) {
#pragma unroll
      for (int j = 0; j < 16; ++j) s += ((blk[2 + j] & 0x0F) - 8) * xs[j] + ((blk[2 + j] >> 4) - 8) * xs[j + 16];
      sum += d * s;
    } else {
      const float m = __half2float(*reinterpret_cast<const __half*>(blk + 2));
      float sxs = 0.0f;
#pragma unroll
      for (int j = 0; j < 16; ++j) {
        s += (blk[4 + j] & 0x0F) * xs[j] + (blk[4 + j] >> 4) * xs[j + 16];
        sxs += xs[j] + xs[j + 16];
      }
      sum += d * s + m * sxs;
    }
  }
  sum = warp_sum(sum);
  if (lane == 0) y[row] = sum;
}

}  // namespace

cudaError_t gemv_quant(int type, const void* w, const float* x, float* y, int N, int K, cudaStream_t stream) {
  if (N <= 0 || K <= 0 || K % 32 != 0) return cudaErrorInvalidValue;
  const dim3 grid((N + kRowsPerCta - 1) / kRowsPerCta);
  const size_t smem = size_t(K) * sizeof(float);
  const auto* wb = static_cast<const uint8_t*>(w);
  if (smem > 48 * 1024) {  // long rows (K > 12288) need the opt-in
    cudaError_t err = cudaSuccess;
    switch (type) {
      case 1: err = cudaFuncSetAttribute(gemv_kernel<1>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)); break;
      case 8: err = cudaFuncSetAttribute(gemv_kernel<8>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)); break;
      case 2: err = cudaFuncSetAttribute(gemv_kernel<2>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)); break;
      case 3: err = cudaFuncSetAttribute(gemv_kernel<3>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)); break;
      default: break;
    }
    if (err != cudaSuccess) return err;
  }
  switch (type) {
    case 1: PYRT_LAUNCH(grid, kRowsPerCta * 32, smem, stream, gemv_kernel<1>)(wb, x, y, N, K); break;
    case 8: PYRT_LAUNCH(grid, kRowsPerCta * 32, smem, stream, gemv_kernel<8>)(wb, x, y, N, K); break;
    case 2: PYRT_LAUNCH(grid, kRowsPerCta * 32, smem, stream, gemv_kernel<2>)(wb, x, y, N, K); break;
    case 3: PYRT_LAUNCH(grid, kRowsPerCta * 32, smem, stream, gemv_kernel<3>)(wb, x, y, N, K); break;
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace pyrt::cuda
