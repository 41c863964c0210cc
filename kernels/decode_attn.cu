// Split-K decode attention (Flash-Decoding) over f16 / q8_0 / q4_0 KV caches, read directly.
// CTA (split, kv head, batch): all G query heads of the KV group, keys [start, end) of the split,
// processed in sub-blocks of kKeys with an online softmax; then a combine kernel merges splits.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "common.cuh"
#include "pyrt_cuda.h"

namespace pyrt::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kKeys = 64;  // keys per sub-block
constexpr int kMaxGroup = 8;

template <KvFormat F>
__device__ __forceinline__ float kv_at(const uint8_t* row, int c) {
  if constexpr (F == KvFormat::kF16)
    return __half2float(reinterpret_cast<const half*>(row)[c]);
  else if constexpr (F == KvFormat::kQ8_0)
    return q8_0_at(row, c);
  else
    return q4_0_at(row, c);
}

// Element c of token j's key / value for one (sequence, KV head): row formats address rows.
template <KvFormat F>
struct KvReader {
  const uint8_t *kbase, *vbase;
  int row_bytes;
  __device__ KvReader(const DecodeParams& p, int rb, int b, int kvh) : row_bytes(rb) {
    if (p.seqs) {  // each sequence in its own cache
      const KvSeq s = p.seqs[b];
      kbase = static_cast<const uint8_t*>(s.k) + size_t(kvh) * s.capacity * rb;
      vbase = static_cast<const uint8_t*>(s.v) + size_t(kvh) * s.capacity * rb;
    } else {
      kbase = static_cast<const uint8_t*>(p.k) + (size_t(b) * p.Hkv + kvh) * p.S_max * rb;
      vbase = static_cast<const uint8_t*>(p.v) + (size_t(b) * p.Hkv + kvh) * p.S_max * rb;
    }
  }
  __device__ float key(int j, int c) const { return kv_at<F>(kbase + size_t(j) * row_bytes, c); }
  __device__ float value(int j, int c) const { return kv_at<F>(vbase + size_t(j) * row_bytes, c); }
};

// KIVI: sink rows, quantized groups, window rows (KiviCache), read in place.
template <>
struct KvReader<KvFormat::kKivi> {
  KiviCache k, v;
  int row, head_off;
  __device__ KvReader(const DecodeParams& p, int, int b, int kvh)
      : k(p.kivi_k[b]), v(p.kivi_v[b]), row(p.Hkv * p.D), head_off(kvh * p.D) {}
  __device__ static int code_at(const uint8_t* codes, int i, int bits) {
    const int per_byte = 8 / bits;
    return (codes[i / per_byte] >> ((i % per_byte) * bits)) & ((1 << bits) - 1);
  }
  __device__ float key(int j, int c) const {
    const int ch = head_off + c;
    if (j < k.n_sink) return __half2float(k.sink[size_t(j) * row + ch]);
    j -= k.n_sink;
    if (j < k.n_quant) {  // per channel, groups of `group` tokens
      const size_t e = size_t(j / k.group) * row + ch;
      const int code = code_at(k.codes + e * (k.group * k.bits / 8), j % k.group, k.bits);
      return __half2float(k.scale[e]) * static_cast<float>(code) + __half2float(k.min[e]);
    }
    return __half2float(k.window[size_t(j - k.n_quant) * row + ch]);
  }
  __device__ float value(int j, int c) const {
    const int ch = head_off + c;
    if (j < v.n_sink) return __half2float(v.sink[size_t(j) * row + ch]);
    j -= v.n_sink;
    if (j < v.n_quant) {  // per token, groups of `group` channels
      const size_t e = size_t(j) * (row / v.group) + ch / v.group;
      const int code = code_at(v.codes + e * (v.group * v.bits / 8), ch % v.group, v.bits);
      return __half2float(v.scale[e]) * static_cast<float>(code) + __half2float(v.min[e]);
    }
    return __half2float(v.window[size_t(j - v.n_quant) * row + ch]);
  }
};

