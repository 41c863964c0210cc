// Prefill GEMM on tensor cores (WMMA, sm_70+): y[T, N] = x[T, K] . w[N, K]^T with fp16 operands and
// fp32 accumulation. A CTA computes a 64 x 64 tile of y with 4 warps of 32 x 32 (2 x 2 fragments of
// 16 x 16 x 16); K goes through shared memory 32 at a time, zero-filled past the edges, so any T, N
// and K work. Weights are the model's rows as stored (w row n = output n), read as the column-major
// B operand without a transpose.
#include <mma.h>

#include "common.cuh"
#include "pyrt_cuda.h"

namespace pyrt::cuda {
namespace {

using namespace nvcuda;

constexpr int kTileM = 64, kTileN = 64, kTileK = 32;
constexpr int kLd = kTileK + 8;  // padded rows: 80 bytes apart, fragment loads stay 32-byte aligned
constexpr int kOutLd = 32 + 4;

__global__ void __launch_bounds__(128)
    gemm_tc_kernel(const half* x, const half* w, float* y, int T, int N, int K, int ldy) {
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
      sw[r][c] = (gn < N && gk < K) ? w[size_t(gn) * K + gk] : zero;
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

cudaError_t gemm_f16_tc(const half* x, const half* w, float* y, int T, int N, int K, int ldy, cudaStream_t stream) {
  if (T < 0 || N <= 0 || K <= 0 || ldy < N) return cudaErrorInvalidValue;
  if (T == 0) return cudaSuccess;
  const dim3 grid((N + kTileN - 1) / kTileN, (T + kTileM - 1) / kTileM);
  if (grid.y > 65535) return cudaErrorInvalidValue;
  PYRT_LAUNCH(grid, 128, 0, stream, gemm_tc_kernel)(x, w, y, T, N, K, ldy);
  return cudaGetLastError();
}

}  // namespace pyrt::cuda
