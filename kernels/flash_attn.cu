// FlashAttention-2-style prefill forward: one CTA per (query tile, head, batch); its four warps
// split the query rows, so the online softmax needs no inter-warp communication. QK^T and PV run on
// tensor cores (WMMA 16x16x16, fp16 in, fp32 accumulate); S, P and the running O live in shared memory.
// The softmax runs all 16 rows of a warp at once: a lane pair per row, each lane every other column,
// the row's running max and sum in registers (two shuffles per tile, not two reductions per row).
// Every row sums in the same order wherever it sits in a tile (so any chunking of a prompt gives the
// same bits); S, P and O rows are padded so the 16 rows' lanes meet at most two to a bank.
#include <mma.h>

#include <cmath>

#include "common.cuh"
#include "pyrt_cuda.h"

namespace pyrt::cuda {
namespace {

using namespace nvcuda;

constexpr int kBr = 64;  // query rows per CTA (16 per warp)
constexpr int kBc = 64;  // keys per tile
constexpr int kWarps = 4;

// Row strides (elements) of S (fp32), P (fp16) and O (fp32) in shared memory: WMMA needs multiples of
// 16 bytes; 4 floats / 8 halves of padding spread a warp's 16 rows over the banks.
constexpr int kSStride = kBc + 4, kPStride = kBc + 8;
template <int D>
constexpr int kOStride = D + 4;
template <int D>
constexpr int kHStride = D + 8;  // Q, K and V rows (fp16): 16 bytes of padding shift each row by 4 banks

template <int D>
struct FlashSmem {
  static constexpr size_t q = size_t(kBr) * kHStride<D> * 2, k = size_t(kBc) * kHStride<D> * 2, v = k;
  static constexpr size_t s = size_t(kBr) * kSStride * 4, p = size_t(kBr) * kPStride * 2;
  static constexpr size_t o = size_t(kBr) * kOStride<D> * 4;
  static constexpr size_t ml = 2 * kBr * 4;
  static constexpr size_t total = q + k + v + s + p + o + ml;
};

// Copies `rows` rows of D halves (global row stride `stride` elements) into shared memory (row
// stride kHStride), zero-filling rows >= valid.
template <int D>
__device__ void load_tile(half* dst, const half* src, int rows, int valid, size_t stride) {
  constexpr int kVec = D / 8;  // 16-byte vectors per row
  for (int i = threadIdx.x; i < rows * kVec; i += blockDim.x) {
    const int r = i / kVec, c = i % kVec;
    uint4 val = make_uint4(0, 0, 0, 0);
    if (r < valid) val = reinterpret_cast<const uint4*>(src + size_t(r) * stride)[c];
    reinterpret_cast<uint4*>(dst + size_t(r) * kHStride<D>)[c] = val;
  }
}

template <int D>
__global__ void __launch_bounds__(kWarps * 32) flash_fwd_kernel(FlashParams p) {
  PYRT_DYNAMIC_SHARED(unsigned char, smem);
  using S = FlashSmem<D>;
  half* sQ = reinterpret_cast<half*>(smem);
  half* sK = reinterpret_cast<half*>(smem + S::q);
  half* sV = reinterpret_cast<half*>(smem + S::q + S::k);
  float* sS = reinterpret_cast<float*>(smem + S::q + S::k + S::v);
  half* sP = reinterpret_cast<half*>(smem + S::q + S::k + S::v + S::s);
  float* sO = reinterpret_cast<float*>(smem + S::q + S::k + S::v + S::s + S::p);
  float* sM = reinterpret_cast<float*>(smem + S::q + S::k + S::v + S::s + S::p + S::o);
  float* sL = sM + kBr;

  const int q0 = blockIdx.x * kBr, h = blockIdx.y, b = blockIdx.z;
  const int kvh = h / (p.Hq / p.Hkv);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, row0 = warp * 16;
  // Dense [B, H, S, D] or packed varlen [T, H, D]: same loop, different bases and row strides.
  const bool varlen = p.cu_seqlens_q != nullptr;
  const int Sq = varlen ? p.cu_seqlens_q[b + 1] - p.cu_seqlens_q[b] : p.Sq;
  const int Sk = varlen ? p.cu_seqlens_k[b + 1] - p.cu_seqlens_k[b] : p.Sk;
  if (q0 >= Sq) return;  // varlen: this sequence is shorter than the longest
  const bool q_tokens = varlen || p.q_token_major;
  const size_t q_stride = q_tokens ? size_t(p.Hq) * D : D, kv_stride = varlen ? size_t(p.Hkv) * D : D;
  const size_t q_base = varlen     ? size_t(p.cu_seqlens_q[b]) * q_stride + size_t(h) * D
                        : q_tokens ? size_t(b) * p.Sq * q_stride + size_t(h) * D
                                   : (size_t(b) * p.Hq + h) * p.Sq * D;
  const size_t kv_rows = p.kv_capacity > 0 ? size_t(p.kv_capacity) : size_t(p.Sk);
  const size_t kv_base =
      varlen ? size_t(p.cu_seqlens_k[b]) * kv_stride + size_t(kvh) * D : (size_t(b) * p.Hkv + kvh) * kv_rows * D;
  const half* qg = p.q + q_base + size_t(q0) * q_stride;
  const half* kg = p.k + kv_base;
  const half* vg = p.v + kv_base;
  const float scale_log2 = p.scale * kLog2e;
  const int offset = Sk - Sq;  // bottom-right causal alignment

  load_tile<D>(sQ, qg, kBr, min(kBr, Sq - q0), q_stride);
  for (int i = threadIdx.x; i < kBr * kOStride<D>; i += blockDim.x) sO[i] = 0.0f;
  // This lane's softmax row and columns: the pair (2r, 2r + 1) shares row r of the warp's 16, lane 2r + h
  // takes the columns h, h + 2, h + 4, ... of it.
  const int sm_row = row0 + lane / 2, sm_half = lane % 2, sm_qi = q0 + sm_row;
  float m_i = -INFINITY, l_i = 0.0f;  // the row's running max (log2 units) and sum; equal in both lanes
  int n_tiles = (Sk + kBc - 1) / kBc;
  if (p.causal) {
    const int last_key = min(q0 + kBr, Sq) - 1 + offset;
    n_tiles = last_key < 0 ? 0 : min(n_tiles, last_key / kBc + 1);
  }

  for (int t = 0; t < n_tiles; ++t) {
    const int k0 = t * kBc;
    __syncthreads();  // the previous tile's PV is done with sK/sV
    load_tile<D>(sK, kg + size_t(k0) * kv_stride, kBc, min(kBc, Sk - k0), kv_stride);
    load_tile<D>(sV, vg + size_t(k0) * kv_stride, kBc, min(kBc, Sk - k0), kv_stride);
    __syncthreads();

    // S[rows of this warp, :] = Q K^T
    for (int n0 = 0; n0 < kBc; n0 += 16) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::fill_fragment(acc, 0.0f);
      for (int kk = 0; kk < D; kk += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, half, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, half, wmma::col_major> bk;
        wmma::load_matrix_sync(a, sQ + row0 * kHStride<D> + kk, kHStride<D>);
        wmma::load_matrix_sync(bk, sK + n0 * kHStride<D> + kk, kHStride<D>);
        wmma::mma_sync(acc, a, bk, acc);
      }
      wmma::store_matrix_sync(sS + row0 * kSStride + n0, acc, kSStride, wmma::mem_row_major);
    }
    __syncwarp();

    // Online softmax of the warp's 16 rows at once.
    {
      constexpr int kHalf = kBc / 2;
      float sv[kHalf];
      float mx = -INFINITY;
#pragma unroll
      for (int j = 0; j < kHalf; ++j) {
        const int c = 2 * j + sm_half, key = k0 + c;
        const bool valid = key < Sk && (!p.causal || key <= sm_qi + offset);
        float v = valid ? sS[sm_row * kSStride + c] * scale_log2 : -INFINITY;
        // Bias by relative position key - (qi + offset), indexed from -(p.Sk - 1): one vector serves
        // every sequence of a varlen batch (p.Sq / p.Sk are the largest lengths there).
        if (valid && p.rel_bias) {
          v += p.rel_bias[size_t(h) * (p.Sq + p.Sk - 1) + (key - sm_qi - offset + p.Sk - 1)] * kLog2e;
        }
        sv[j] = v;
        mx = fmaxf(mx, v);
      }
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      const float m_new = fmaxf(m_i, mx);
      const float m_use = m_new == -INFINITY ? 0.0f : m_new;  // fully masked so far: avoid inf - inf
      float sum = 0.0f;
#pragma unroll
      for (int j = 0; j < kHalf; ++j) {
        const float pj = exp2f(sv[j] - m_use);  // masked: exp2(-inf) = 0
        sP[sm_row * kPStride + 2 * j + sm_half] = __float2half(pj);
        sum += pj;
      }
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      const float alpha = exp2f(m_i - m_use);
      l_i = l_i * alpha + sum;
      m_i = m_new;
      if (alpha != 1.0f) {  // once a row's max settles, its O needs no rescaling
        for (int c = sm_half; c < D; c += 2) sO[sm_row * kOStride<D> + c] *= alpha;
      }
    }
    __syncwarp();

    // O[rows of this warp, :] += P V
    for (int n0 = 0; n0 < D; n0 += 16) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::load_matrix_sync(acc, sO + row0 * kOStride<D> + n0, kOStride<D>, wmma::mem_row_major);
      for (int kk = 0; kk < kBc; kk += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, half, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, half, wmma::row_major> bv;
        wmma::load_matrix_sync(a, sP + row0 * kPStride + kk, kPStride);
        wmma::load_matrix_sync(bv, sV + kk * kHStride<D> + n0, kHStride<D>);
        wmma::mma_sync(acc, a, bv, acc);
      }
      wmma::store_matrix_sync(sO + row0 * kOStride<D> + n0, acc, kOStride<D>, wmma::mem_row_major);
    }
    __syncwarp();
  }
  if (sm_half == 0) sM[sm_row] = m_i, sL[sm_row] = l_i;
  __syncthreads();