// Attention of the G query heads of KV group (b, kvh) over keys [start, end) (start < end), written
// as a normalized partial O and its LSE for head g at o_partial[(slot0 + g * head_stride) * D ...] and
// lse_partial[slot0 + g * head_stride]. Called by every thread of the CTA; ends with a barrier so the
// CTA may call it again (Lean Attention walks several segments).
template <KvFormat F, int D>
__device__ void attend_range(const DecodeParams& p, int row_bytes, int b, int kvh, int start, int end, size_t slot0,
                             size_t head_stride) {
  const int G = p.Hq / p.Hkv;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __shared__ float sQ[kMaxGroup][D];
  __shared__ float sP[kMaxGroup][kKeys];
  __shared__ float sM[kMaxGroup], sL[kMaxGroup], sAlpha[kMaxGroup];

  const float scale_log2 = p.scale * kLog2e;
  for (int i = threadIdx.x; i < G * D; i += kThreads) {
    sQ[i / D][i % D] = __half2float(p.q[(size_t(b) * p.Hq + size_t(kvh) * G + i / D) * D + i % D]);
  }
  if (threadIdx.x < G) {
    sM[threadIdx.x] = -INFINITY;
    sL[threadIdx.x] = 0.0f;
  }
  // Each thread owns outputs (g, c) = idx / D, idx % D for idx = threadIdx.x + j * kThreads.
  constexpr int kOwned = (kMaxGroup * D + kThreads - 1) / kThreads;
  float acc[kOwned];
#pragma unroll
  for (int j = 0; j < kOwned; ++j) acc[j] = 0.0f;

  const KvReader<F> rd(p, row_bytes, b, kvh);
  __syncthreads();

  for (int kb = start; kb < end; kb += kKeys) {
    const int n = min(kKeys, end - kb);
    if constexpr (F == KvFormat::kF16 && (D == 64 || D == 128)) {
      // fp16 rows: a key is D / 8 lanes each loading 16 bytes (8 channels), so a warp reads 32 / (D / 8)
      // keys per step in full 16-byte vectors and reduces each over log2(D / 8) shuffles, not 5.
      constexpr int kLanes = D / 8, kPerWarp = 32 / kLanes;
      const int sub = lane / kLanes, part = lane % kLanes;
      for (int j0 = warp * kPerWarp; j0 < n; j0 += (kThreads / 32) * kPerWarp) {
        const int j = j0 + sub;
        float dots[kMaxGroup];
#pragma unroll
        for (int g = 0; g < kMaxGroup; ++g) dots[g] = 0.0f;
        if (j < n) {
          const uint4 raw = *reinterpret_cast<const uint4*>(rd.kbase + size_t(kb + j) * rd.row_bytes + part * 16);
          half hv[8];
          memcpy(hv, &raw, sizeof(raw));
#pragma unroll
          for (int e = 0; e < 8; ++e) {
            const float kv = __half2float(hv[e]);
#pragma unroll
            for (int g = 0; g < kMaxGroup; ++g)
              if (g < G) dots[g] += sQ[g][part * 8 + e] * kv;
          }
        }
#pragma unroll
        for (int g = 0; g < kMaxGroup; ++g) {
          if (g >= G) break;
          float s = dots[g];
          for (int o = kLanes / 2; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
          if (part == 0 && j < n) sP[g][j] = s * scale_log2;
        }
      }
    } else {
      // Scores: a warp per key, lanes across D (coalesced), all G heads from one read of the key.
      for (int j = warp; j < n; j += kThreads / 32) {
        float dots[kMaxGroup];
#pragma unroll
        for (int g = 0; g < kMaxGroup; ++g) dots[g] = 0.0f;
        for (int c = lane; c < D; c += 32) {
          const float kv = rd.key(kb + j, c);
#pragma unroll
          for (int g = 0; g < kMaxGroup; ++g)
            if (g < G) dots[g] += sQ[g][c] * kv;
        }
#pragma unroll
        for (int g = 0; g < kMaxGroup; ++g) {
          if (g >= G) break;
          const float s = warp_sum(dots[g]);
          if (lane == 0) sP[g][j] = s * scale_log2;
        }
      }
    }
    __syncthreads();
    // Softmax bookkeeping: one warp per head.
    for (int g = warp; g < G; g += kThreads / 32) {
      float mx = -INFINITY;
      for (int j = lane; j < n; j += 32) mx = fmaxf(mx, sP[g][j]);
      mx = warp_max(mx);
      const float m_new = fmaxf(sM[g], mx);
      float sum = 0.0f;
      for (int j = lane; j < n; j += 32) {
        const float e = exp2f(sP[g][j] - m_new);
        sP[g][j] = e;
        sum += e;
      }
      sum = warp_sum(sum);
      if (lane == 0) {
        const float alpha = exp2f(sM[g] - m_new);
        sAlpha[g] = alpha;
        sL[g] = sL[g] * alpha + sum;
        sM[g] = m_new;
      }
    }
    __syncthreads();
    // O += P V: consecutive threads read consecutive channels of each value row.
#pragma unroll
    for (int o = 0; o < kOwned; ++o) {
      const int idx = threadIdx.x + o * kThreads;
      if (idx >= G * D) break;
      const int g = idx / D, c = idx % D;
      float a = acc[o] * sAlpha[g];
      for (int j = 0; j < n; ++j) a += sP[g][j] * rd.value(kb + j, c);
      acc[o] = a;
    }
    __syncthreads();
  }
#pragma unroll
  for (int o = 0; o < kOwned; ++o) {
    const int idx = threadIdx.x + o * kThreads;
    if (idx >= G * D) break;
    const int g = idx / D, c = idx % D;
    p.o_partial[(slot0 + size_t(g) * head_stride) * D + c] = acc[o] / sL[g];
  }
  if (threadIdx.x < G)
    p.lse_partial[slot0 + size_t(threadIdx.x) * head_stride] = sM[threadIdx.x] * kLn2 + logf(sL[threadIdx.x]);
  __syncthreads();  // sQ/sM/sL are rewritten by the next call
}

// KIVI -> fp16 [Hkv, n, D] keys and values of batch row 0 (prefill attention reads fp16).
__global__ void kivi_to_f16_kernel(DecodeParams p, int n, half* k_out, half* v_out) {
  const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= int64_t(p.Hkv) * n * p.D) return;
  const int c = int(idx % p.D), j = int((idx / p.D) % n), kvh = int(idx / (int64_t(p.D) * n));
  const KvReader<KvFormat::kKivi> rd(p, 0, 0, kvh);
  k_out[idx] = __float2half_rn(rd.key(j, c));
  v_out[idx] = __float2half_rn(rd.value(j, c));
}

