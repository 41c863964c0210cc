// Dequantizing GEMV for decode (F16 rows too): a warp per output row, lanes across 32-element blocks (so a warp
// reads consecutive blocks), x staged once per CTA in shared memory. Up to 8 activation rows (a batch of
// sessions' decode steps) share each weight block's dequantization and its one read from memory; every
// row's sum is formed in the same order as a lone row's, so batching does not change the bits.
#include <algorithm>

#include "common.cuh"
#include "pyrt_cuda.h"

namespace pyrt::cuda {
namespace {

constexpr int kRowsPerCta = 4;

template <int TYPE, int NB>
__global__ void __launch_bounds__(kRowsPerCta * 32)
    gemv_kernel(const uint8_t* w, const float* x, int nx, float* y, int ldy, int N, int K) {
  PYRT_DYNAMIC_SHARED(float, sx);  // [NB, K]; rows past nx are zero
  for (int i = threadIdx.x; i < NB * K; i += blockDim.x) sx[i] = i / K < nx ? x[i] : 0.0f;
  __syncthreads();
  const int row = blockIdx.x * kRowsPerCta + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (row >= N) return;
  constexpr int kBlockBytes = TYPE == 1 ? 64 : TYPE == 8 ? 34 : (TYPE == 2 ? 18 : 20);
  const int n_blocks = K / 32;
  const uint8_t* r = w + size_t(row) * n_blocks * kBlockBytes;
  float sum[NB];
#pragma unroll
  for (int n = 0; n < NB; ++n) sum[n] = 0.0f;
  for (int bi = lane; bi < n_blocks; bi += 32) {
    const uint8_t* blk = r + size_t(bi) * kBlockBytes;
    float wv[32];  // the block's codes (F16: values), dequantized once for all rows
    float d = 1.0f, m = 0.0f;
    if constexpr (TYPE == 1) {
      const __half* hs = reinterpret_cast<const __half*>(blk);
#pragma unroll
      for (int j = 0; j < 32; ++j) wv[j] = __half2float(hs[j]);
    } else if constexpr (TYPE == 8) {
      d = __half2float(*reinterpret_cast<const __half*>(blk));
      const int8_t* qs = reinterpret_cast<const int8_t*>(blk + 2);
#pragma unroll
      for (int j = 0; j < 32; ++j) wv[j] = float(qs[j]);
    } else if constexpr (TYPE == 2) {
      d = __half2float(*reinterpret_cast<const __half*>(blk));
#pragma unroll
      for (int j = 0; j < 16; ++j) wv[j] = float((blk[2 + j] & 0x0F) - 8), wv[j + 16] = float((blk[2 + j] >> 4) - 8);
    } else {
      d = __half2float(*reinterpret_cast<const __half*>(blk));
      m = __half2float(*reinterpret_cast<const __half*>(blk + 2));
#pragma unroll
      for (int j = 0; j < 16; ++j) wv[j] = float(blk[4 + j] & 0x0F), wv[j + 16] = float(blk[4 + j] >> 4);
    }
#pragma unroll
    for (int n = 0; n < NB; ++n) {
      const float* xs = sx + n * K + bi * 32;
      float s = 0.0f;
      if constexpr (TYPE == 1) {
#pragma unroll
        for (int j = 0; j < 32; ++j) s += wv[j] * xs[j];
        sum[n] += s;
      } else if constexpr (TYPE == 8) {
#pragma unroll
        for (int j = 0; j < 32; ++j) s += wv[j] * xs[j];
        sum[n] += d * s;
      } else if constexpr (TYPE == 2) {
#pragma unroll
        for (int j = 0; j < 16; ++j) s += wv[j] * xs[j] + wv[j + 16] * xs[j + 16];
        sum[n] += d * s;
      } else {
        float sxs = 0.0f;
#pragma unroll
        for (int j = 0; j < 16; ++j) {
          s += wv[j] * xs[j] + wv[j + 16] * xs[j + 16];
          sxs += xs[j] + xs[j + 16];
        }
        sum[n] += d * s + m * sxs;
      }
    }
  }
#pragma unroll
  for (int n = 0; n < NB; ++n) {
    const float s = warp_sum(sum[n]);
    if (lane == 0 && n < nx) y[size_t(n) * ldy + row] = s;
  }
}

template <int TYPE, int NB>
cudaError_t launch_typed(const uint8_t* w, const float* x, int nx, float* y, int ldy, int N, int K,
                         cudaStream_t stream) {
  const size_t smem = size_t(NB) * K * sizeof(float);
  if (smem > 48 * 1024) {  // staged x beyond 48 KiB (long rows or several of them) needs the opt-in
    const cudaError_t err =
        cudaFuncSetAttribute(gemv_kernel<TYPE, NB>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
    if (err != cudaSuccess) return err;
  }
  const dim3 grid((N + kRowsPerCta - 1) / kRowsPerCta);
  PYRT_LAUNCH(grid, kRowsPerCta * 32, smem, stream, gemv_kernel<TYPE, NB>)(w, x, nx, y, ldy, N, K);
  return cudaGetLastError();
}

template <int NB>
cudaError_t launch_nb(int type, const uint8_t* w, const float* x, int nx, float* y, int ldy, int N, int K,
                      cudaStream_t stream) {
  switch (type) {
    case 1: return launch_typed<1, NB>(w, x, nx, y, ldy, N, K, stream);
    case 8: return launch_typed<8, NB>(w, x, nx, y, ldy, N, K, stream);
    case 2: return launch_typed<2, NB>(w, x, nx, y, ldy, N, K, stream);
    case 3: return launch_typed<3, NB>(w, x, nx, y, ldy, N, K, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace

cudaError_t gemv_quant_rows(int type, const void* w, const float* x, int rows, float* y, int N, int K,
                            cudaStream_t stream) {
  if (N <= 0 || K <= 0 || K % 32 != 0 || rows <= 0) return cudaErrorInvalidValue;
  if (type != 1 && type != 8 && type != 2 && type != 3) return cudaErrorInvalidValue;
  int dev = 0, smem_max = 48 * 1024;
  if (cudaGetDevice(&dev) == cudaSuccess)
    cudaDeviceGetAttribute(&smem_max, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
  if (size_t(K) * sizeof(float) > size_t(smem_max)) return cudaErrorInvalidValue;
  const auto* wb = static_cast<const uint8_t*>(w);
  for (int r0 = 0; r0 < rows;) {
    // The smallest instance (1, 2, 4 or 8 rows) that takes what is left (a zero row costs less than a
    // second read of the weights), halved while its staged x would not fit in shared memory.
    const int left = std::min(rows - r0, kGemvMaxRows);
    int inst = left <= 1 ? 1 : left <= 2 ? 2 : left <= 4 ? 4 : 8;
    while (inst > 1 && size_t(inst) * K * sizeof(float) > size_t(smem_max)) inst /= 2;
    const int take = std::min(left, inst);
    const float* xr = x + size_t(r0) * K;
    float* yr = y + size_t(r0) * N;
    cudaError_t err;
    switch (inst) {
      case 1: err = launch_nb<1>(type, wb, xr, take, yr, N, N, K, stream); break;
      case 2: err = launch_nb<2>(type, wb, xr, take, yr, N, N, K, stream); break;
      case 4: err = launch_nb<4>(type, wb, xr, take, yr, N, N, K, stream); break;
      default: err = launch_nb<8>(type, wb, xr, take, yr, N, N, K, stream); break;
    }
    if (err != cudaSuccess) return err;
    r0 += take;
  }
  return cudaSuccess;
}

cudaError_t gemv_quant(int type, const void* w, const float* x, float* y, int N, int K, cudaStream_t stream) {
  return gemv_quant_rows(type, w, x, 1, y, N, K, stream);
}

}  // namespace pyrt::cuda
