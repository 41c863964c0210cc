// Padding-free batching (ByteTransformer, SPEC 6.1): lengths from the mask with one warp per sequence
// (ballot + popcount), a single-block exclusive scan, a gather map, and 16-byte pack/unpack copies.
#include "common.cuh"
#include "pyrt_cuda.h"

namespace pyrt::cuda {
namespace {

__global__ void lengths_kernel(const int* mask, int B, int S_max, int* lens) {
  const int b = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (b >= B) return;
  int n = 0;
  for (int i = lane; i - lane < S_max; i += 32) {
    const bool valid = i < S_max && mask[size_t(b) * S_max + i] != 0;
    n += __popc(__ballot_sync(0xffffffffu, valid));
  }
  if (lane == 0) lens[b] = n;
}

// Exclusive scan of B <= 1024 lengths in one block (Hillis-Steele in shared memory), cu[B] = total.
__global__ void scan_kernel(const int* lens, int B, int* cu) {
  __shared__ int buf[1024];
  const int i = threadIdx.x;
  buf[i] = i < B ? lens[i] : 0;
  __syncthreads();
  for (int off = 1; off < 1024; off <<= 1) {
    const int add = i >= off ? buf[i - off] : 0;
    __syncthreads();
    buf[i] += add;
    __syncthreads();
  }
  if (i < B) cu[i + 1] = buf[i];
  if (i == 0) cu[0] = 0;
}

__global__ void gather_map_kernel(const int* cu, int S_max, int* word_idx) {
  const int b = blockIdx.x;
  const int begin = cu[b], n = cu[b + 1] - begin;
  for (int i = threadIdx.x; i < n; i += blockDim.x) word_idx[begin + i] = b * S_max + i;
}

__global__ void pack_kernel(const uint4* padded, const int* word_idx, int vecs, uint4* packed) {
  const int t = blockIdx.x;
  const uint4* src = padded + size_t(word_idx[t]) * vecs;
  for (int v = threadIdx.x; v < vecs; v += blockDim.x) packed[size_t(t) * vecs + v] = src[v];
}

__global__ void unpack_kernel(const uint4* packed, const int* word_idx, int vecs, uint4* padded) {
  const int t = blockIdx.x;
  uint4* dst = padded + size_t(word_idx[t]) * vecs;
  for (int v = threadIdx.x; v < vecs; v += blockDim.x) dst[v] = packed[size_t(t) * vecs + v];
}

}  // namespace

cudaError_t build_varlen_index(const int* mask, int B, int S_max, int* cu, int* word_idx, cudaStream_t stream) {
  if (B <= 0 || B > 1024 || S_max <= 0) return cudaErrorInvalidValue;
  int* lens = nullptr;
  cudaError_t err = cudaMallocAsync(&lens, sizeof(int) * B, stream);
  if (err != cudaSuccess) return err;
  PYRT_LAUNCH((B + 3) / 4, 128, 0, stream, lengths_kernel)(mask, B, S_max, lens);
  PYRT_LAUNCH(1, 1024, 0, stream, scan_kernel)(lens, B, cu);
  PYRT_LAUNCH(B, 256, 0, stream, gather_map_kernel)(cu, S_max, word_idx);
  err = cudaGetLastError();
  cudaFreeAsync(lens, stream);
  return err;
}

cudaError_t pack_rows(const half* padded, const int* word_idx, int T_valid, int D, half* packed, cudaStream_t stream) {
  if ((D * 2) % 16 != 0) return cudaErrorInvalidValue;
  if (T_valid == 0) return cudaSuccess;
  PYRT_LAUNCH(T_valid, 64, 0, stream, pack_kernel)(reinterpret_cast<const uint4*>(padded), word_idx, D * 2 / 16,
                                                   reinterpret_cast<uint4*>(packed));
  return cudaGetLastError();
}

cudaError_t unpack_rows(const half* packed, const int* word_idx, int T_valid, int B_times_S, int D, half* padded,
                        cudaStream_t stream) {
  if ((D * 2) % 16 != 0) return cudaErrorInvalidValue;
  cudaError_t err = cudaMemsetAsync(padded, 0, size_t(B_times_S) * D * 2, stream);  // pad rows are exactly 0
  if (err != cudaSuccess || T_valid == 0) return err;
  PYRT_LAUNCH(T_valid, 64, 0, stream, unpack_kernel)(reinterpret_cast<const uint4*>(packed), word_idx, D * 2 / 16,
                                                     reinterpret_cast<uint4*>(padded));
  return cudaGetLastError();
}

}  // namespace pyrt::cuda