// Flash-Decoding: CTA (split, kv head, batch) takes the split's contiguous key range.
template <KvFormat F, int D>
__global__ void __launch_bounds__(kThreads) decode_split_kernel(DecodeParams p, int row_bytes) {
  const int split = blockIdx.x, kvh = blockIdx.y, b = blockIdx.z;
  const int G = p.Hq / p.Hkv;
  const int len = p.seqlens[b];
  const int chunk = (len + p.n_splits - 1) / p.n_splits;
  const int start = split * chunk, end = min(len, start + chunk);
  const size_t part = (size_t(b) * p.Hq + size_t(kvh) * G) * p.n_splits + split;  // head g adds g * n_splits
  if (start >= end) {  // empty split: weight 0 in the combine
    for (int i = threadIdx.x; i < G * D; i += kThreads)
      p.o_partial[(part + size_t(i / D) * p.n_splits) * D + i % D] = 0.0f;
    if (threadIdx.x < G) p.lse_partial[part + size_t(threadIdx.x) * p.n_splits] = -INFINITY;
    return;
  }
  attend_range<F, D>(p, row_bytes, b, kvh, start, end, part, p.n_splits);
}

// Lean Attention (SPEC 6.4): the (KV group, 64-key tile) iteration space, tiles of group gi at
// [tile_prefix[gi], tile_prefix[gi + 1]), is cut into n_ctas equal contiguous ranges, so every CTA does
// the same work however ragged the batch. A range may end mid-group and span several groups; each
// (CTA c, group gi) piece is a segment with its own partial in slot c + gi (unique: along the ordered
// segments c and gi only grow, one of them at each step). The combine merges each group's slots.
__device__ __forceinline__ int lean_range_start(int c, int n_ctas, int total) {
  return int(int64_t(c) * total / n_ctas);
}