  // Epilogue: normalise and write rows that exist (lanes across columns: coalesced stores).
  for (int r = 0; r < 16; ++r) {
    const int row = row0 + r, qi = q0 + row;
    if (qi >= Sq) break;
    const float l = sL[row];
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    float* og = p.out + q_base + size_t(qi) * q_stride;
    for (int c = lane; c < D; c += 32) og[c] = sO[row * kOStride<D> + c] * inv;
    if (lane == 0) {
      const float m = sM[row];
      const size_t li = varlen ? size_t(h) * p.total_q + p.cu_seqlens_q[b] + qi : (size_t(b) * p.Hq + h) * p.Sq + qi;
      p.lse[li] = l > 0.0f ? m * kLn2 + logf(l) : -INFINITY;
    }
  }
}

template <int D>
cudaError_t launch(const FlashParams& p, cudaStream_t stream) {
  const size_t smem = FlashSmem<D>::total;
  cudaError_t err = cudaFuncSetAttribute(flash_fwd_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
  if (err != cudaSuccess) return err;
  dim3 grid((p.Sq + kBr - 1) / kBr, p.Hq, p.B);
  PYRT_LAUNCH(grid, kWarps * 32, smem, stream, flash_fwd_kernel<D>)(p);
  return cudaGetLastError();
}

}  // namespace

cudaError_t flash_attn_fwd(const FlashParams& p, cudaStream_t stream) {
  if (p.B <= 0 || p.Hq <= 0 || p.Hkv <= 0 || p.Hq % p.Hkv != 0 || p.Sq <= 0 || p.Sk <= 0) return cudaErrorInvalidValue;
  if (p.kv_capacity != 0 && (p.kv_capacity < p.Sk || p.cu_seqlens_q)) return cudaErrorInvalidValue;
  if (p.q_token_major && p.cu_seqlens_q) return cudaErrorInvalidValue;
  switch (p.D) {
    case 64: return launch<64>(p, stream);
    case 80: return launch<80>(p, stream);
    case 96: return launch<96>(p, stream);
    case 128: return launch<128>(p, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace pyrt::cuda
