// Prefill GEMM on tensor cores (WMMA, sm_70+): y[T, N] = x[T, K] . w[N, K]^T with fp16 operands and
// fp32 accumulation. A CTA computes a 64 x 64 tile of y with 4 warps of 32 x 32 (2 x 2 fragments of
// 16 x 16 x 16); K goes through shared memory 32 at a time, zero-filled past the edges, so any T, N
// and K work. Weights are the model's rows as stored (w row n = output n), read as the column-major
// B operand without a transpose. Q8_0/Q4_0/Q4_1 rows are dequantized while their tile is loaded (a
// K step of 32 is one ggml block per row), so quantized weights never exist as fp16 in device memory.
#include <mma.h>

#include "common.cuh"
#include "pyrt_cuda.h"

namespace pyrt::cuda {
namespace {

using namespace nvcuda;

constexpr int kTileM = 64, kTileN = 64, kTileK = 32;
constexpr int kLd = kTileK + 8;  // padded rows: 80 bytes apart, fragment loads stay 32-byte aligned
constexpr int kOutLd = 32 + 4;

// One ggml block's 16 values [16 h, 16 h + 16) as fp16, with dequant_rows_f16's arithmetic (same bits).
template <int TYPE>
__device__ __forceinline__ void dequant_half_block(const uint8_t* blk, int h, half* out) {
  const float d = __half2float(*reinterpret_cast<const half*>(blk));
#pragma unroll
  for (int i = 0; i < 16; ++i) {
    const int j = 16 * h + i;
    float v;
    if constexpr (TYPE == 8) {
      v = d * static_cast<float>(reinterpret_cast<const int8_t*>(blk + 2)[j]);
    } else if constexpr (TYPE == 2) {
      const uint8_t byte = blk[2 + i];
      v = d * static_cast<float>((h == 0 ? (byte & 0x0F) : (byte >> 4)) - 8);
    } else {
      const float m = __half2float(*reinterpret_cast<const half*>(blk + 2));
      const uint8_t byte = blk[4 + i];
      v = d * static_cast<float>(h == 0 ? (byte & 0x0F) : (byte >> 4)) + m;
    }
    out[i] = __float2half_rn(v);
  }
}

// TYPE: ggml type id of w (1 = F16 rows; 8 / 2 / 3 = Q8_0 / Q4_0 / Q4_1 blocks, K % 32 == 0).
template <int TYPE>
__global__ void __launch_bounds__(128)
    gemm_tc_kernel(const half* x, const void* w, float* y, int T, int N, int K, int ldy) {
  __shared__ __align__(32) half sx[kTileM][kLd];
  __shared__ __align__(32) half sw[kTileN][kLd];
  __shared__ __align__(32) float sy[4][32][kOutLd];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int wm = (warp / 2) * 32, wn = (warp % 2) * 32;
  const int m0 = blockIdx.y * kTileM, n0 = blockIdx.x * kTileN;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.0f);
  const half zero = __float2half(0.0f);
  for (int k0 = 0; k0 < K; k0 += kTileK) {
    for (int e = threadIdx.x; e < kTileM * kTileK; e += blockDim.x) {
      const int r = e / kTileK, c = e % kTileK, gk = k0 + c;
      const int gm = m0 + r, gn = n0 + r;
      sx[r][c] = (gm < T && gk < K) ? x[size_t(gm) * K + gk] : zero;
      if constexpr (TYPE == 1) sw[r][c] = (gn < N && gk < K) ? static_cast<const half*>(w)[size_t(gn) * K + gk] : zero;
    }
    if constexpr (TYPE != 1) {  // a thread per (row, half block): 64 rows x 2 halves = the CTA's 128
      constexpr int kBlockBytes = TYPE == 8 ? 34 : (TYPE == 2 ? 18 : 20);
      const int r = threadIdx.x / 2, h = threadIdx.x % 2, gn = n0 + r;
      if (gn < N) {
        const uint8_t* blk = static_cast<const uint8_t*>(w) + (size_t(gn) * (K / 32) + k0 / 32) * kBlockBytes;
        dequant_half_block<TYPE>(blk, h, &sw[r][16 * h]);
      } else {
#pragma unroll
        for (int i = 0; i < 16; ++i) sw[r][16 * h + i] = zero;
      }
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kTileK; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, half, wmma::row_major> a[2];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, half, wmma::col_major> b[2];
#pragma unroll
      for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(a[i], &sx[wm + 16 * i][kk], kLd);
#pragma unroll
      for (int j = 0; j < 2; ++j) wmma::load_matrix_sync(b[j], &sw[wn + 16 * j][kk], kLd);
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], a[i], b[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j)
      wmma::store_matrix_sync(&sy[warp][16 * i][16 * j], acc[i][j], kOutLd, wmma::mem_row_major);
  __syncwarp();
  for (int e = lane; e < 32 * 32; e += 32) {
    const int r = e / 32, c = e % 32, gm = m0 + wm + r, gn = n0 + wn + c;
    if (gm < T && gn < N) y[size_t(gm) * ldy + gn] = sy[warp][r][c];
  }
}

}  // namespace

cudaError_t gemm_ggml_tc(int ggml_type, const half* x, const void* w, float* y, int T, int N, int K, int ldy,
                         cudaStream_t stream) {
  if (T < 0 || N <= 0 || K <= 0 || ldy < N) return cudaErrorInvalidValue;
  if (ggml_type != 1 && K % 32 != 0) return cudaErrorInvalidValue;
  if (T == 0) return cudaSuccess;
  const dim3 grid((N + kTileN - 1) / kTileN, (T + kTileM - 1) / kTileM);
  if (grid.y > 65535) return cudaErrorInvalidValue;
  switch (ggml_type) {
    case 1: PYRT_LAUNCH(grid, 128, 0, stream, gemm_tc_kernel<1>)(x, w, y, T, N, K, ldy); break;
    case 8: PYRT_LAUNCH(grid, 128, 0, stream, gemm_tc_kernel<8>)(x, w, y, T, N, K, ldy); break;
    case 2: PYRT_LAUNCH(grid, 128, 0, stream, gemm_tc_kernel<2>)(x, w, y, T, N, K, ldy); break;
    case 3: PYRT_LAUNCH(grid, 128, 0, stream, gemm_tc_kernel<3>)(x, w, y, T, N, K, ldy); break;
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

cudaError_t gemm_f16_tc(const half* x, const half* w, float* y, int T, int N, int K, int ldy, cudaStream_t stream) {
  return gemm_ggml_tc(1, x, w, y, T, N, K, ldy, stream);
}

}  // namespace pyrt::cuda