template <KvFormat F, int D>
__global__ void __launch_bounds__(kThreads) decode_lean_kernel(DecodeParams p, int row_bytes, const int* tile_prefix,
                                                               int n_groups, int total_tiles, int n_ctas) {
  const int c = blockIdx.x, G = p.Hq / p.Hkv;
  const int t0 = lean_range_start(c, n_ctas, total_tiles), t1 = lean_range_start(c + 1, n_ctas, total_tiles);
  if (t0 >= t1) return;
  int gi = 0;  // the group holding tile t0: binary search over the prefix
  for (int lo = 0, hi = n_groups - 1; lo <= hi;) {
    const int mid = (lo + hi) / 2;
    if (tile_prefix[mid] <= t0)
      gi = mid, lo = mid + 1;
    else
      hi = mid - 1;
  }
  for (int t = t0; t < t1; ++gi) {
    const int g_begin = tile_prefix[gi], g_end = tile_prefix[gi + 1];
    if (g_end <= t) continue;  // empty group (no keys)
    const int seg_end = min(t1, g_end);
    const int b = gi / p.Hkv, kvh = gi % p.Hkv;
    const int start = (t - g_begin) * kKeys, end = min(p.seqlens[b], (seg_end - g_begin) * kKeys);
    attend_range<F, D>(p, row_bytes, b, kvh, start, end, size_t(c + gi) * G, 1);
    t = seg_end;
  }
}

// (O, LSE) merge of `count` partials at base, base + stride, ...: associative, empty ones have LSE = -inf
// and weight 0. Writes head h of batch b.
__device__ void combine_head(const DecodeParams& p, int b, int h, size_t base, size_t stride, int count) {
  float L = -INFINITY;
  for (int s = 0; s < count; ++s) L = fmaxf(L, p.lse_partial[base + s * stride]);
  float wsum = 0.0f;
  for (int s = 0; s < count; ++s) wsum += L == -INFINITY ? 0.0f : expf(p.lse_partial[base + s * stride] - L);
  for (int c = threadIdx.x; c < p.D; c += blockDim.x) {
    float o = 0.0f;
    for (int s = 0; s < count; ++s) {
      const float w = L == -INFINITY ? 0.0f : expf(p.lse_partial[base + s * stride] - L);
      o += w * p.o_partial[(base + s * stride) * p.D + c];
    }
    p.out[(size_t(b) * p.Hq + h) * p.D + c] = wsum > 0.0f ? o / wsum : 0.0f;
  }
  if (threadIdx.x == 0) p.lse[size_t(b) * p.Hq + h] = wsum > 0.0f ? L + logf(wsum) : -INFINITY;
}

__global__ void combine_kernel(DecodeParams p) {
  const int h = blockIdx.x, b = blockIdx.y;
  combine_head(p, b, h, (size_t(b) * p.Hq + h) * p.n_splits, 1, p.n_splits);
}

// Lean: group gi's segments are slots c + gi for the CTAs c whose ranges meet the group's tiles.
__device__ int lean_cta_of(int t, int n_ctas, int total) {
  int c = int(int64_t(t) * n_ctas / total);
  while (c + 1 < n_ctas && lean_range_start(c + 1, n_ctas, total) <= t) ++c;
  while (c > 0 && lean_range_start(c, n_ctas, total) > t) --c;
  return c;
}

__global__ void lean_combine_kernel(DecodeParams p, const int* tile_prefix, int total_tiles, int n_ctas) {
  const int h = blockIdx.x, b = blockIdx.y, G = p.Hq / p.Hkv;
  const int gi = b * p.Hkv + h / G;
  const int g_begin = tile_prefix[gi], g_end = tile_prefix[gi + 1];
  if (g_begin == g_end) {  // no keys: output 0, LSE -inf (as the split path's all-empty splits)
    combine_head(p, b, h, 0, 0, 0);
    return;
  }
  const int c_first = lean_cta_of(g_begin, n_ctas, total_tiles), c_last = lean_cta_of(g_end - 1, n_ctas, total_tiles);
  combine_head(p, b, h, size_t(c_first + gi) * G + h % G, G, c_last - c_first + 1);
}

template <KvFormat F>
cudaError_t launch_format(const DecodeParams& p, cudaStream_t stream) {
  dim3 grid(p.n_splits, p.Hkv, p.B);
  const int rb = kv_row_bytes(F, p.D);
  switch (p.D) {
    case 64: PYRT_LAUNCH(grid, kThreads, 0, stream, decode_split_kernel<F, 64>)(p, rb); break;
    case 80: PYRT_LAUNCH(grid, kThreads, 0, stream, decode_split_kernel<F, 80>)(p, rb); break;
    case 96: PYRT_LAUNCH(grid, kThreads, 0, stream, decode_split_kernel<F, 96>)(p, rb); break;
    case 128: PYRT_LAUNCH(grid, kThreads, 0, stream, decode_split_kernel<F, 128>)(p, rb); break;
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace

int num_splits_heuristic(int batch_nheads_mblocks, int num_sms, int num_n_blocks, int max_splits) {
  if (batch_nheads_mblocks >= 0.8f * num_sms) return 1;
  max_splits = std::min({max_splits, num_sms, num_n_blocks});
  if (max_splits < 1) return 1;
  auto ceildiv = [](int a, int b) { return (a + b - 1) / b; };
  auto eligible = [&](int s) { return s == 1 || ceildiv(num_n_blocks, s) != ceildiv(num_n_blocks, s - 1); };
  float max_eff = 0.0f;
  float eff[129] = {0};
  for (int s = 1; s <= max_splits; ++s) {
    if (!eligible(s)) continue;
    const float waves = float(batch_nheads_mblocks) * s / num_sms;
    eff[s] = waves / std::ceil(waves);
    max_eff = std::max(max_eff, eff[s]);
  }
  for (int s = 1; s <= max_splits; ++s) {
    if (eligible(s) && eff[s] >= 0.85f * max_eff) return s;
  }
  return 1;
}

namespace {
template <KvFormat F>
int ctas_per_sm_format(int D) {
  int n = 1;
  switch (D) {
    case 64: cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, decode_split_kernel<F, 64>, kThreads, 0); break;
    case 80: cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, decode_split_kernel<F, 80>, kThreads, 0); break;
    case 96: cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, decode_split_kernel<F, 96>, kThreads, 0); break;
    case 128: cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, decode_split_kernel<F, 128>, kThreads, 0); break;
    default: break;
  }
  return n > 0 ? n : 1;
}
}  // namespace

int decode_auto_splits(KvFormat format, int B, int Hkv, int D, int max_len) {
  // Our split CTAs are small (128 threads, ~6 KB shared): many fit on an SM, so the heuristic's
  // "SM" is a resident CTA slot rather than a whole multiprocessor.
  return num_splits_heuristic(B * Hkv, lean_auto_ctas(format, D), (max_len + kKeys - 1) / kKeys, 128);
}

namespace {
template <KvFormat F, int D>
cudaError_t launch_lean(const DecodeParams& p, const int* tile_prefix, int total_tiles, int n_ctas,
                        cudaStream_t stream) {
  PYRT_LAUNCH(n_ctas, kThreads, 0, stream, decode_lean_kernel<F, D>)(p, kv_row_bytes(F, D), tile_prefix, p.B * p.Hkv,
                                                                     total_tiles, n_ctas);
  return cudaGetLastError();
}

template <KvFormat F>
cudaError_t launch_lean_format(const DecodeParams& p, const int* tile_prefix, int total_tiles, int n_ctas,
                               cudaStream_t stream) {
  switch (p.D) {
    case 64: return launch_lean<F, 64>(p, tile_prefix, total_tiles, n_ctas, stream);
    case 80: return launch_lean<F, 80>(p, tile_prefix, total_tiles, n_ctas, stream);
    case 96: return launch_lean<F, 96>(p, tile_prefix, total_tiles, n_ctas, stream);
    case 128: return launch_lean<F, 128>(p, tile_prefix, total_tiles, n_ctas, stream);
    default: return cudaErrorInvalidValue;
  }
}
}  // namespace

std::vector<int> lean_tile_prefix(const std::vector<int>& seqlens, int Hkv) {
  std::vector<int> prefix(seqlens.size() * size_t(Hkv) + 1, 0);
  size_t i = 0;
  for (int len : seqlens)
    for (int h = 0; h < Hkv; ++h, ++i) prefix[i + 1] = prefix[i] + (len + kKeys - 1) / kKeys;
  return prefix;
}

int lean_partial_slots(int n_ctas, int B, int Hkv) {
  return n_ctas + B * Hkv;
}

int lean_auto_ctas(KvFormat format, int D) {
  int dev = 0, sms = 1;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) {
    return 1;
  }
  const int per_sm = format == KvFormat::kF16    ? ctas_per_sm_format<KvFormat::kF16>(D)
                     : format == KvFormat::kQ8_0 ? ctas_per_sm_format<KvFormat::kQ8_0>(D)
                     : format == KvFormat::kQ4_0 ? ctas_per_sm_format<KvFormat::kQ4_0>(D)
                                                 : ctas_per_sm_format<KvFormat::kKivi>(D);
  return sms * per_sm;
}

cudaError_t decode_attn_lean(const DecodeParams& p, const int* tile_prefix, int total_tiles, int n_ctas,
                             cudaStream_t stream) {
  if (p.format == KvFormat::kKivi && (!p.kivi_k || !p.kivi_v)) return cudaErrorInvalidValue;
  if (p.B <= 0 || p.Hkv <= 0 || p.Hq % p.Hkv != 0 || p.Hq / p.Hkv > kMaxGroup || p.D % 32 != 0 || n_ctas < 1 ||
      total_tiles < 0) {
    return cudaErrorInvalidValue;
  }
  // At most one CTA per tile: then every CTA's range is non-empty, so the CTAs meeting a group are
  // consecutive and so are its slots (c + gi), which is what the combine reads.
  n_ctas = std::min(n_ctas, std::max(total_tiles, 1));
  cudaError_t err = cudaSuccess;
  if (total_tiles > 0) {
    switch (p.format) {
      case KvFormat::kF16: err = launch_lean_format<KvFormat::kF16>(p, tile_prefix, total_tiles, n_ctas, stream); break;
      case KvFormat::kQ8_0:
        err = launch_lean_format<KvFormat::kQ8_0>(p, tile_prefix, total_tiles, n_ctas, stream);
        break;
      case KvFormat::kQ4_0:
        err = launch_lean_format<KvFormat::kQ4_0>(p, tile_prefix, total_tiles, n_ctas, stream);
        break;
      case KvFormat::kKivi:
        err = launch_lean_format<KvFormat::kKivi>(p, tile_prefix, total_tiles, n_ctas, stream);
        break;
      default: return cudaErrorInvalidValue;
    }
  }
  if (err != cudaSuccess) return err;
  PYRT_LAUNCH(dim3(p.Hq, p.B), 128, 0, stream, lean_combine_kernel)(p, tile_prefix, std::max(total_tiles, 1), n_ctas);
  return cudaGetLastError();
}

cudaError_t kivi_to_f16(const DecodeParams& p, int n, half* k_out, half* v_out, cudaStream_t stream) {
  if (p.format != KvFormat::kKivi || !p.kivi_k || !p.kivi_v || p.Hkv <= 0 || p.D <= 0 || n < 0)
    return cudaErrorInvalidValue;
  const int64_t total = int64_t(p.Hkv) * n * p.D;
  if (total == 0) return cudaSuccess;
  PYRT_LAUNCH(blocks_for(total, 256), 256, 0, stream, kivi_to_f16_kernel)(p, n, k_out, v_out);
  return cudaGetLastError();
}

cudaError_t decode_attn(const DecodeParams& p, cudaStream_t stream) {
  if (p.format == KvFormat::kKivi && (!p.kivi_k || !p.kivi_v)) return cudaErrorInvalidValue;
  if (p.B <= 0 || p.Hkv <= 0 || p.Hq % p.Hkv != 0 || p.Hq / p.Hkv > kMaxGroup || p.n_splits < 1 || p.D % 32 != 0) {
    return cudaErrorInvalidValue;
  }
  cudaError_t err;
  switch (p.format) {
    case KvFormat::kF16: err = launch_format<KvFormat::kF16>(p, stream); break;
    case KvFormat::kQ8_0: err = launch_format<KvFormat::kQ8_0>(p, stream); break;
    case KvFormat::kQ4_0: err = launch_format<KvFormat::kQ4_0>(p, stream); break;
    case KvFormat::kKivi: err = launch_format<KvFormat::kKivi>(p, stream); break;
    default: return cudaErrorInvalidValue;
  }
  if (err != cudaSuccess) return err;
  PYRT_LAUNCH(dim3(p.Hq, p.B), 128, 0, stream, combine_kernel)(p);
  return cudaGetLastError();
}

}  // namespace pyrt::cuda
