// AVX2 + FMA + F16C kernels. Built with -mavx2 -mfma -mf16c for this file only and selected at
// run time by kernels.cpp, so the rest of the binary stays baseline x86-64.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "backends/cpu/kernels.h"

namespace pyrt::cpu {
namespace {

// One fp16 -> fp32 with F16C (the shared table lookup is an out-of-line call in the inner loops).
inline float h2f(uint16_t h) {
  return _cvtsh_ss(h);
}

inline float hsum(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
  return _mm_cvtss_f32(lo);
}

inline __m256 load_u8x8_ps(__m128i bytes8) {
  return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes8));
}

float a_dot_f32(const float* a, const float* b, int64_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
    s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
  }
  for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
  float s = hsum(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

float a_dot_q8_0(const void* row, const float* x, int64_t n) {
  const auto* b = static_cast<const BlockQ8_0*>(row);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / kQK8_0; ++i, x += kQK8_0) {
    __m256 bs = _mm256_setzero_ps();
    for (int j = 0; j < 4; ++j) {
      __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(b[i].qs + 8 * j));
      __m256 qf = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
      bs = _mm256_fmadd_ps(qf, _mm256_loadu_ps(x + 8 * j), bs);
    }
    acc = _mm256_fmadd_ps(_mm256_set1_ps(h2f(b[i].d)), bs, acc);
  }
  return hsum(acc);
}

// Unpack 16 bytes of nibbles into four float vectors: elements 0-7, 8-15 (low nibbles), 16-23, 24-31 (high).
inline void unpack_nibbles(const uint8_t* qs, __m256 out[4]) {
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m128i mask = _mm_set1_epi8(0x0F);
  const __m128i lo = _mm_and_si128(raw, mask), hi = _mm_and_si128(_mm_srli_epi16(raw, 4), mask);
  out[0] = load_u8x8_ps(lo);
  out[1] = load_u8x8_ps(_mm_srli_si128(lo, 8));
  out[2] = load_u8x8_ps(hi);
  out[3] = load_u8x8_ps(_mm_srli_si128(hi, 8));
}

float a_dot_q4_0(const void* row, const float* x, int64_t n) {
  const auto* b = static_cast<const BlockQ4_0*>(row);
  const __m256 eight = _mm256_set1_ps(8.0f);
  __m256 acc = _mm256_setzero_ps();
  __m256 q[4];
  for (int64_t i = 0; i < n / kQK4_0; ++i, x += kQK4_0) {
    unpack_nibbles(b[i].qs, q);
    __m256 bs = _mm256_setzero_ps();
    for (int j = 0; j < 4; ++j) bs = _mm256_fmadd_ps(_mm256_sub_ps(q[j], eight), _mm256_loadu_ps(x + 8 * j), bs);
    acc = _mm256_fmadd_ps(_mm256_set1_ps(h2f(b[i].d)), bs, acc);
  }
  return hsum(acc);
}

float a_dot_q4_1(const void* row, const float* x, int64_t n) {
  const auto* b = static_cast<const BlockQ4_1*>(row);
  __m256 acc = _mm256_setzero_ps();
  __m256 q[4];
  for (int64_t i = 0; i < n / kQK4_1; ++i, x += kQK4_1) {
    unpack_nibbles(b[i].qs, q);
    __m256 qx = _mm256_setzero_ps(), sx = _mm256_setzero_ps();
    for (int j = 0; j < 4; ++j) {
      const __m256 xv = _mm256_loadu_ps(x + 8 * j);
      qx = _mm256_fmadd_ps(q[j], xv, qx);
      sx = _mm256_add_ps(sx, xv);
    }
    acc = _mm256_fmadd_ps(_mm256_set1_ps(h2f(b[i].d)), qx, acc);
    acc = _mm256_fmadd_ps(_mm256_set1_ps(h2f(b[i].m)), sx, acc);
  }
  return hsum(acc);
}

float a_dot_f16(const void* row, const float* x, int64_t n) {
  // Four accumulators: with one, the loop is a chain of dependent FMAs and decode of F16 models is
  // latency-bound instead of bandwidth-bound.
  const auto* h = static_cast<const uint16_t*>(row);
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  auto ld = [&](int64_t i) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + i))); };
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    a0 = _mm256_fmadd_ps(ld(i), _mm256_loadu_ps(x + i), a0);
    a1 = _mm256_fmadd_ps(ld(i + 8), _mm256_loadu_ps(x + i + 8), a1);
    a2 = _mm256_fmadd_ps(ld(i + 16), _mm256_loadu_ps(x + i + 16), a2);
    a3 = _mm256_fmadd_ps(ld(i + 24), _mm256_loadu_ps(x + i + 24), a3);
  }
  for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(ld(i), _mm256_loadu_ps(x + i), a0);
  float s = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  for (; i < n; ++i) s += h2f(h[i]) * x[i];
  return s;
}

float a_dot_bf16(const void* row, const float* x, int64_t n) {
  const auto* h = static_cast<const uint16_t*>(row);
  __m256 acc = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256i w = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + i))), 16);
    acc = _mm256_fmadd_ps(_mm256_castsi256_ps(w), _mm256_loadu_ps(x + i), acc);
  }
  float s = hsum(acc);
  for (; i < n; ++i) s += bf16_to_fp32(h[i]) * x[i];
  return s;
}

void a_axpy_f32(float a, const float* x, float* y, int64_t n) {
  const __m256 av = _mm256_set1_ps(a);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  for (; i < n; ++i) y[i] += a * x[i];
}

void a_axpy_f16(float a, const uint16_t* x, float* y, int64_t n) {
  const __m256 av = _mm256_set1_ps(a);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 xv = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + i)));
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, xv, _mm256_loadu_ps(y + i)));
  }
  for (; i < n; ++i) y[i] += a * h2f(x[i]);
}

void a_axpy_q8_0(float a, const void* row, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ8_0*>(row);
  for (int64_t i = 0; i < n / kQK8_0; ++i, y += kQK8_0) {
    const __m256 ad = _mm256_set1_ps(a * h2f(b[i].d));
    for (int j = 0; j < 4; ++j) {
      __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(b[i].qs + 8 * j));
      __m256 qf = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
      _mm256_storeu_ps(y + 8 * j, _mm256_fmadd_ps(ad, qf, _mm256_loadu_ps(y + 8 * j)));
    }
  }
}

void a_axpy_q4_0(float a, const void* row, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ4_0*>(row);
  const __m256 eight = _mm256_set1_ps(8.0f);
  __m256 q[4];
  for (int64_t i = 0; i < n / kQK4_0; ++i, y += kQK4_0) {
    const __m256 ad = _mm256_set1_ps(a * h2f(b[i].d));
    unpack_nibbles(b[i].qs, q);
    for (int j = 0; j < 4; ++j) {
      _mm256_storeu_ps(y + 8 * j, _mm256_fmadd_ps(ad, _mm256_sub_ps(q[j], eight), _mm256_loadu_ps(y + 8 * j)));
    }
  }
}

// 16 of a group's 32 packed codes (LSB first; half 0 = codes 0-15, half 1 = 16-31) -> two vectors of
// 8 floats, with integer unpacking (a byte-table gather per value was the bottleneck of KIVI attention).
inline void unpack16_ps(const uint8_t* codes, int bits, int half, __m256 out[2]) {
  if (bits == 4) {
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes));
    const __m128i mask = _mm_set1_epi8(0x0F);
    const __m128i lo = _mm_and_si128(raw, mask), hi = _mm_and_si128(_mm_srli_epi16(raw, 4), mask);
    const __m128i codes16 = half == 0 ? _mm_unpacklo_epi8(lo, hi) : _mm_unpackhi_epi8(lo, hi);
    out[0] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(codes16));
    out[1] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(codes16, 8)));
    return;
  }
  // 2 bits: byte b holds codes 4b..4b+3. Replicate each byte into 4 lanes, shift lane j by 2j, mask.
  const __m128i raw = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes));
  const __m256i shifts = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6), three = _mm256_set1_epi32(3);
  for (int v = 0; v < 2; ++v) {
    const char b0 = static_cast<char>(4 * half + 2 * v), b1 = static_cast<char>(4 * half + 2 * v + 1);
    const __m128i rep =
        _mm_shuffle_epi8(raw, _mm_setr_epi8(b0, b0, b0, b0, b1, b1, b1, b1, -1, -1, -1, -1, -1, -1, -1, -1));
    out[v] = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srlv_epi32(_mm256_cvtepu8_epi32(rep), shifts), three));
  }
}

// Keys, one group, M queries, one half of the group's 32 tokens: 2M sums, 2 code vectors and a
// broadcast stay in registers (M, BITS and HALF are template constants so nothing spills), each
// channel's codes unpacked once for all M queries.
template <int M, int BITS, int HALF>
void kivi_key_half(const uint8_t* gc, const float* qs, int64_t d, const float* beta, float* sc, int64_t sc_stride) {
  constexpr int64_t cb = 4 * BITS;
  __m256 acc[M][2];
  for (int i = 0; i < M; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
  for (int64_t ch = 0; ch < d; ++ch) {
    __m256 c[2];
    unpack16_ps(gc + ch * cb, BITS, HALF, c);
    for (int i = 0; i < M; ++i) {
      const __m256 qv = _mm256_set1_ps(qs[i * d + ch]);
      acc[i][0] = _mm256_fmadd_ps(qv, c[0], acc[i][0]);
      acc[i][1] = _mm256_fmadd_ps(qv, c[1], acc[i][1]);
    }
  }
  for (int i = 0; i < M; ++i) {
    const __m256 bv = _mm256_set1_ps(beta[i]);
    _mm256_storeu_ps(sc + i * sc_stride + 16 * HALF, _mm256_add_ps(acc[i][0], bv));
    _mm256_storeu_ps(sc + i * sc_stride + 16 * HALF + 8, _mm256_add_ps(acc[i][1], bv));
  }
}

// Keys for M queries over all groups: per group the queries' q * s (to the stack) and q . mn (8 lanes,
// then hsum), then the two token halves.
template <int M, int BITS>
void kivi_keys_m(const uint16_t* scale, const uint16_t* mn, const uint8_t* codes, int64_t group_stride,
                 int64_t n_groups, int64_t d, const float* q, int64_t q_stride, float* sc, int64_t sc_stride,
                 float* qs) {
  for (int64_t g = 0; g < n_groups; ++g) {
    const int64_t e0 = g * group_stride;
    float beta[M];
    for (int i = 0; i < M; ++i) {
      const float* qi = q + i * q_stride;
      __m256 b = _mm256_setzero_ps();
      int64_t c = 0;
      for (; c + 8 <= d; c += 8) {
        const __m256 qv = _mm256_loadu_ps(qi + c);
        const __m256 sv = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(scale + e0 + c)));
        const __m256 mv = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(mn + e0 + c)));
        _mm256_storeu_ps(qs + i * d + c, _mm256_mul_ps(qv, sv));
        b = _mm256_fmadd_ps(qv, mv, b);
      }
      float bt = hsum(b);
      for (; c < d; ++c) {
        qs[i * d + c] = qi[c] * h2f(scale[e0 + c]);
        bt = std::fma(qi[c], h2f(mn[e0 + c]), bt);
      }
      beta[i] = bt;
    }
    const uint8_t* gc = codes + e0 * 4 * BITS;
    kivi_key_half<M, BITS, 0>(gc, qs, d, beta, sc + 32 * g, sc_stride);
    kivi_key_half<M, BITS, 1>(gc, qs, d, beta, sc + 32 * g, sc_stride);
  }
}

template <int BITS>
void kivi_keys_bits(const uint16_t* scale, const uint16_t* mn, const uint8_t* codes, int64_t group_stride,
                    int64_t n_groups, int64_t d, const float* q, int64_t q_stride, int nq, float* sc,
                    int64_t sc_stride) {
  thread_local std::vector<float> qs;
  qs.resize(static_cast<size_t>(4 * d));
  for (int i0 = 0; i0 < nq; i0 += 4) {
    const float* qi = q + i0 * q_stride;
    float* si = sc + i0 * sc_stride;
    switch (std::min(4, nq - i0)) {
      case 4:
        kivi_keys_m<4, BITS>(scale, mn, codes, group_stride, n_groups, d, qi, q_stride, si, sc_stride, qs.data());
        break;
      case 3:
        kivi_keys_m<3, BITS>(scale, mn, codes, group_stride, n_groups, d, qi, q_stride, si, sc_stride, qs.data());
        break;
      case 2:
        kivi_keys_m<2, BITS>(scale, mn, codes, group_stride, n_groups, d, qi, q_stride, si, sc_stride, qs.data());
        break;
      default:
        kivi_keys_m<1, BITS>(scale, mn, codes, group_stride, n_groups, d, qi, q_stride, si, sc_stride, qs.data());
    }
  }
}

void a_kivi_keys(const uint16_t* scale, const uint16_t* mn, const uint8_t* codes, int64_t group_stride,
                 int64_t n_groups, int64_t d, int bits, const float* q, int64_t q_stride, int nq, float* sc,
                 int64_t sc_stride) {
  (bits == 4 ? kivi_keys_bits<4> : kivi_keys_bits<2>)(scale, mn, codes, group_stride, n_groups, d, q, q_stride, nq, sc,
                                                      sc_stride);
}

// Values, M queries x one half (16 channels) of a 32-channel group: 2M sums stay in registers across all
// n tokens, each token's codes unpacked once for the M queries. The minimum term (a scalar chain per
// query) is summed in the first half's pass and added to both halves.
template <int M, int BITS, int HALF>
void kivi_values_half(const uint16_t* scale, const uint16_t* mn, const uint8_t* codes, int64_t token_stride, int64_t n,
                      const float* p, int64_t p_stride, float* out, int64_t out_stride, float* msum) {
  constexpr int64_t cb = 4 * BITS;
  __m256 acc[M][2];
  float m[M];
  for (int i = 0; i < M; ++i) {
    m[i] = 0.0f;
    for (int v = 0; v < 2; ++v) acc[i][v] = _mm256_loadu_ps(out + i * out_stride + 16 * HALF + 8 * v);
  }
  for (int64_t t = 0; t < n; ++t) {
    const int64_t e = t * token_stride;
    const float s = h2f(scale[e]);
    __m256 c[2];
    unpack16_ps(codes + e * cb, BITS, HALF, c);
    if (HALF == 0) {
      const float mv = h2f(mn[e]);
      for (int i = 0; i < M; ++i) m[i] = std::fma(p[i * p_stride + t], mv, m[i]);
    }
    for (int i = 0; i < M; ++i) {
      const __m256 ps = _mm256_set1_ps(p[i * p_stride + t] * s);
      acc[i][0] = _mm256_fmadd_ps(ps, c[0], acc[i][0]);
      acc[i][1] = _mm256_fmadd_ps(ps, c[1], acc[i][1]);
    }
  }
  for (int i = 0; i < M; ++i) {
    if (HALF == 0) msum[i] = m[i];
    const __m256 mv = _mm256_set1_ps(msum[i]);
    for (int v = 0; v < 2; ++v)
      _mm256_storeu_ps(out + i * out_stride + 16 * HALF + 8 * v, _mm256_add_ps(acc[i][v], mv));
  }
}

template <int M, int BITS>
void kivi_values_m(const uint16_t* scale, const uint16_t* mn, const uint8_t* codes, int64_t token_stride, int64_t n,
                   const float* p, int64_t p_stride, float* out, int64_t out_stride) {
  float msum[M];
  kivi_values_half<M, BITS, 0>(scale, mn, codes, token_stride, n, p, p_stride, out, out_stride, msum);
  kivi_values_half<M, BITS, 1>(scale, mn, codes, token_stride, n, p, p_stride, out, out_stride, msum);
}

template <int BITS>
void kivi_values_bits(const uint16_t* scale, const uint16_t* mn, const uint8_t* codes, int64_t token_stride, int64_t n,
                      int64_t d, const float* p, int64_t p_stride, int nq, float* out, int64_t out_stride) {
  constexpr int64_t cb = 4 * BITS;
  for (int64_t j = 0; j < d / 32; ++j) {
    for (int i0 = 0; i0 < nq; i0 += 4) {
      const float* pi = p + i0 * p_stride;
      float* oi = out + i0 * out_stride + 32 * j;
      const uint8_t* cj = codes + j * cb;
      switch (std::min(4, nq - i0)) {
        case 4: kivi_values_m<4, BITS>(scale + j, mn + j, cj, token_stride, n, pi, p_stride, oi, out_stride); break;
        case 3: kivi_values_m<3, BITS>(scale + j, mn + j, cj, token_stride, n, pi, p_stride, oi, out_stride); break;
        case 2: kivi_values_m<2, BITS>(scale + j, mn + j, cj, token_stride, n, pi, p_stride, oi, out_stride); break;
        default: kivi_values_m<1, BITS>(scale + j, mn + j, cj, token_stride, n, pi, p_stride, oi, out_stride);
      }
    }
  }
}

void a_kivi_values(const uint16_t* scale, const uint16_t* mn, const uint8_t* codes, int64_t token_stride, int64_t n,
                   int64_t d, int bits, const float* p, int64_t p_stride, int nq, float* out, int64_t out_stride) {
  (bits == 4 ? kivi_values_bits<4> : kivi_values_bits<2>)(scale, mn, codes, token_stride, n, d, p, p_stride, nq, out,
                                                          out_stride);
}

void a_quantize_q8a(const float* x, int64_t n, BlockQ8A* out) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (int64_t b = 0; b < n / 32; ++b, x += 32) {
    __m256 v[4];
    __m256 amax = _mm256_setzero_ps();
    for (int j = 0; j < 4; ++j) {
      v[j] = _mm256_loadu_ps(x + 8 * j);
      amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, v[j]));
    }
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    const float d = _mm_cvtss_f32(m) / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    const __m256 idv = _mm256_set1_ps(id);
    __m256i q[4];
    for (int j = 0; j < 4; ++j) {
      q[j] =
          _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v[j], idv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
    const __m256i sum32 = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
    __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sum32), _mm256_extracti128_si256(sum32, 1));
    s4 = _mm_hadd_epi32(s4, s4);
    s4 = _mm_hadd_epi32(s4, s4);
    // int32 -> int8 with packs (which interleave 128-bit lanes), then restore the element order.
    const __m256i p16a = _mm256_packs_epi32(q[0], q[1]), p16b = _mm256_packs_epi32(q[2], q[3]);
    const __m256i p8 = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(p16a, p16b), order);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out[b].qs), p8);
    out[b].d = d;
    out[b].s = d * static_cast<float>(_mm_cvtsi128_si32(s4));
  }
}

// ---- Weight rows (Q8_0 / Q4_0 / Q4_1) times 8-bit activation blocks ----
// Every output follows the per-block definition in kernels.h (exact integer dot, then one or two
// FMAs per block in block order), so all paths below agree with each other and with the generic
// table bit for bit, whatever the token count or tiling.

template <GgmlType kType>
struct QuantBlock;
template <>
struct QuantBlock<GgmlType::Q8_0> {
  using type = BlockQ8_0;
};
template <>
struct QuantBlock<GgmlType::Q4_0> {
  using type = BlockQ4_0;
};
template <>
struct QuantBlock<GgmlType::Q4_1> {
  using type = BlockQ4_1;
};
template <GgmlType kType>
constexpr bool kIsQ4 = kType != GgmlType::Q8_0;

// The 32 codes of a block as bytes: Q8_0 signed; Q4 unsigned 0..15, low nibbles (elements 0-15) first.
template <GgmlType kType>
inline __m256i block_codes(const typename QuantBlock<kType>::type& w) {
  if constexpr (kIsQ4<kType>) {
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w.qs));
    return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), _mm256_set1_epi8(0x0F));
  } else {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.qs));
  }
}

// Scale and minimum of a block (the minimum is only used for Q4: -8 d for Q4_0).
template <GgmlType kType>
inline void block_scale(const typename QuantBlock<kType>::type& w, float& d, float& m) {
  d = h2f(w.d);
  if constexpr (kType == GgmlType::Q4_1)
    m = h2f(w.m);
  else
    m = -8.0f * d;
}

// Products of codes w with signed bytes x, pairwise summed to int16 by maddubs (which needs an unsigned
// first operand: Q4 codes are; Q8_0 moves w's sign onto x). No pair can saturate: |15*127*2| and
// |128*127*2| are below 2^15.
template <GgmlType kType>
inline __m256i maddubs_codes(__m256i w, __m256i x) {
  if constexpr (kIsQ4<kType>)
    return _mm256_maddubs_epi16(w, x);
  else
    return _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
}

// Eight int32 vectors -> one vector of their eight horizontal sums (lane i = sum of p[i]).
inline __m256i sum8_epi32(const __m256i p[8]) {
  const __m256i a = _mm256_hadd_epi32(_mm256_hadd_epi32(p[0], p[1]), _mm256_hadd_epi32(p[2], p[3]));
  const __m256i b = _mm256_hadd_epi32(_mm256_hadd_epi32(p[4], p[5]), _mm256_hadd_epi32(p[6], p[7]));
  return _mm256_add_epi32(_mm256_permute2x128_si256(a, b, 0x20), _mm256_permute2x128_si256(a, b, 0x31));
}

// One block's contribution to 8 outputs: acc = fma(d_w * d_x, dot, acc) [+ fma(m_w, s_x, acc) for Q4].
template <GgmlType kType>
inline __m256 block_fma(__m256 acc, __m256i dot, __m256 dw, __m256 mw, const BlockQ8A& x) {
  acc = _mm256_fmadd_ps(_mm256_mul_ps(dw, _mm256_set1_ps(x.d)), _mm256_cvtepi32_ps(dot), acc);
  if constexpr (kIsQ4<kType>) acc = _mm256_fmadd_ps(mw, _mm256_set1_ps(x.s), acc);
  return acc;
}

template <GgmlType kType>
float dot_q_q8a(const void* row, const BlockQ8A* x, int64_t n) {
  const auto* w = static_cast<const typename QuantBlock<kType>::type*>(row);
  float acc = 0;
  for (int64_t b = 0; b < n / 32; ++b) {
    const __m256i xq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[b].qs));
    const __m256i p = _mm256_madd_epi16(maddubs_codes<kType>(block_codes<kType>(w[b]), xq), _mm256_set1_epi16(1));
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1));
    s = _mm_hadd_epi32(s, s);
    s = _mm_hadd_epi32(s, s);
    float d, m;
    block_scale<kType>(w[b], d, m);
    acc = std::fma(d * x[b].d, static_cast<float>(_mm_cvtsi128_si32(s)), acc);
    if constexpr (kIsQ4<kType>) acc = std::fma(m, x[b].s, acc);
  }
  return acc;
}

float a_dot_q8_0_q8a(const void* row, const BlockQ8A* x, int64_t n) {
  return dot_q_q8a<GgmlType::Q8_0>(row, x, n);
}
float a_dot_q4_0_q8a(const void* row, const BlockQ8A* x, int64_t n) {
  return dot_q_q8a<GgmlType::Q4_0>(row, x, n);
}
float a_dot_q4_1_q8a(const void* row, const BlockQ8A* x, int64_t n) {
  return dot_q_q8a<GgmlType::Q4_1>(row, x, n);
}

// Block b's fp16 scale (and Q4_1 minimum) of 8 rows as floats: each block starts with d (then m), so
// one 32-bit load per row and a few shuffles gather them (cheaper than 8-16 scalar inserts).
template <GgmlType kType>
inline void gather_scales(const typename QuantBlock<kType>::type* const w[8], int64_t b, __m256& d, __m256& m) {
  __m128i h[8];
  for (int i = 0; i < 8; ++i) {
    int32_t v;
    std::memcpy(&v, &w[i][b], 4);
    h[i] = _mm_cvtsi32_si128(v);
  }
  const __m128i lo = _mm_unpacklo_epi64(_mm_unpacklo_epi32(h[0], h[1]), _mm_unpacklo_epi32(h[2], h[3]));
  const __m128i hi = _mm_unpacklo_epi64(_mm_unpacklo_epi32(h[4], h[5]), _mm_unpacklo_epi32(h[6], h[7]));
  // Per row the low 16 bits are d, the high 16 bits m (Q4_1) or code bytes (ignored).
  const __m128i pick = _mm_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15);
  const __m128i l = _mm_shuffle_epi8(lo, pick), r = _mm_shuffle_epi8(hi, pick);
  d = _mm256_cvtph_ps(_mm_unpacklo_epi64(l, r));
  if constexpr (kType == GgmlType::Q4_1)
    m = _mm256_cvtph_ps(_mm_unpackhi_epi64(l, r));
  else
    m = _mm256_mul_ps(d, _mm256_set1_ps(-8.0f));
}

// Few tokens (decode): 8 rows at a time straight from the mapped weights; each row's block dot is
// reduced across lanes together with the other seven (sum8_epi32), so the block scales apply to 8
// outputs in one FMA. Rows past n_rows repeat the last row and are not stored.
template <GgmlType kType>
void gemv_q8a(const uint8_t* rows, size_t row_stride, int64_t n_rows, const BlockQ8A* x, int64_t n_tok, int64_t K,
              float* y, int64_t ldy) {
  using Block = typename QuantBlock<kType>::type;
  const int64_t nb = K / 32;
  for (int64_t r0 = 0; r0 < n_rows; r0 += 8) {
    const Block* w[8];
    for (int i = 0; i < 8; ++i) w[i] = reinterpret_cast<const Block*>(rows + std::min(r0 + i, n_rows - 1) * row_stride);
    const uint8_t* next = rows + (r0 + 8) * row_stride;
    const int64_t panel_bytes = static_cast<int64_t>(std::min<int64_t>(8, n_rows - r0 - 8) * row_stride);
    for (int64_t t = 0; t < n_tok; ++t) {
      const BlockQ8A* xt = x + t * nb;
      __m256 acc = _mm256_setzero_ps();
      for (int64_t b = 0; b < nb; ++b) {
        const __m256i xq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xt[b].qs));
        __m256i p[8];
        // The 8 rows are read column-wise, which the hardware prefetchers do not follow from DRAM: fetch
        // the next panel's bytes in order, an even share per block.
        if (t == 0 && r0 + 8 < n_rows) {
          const int64_t lo = panel_bytes * b / nb, hi = panel_bytes * (b + 1) / nb;
          for (int64_t off = lo / 64 * 64; off < hi; off += 64)
            _mm_prefetch(reinterpret_cast<const char*>(next + off), _MM_HINT_T0);
        }
        for (int i = 0; i < 8; ++i)
          p[i] = _mm256_madd_epi16(maddubs_codes<kType>(block_codes<kType>(w[i][b]), xq), _mm256_set1_epi16(1));
        __m256 d, m;
        gather_scales<kType>(w, b, d, m);
        acc = block_fma<kType>(acc, sum8_epi32(p), d, m, xt[b]);
      }
      alignas(32) float out[8];
      _mm256_store_ps(out, acc);
      for (int64_t i = 0; i < std::min<int64_t>(8, n_rows - r0); ++i) y[t * ldy + r0 + i] = out[i];
    }
  }
}

// Many tokens (prefill): 16 rows are packed once per call into a panel where, per block, register
// (p, g) holds codes 4g..4g+3 of each of the 8 rows 8p..8p+7 (an 8x8 transpose of 32-bit words).
// maddubs against a token's 4 codes broadcast then yields 8 rows' partial sums side by side: no
// horizontal reductions, and one broadcast feeds two registers of rows.
constexpr int kPanelRows = 16, kPanelRegs = kPanelRows / 8;
struct alignas(32) Reg256 {
  uint8_t bytes[32];
};
struct Panel {
  std::vector<Reg256> codes;  // nb x kPanelRegs x 8 registers
  std::vector<float> d, m;    // nb x kPanelRows scales and minimums
};

inline void transpose8x8_epi32(__m256i u[8]) {
  __m256i t[8], s[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_epi32(u[2 * i], u[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_epi32(u[2 * i], u[2 * i + 1]);
  }
  for (int h = 0; h < 2; ++h) {  // rows 0-3, then 4-7
    s[4 * h + 0] = _mm256_unpacklo_epi64(t[4 * h], t[4 * h + 2]);
    s[4 * h + 1] = _mm256_unpackhi_epi64(t[4 * h], t[4 * h + 2]);
    s[4 * h + 2] = _mm256_unpacklo_epi64(t[4 * h + 1], t[4 * h + 3]);
    s[4 * h + 3] = _mm256_unpackhi_epi64(t[4 * h + 1], t[4 * h + 3]);
  }
  for (int g = 0; g < 4; ++g) {
    u[g] = _mm256_permute2x128_si256(s[g], s[4 + g], 0x20);
    u[g + 4] = _mm256_permute2x128_si256(s[g], s[4 + g], 0x31);
  }
}

// Rows past n_rows repeat the last row (computed, never stored).
template <GgmlType kType>
void pack_panel(const uint8_t* rows, size_t row_stride, int64_t n_rows, int64_t nb, Panel& panel) {
  using Block = typename QuantBlock<kType>::type;
  panel.codes.resize(static_cast<size_t>(nb * kPanelRows));
  panel.d.resize(static_cast<size_t>(nb * kPanelRows));
  panel.m.resize(static_cast<size_t>(nb * kPanelRows));
  const Block* w[kPanelRows];
  for (int i = 0; i < kPanelRows; ++i)
    w[i] = reinterpret_cast<const Block*>(rows + std::min<int64_t>(i, n_rows - 1) * row_stride);
  for (int64_t b = 0; b < nb; ++b) {
    for (int p = 0; p < kPanelRegs; ++p) {
      __m256i u[8];
      for (int i = 0; i < 8; ++i) {
        const int row = 8 * p + i;
        u[i] = block_codes<kType>(w[row][b]);
        block_scale<kType>(w[row][b], panel.d[b * kPanelRows + row], panel.m[b * kPanelRows + row]);
      }
      transpose8x8_epi32(u);
      for (int g = 0; g < 8; ++g)
        _mm256_store_si256(reinterpret_cast<__m256i*>(&panel.codes[(b * kPanelRegs + p) * 8 + g]), u[g]);
    }
  }
}

inline __m256i broadcast4(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm256_set1_epi32(v);
}

// 16 rows x kTok tokens. Q4 sums the 8 maddubs results of a block in int16 (8 pairs of |15 * 127| stay
// below 2^15) and widens once; Q8_0 pairs can reach 2^15, so each is widened to int32 at once.
template <GgmlType kType, int kTok>
inline void panel_tile(const Panel& panel, int64_t nb, const BlockQ8A* const xs[kTok], __m256 acc[kPanelRegs][kTok]) {
  const __m256i ones = _mm256_set1_epi16(1);
  for (auto* a = &acc[0][0]; a != &acc[0][0] + kPanelRegs * kTok; ++a) *a = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const auto* wb = reinterpret_cast<const __m256i*>(panel.codes.data() + b * kPanelRegs * 8);
    __m256i s[kPanelRegs][kTok];
    for (auto& sp : s)
      for (auto& v : sp) v = _mm256_setzero_si256();
    // Not unrolled: unrolling lets the compiler regroup the sums into trees that spill registers.
#pragma GCC unroll 1
    for (int g = 0; g < 8; ++g) {
      __m256i w[kPanelRegs];
      for (int p = 0; p < kPanelRegs; ++p) w[p] = _mm256_load_si256(wb + p * 8 + g);
      for (int j = 0; j < kTok; ++j) {
        const __m256i x = broadcast4(xs[j][b].qs + 4 * g);
        for (int p = 0; p < kPanelRegs; ++p) {
          const __m256i prod = maddubs_codes<kType>(w[p], x);
          if constexpr (kIsQ4<kType>)
            s[p][j] = _mm256_add_epi16(s[p][j], prod);
          else
            s[p][j] = _mm256_add_epi32(s[p][j], _mm256_madd_epi16(prod, ones));
        }
      }
    }
    for (int p = 0; p < kPanelRegs; ++p) {
      const __m256 dw = _mm256_loadu_ps(panel.d.data() + b * kPanelRows + 8 * p);
      const __m256 mw = _mm256_loadu_ps(panel.m.data() + b * kPanelRows + 8 * p);
      for (int j = 0; j < kTok; ++j) {
        const __m256i dot = kIsQ4<kType> ? _mm256_madd_epi16(s[p][j], ones) : s[p][j];
        acc[p][j] = block_fma<kType>(acc[p][j], dot, dw, mw, xs[j][b]);
      }
    }
  }
}

template <GgmlType kType>
void gemm_q8a_t(const uint8_t* rows, size_t row_stride, int64_t n_rows, const BlockQ8A* x, int64_t n_tok, int64_t K,
                float* y, int64_t ldy) {
  if (n_tok < 8) return gemv_q8a<kType>(rows, row_stride, n_rows, x, n_tok, K, y, ldy);
  constexpr int kTok = 3;  // 16 x 3: 6 int16 sums + 6 float sums + 2 weight registers + 1 broadcast
  const int64_t nb = K / 32;
  thread_local Panel panel;
  for (int64_t r0 = 0; r0 < n_rows; r0 += kPanelRows) {
    const int64_t nr = std::min<int64_t>(kPanelRows, n_rows - r0);
    pack_panel<kType>(rows + r0 * row_stride, row_stride, nr, nb, panel);
    auto store = [&](int64_t t, __m256 v[kPanelRegs]) {
      alignas(32) float out[kPanelRows];
      for (int p = 0; p < kPanelRegs; ++p) _mm256_store_ps(out + 8 * p, v[p]);
      std::copy(out, out + nr, y + t * ldy + r0);
    };
    int64_t t = 0;
    for (; t + kTok <= n_tok; t += kTok) {
      const BlockQ8A* xs[kTok];
      for (int j = 0; j < kTok; ++j) xs[j] = x + (t + j) * nb;
      __m256 acc[kPanelRegs][kTok];
      panel_tile<kType, kTok>(panel, nb, xs, acc);
      for (int j = 0; j < kTok; ++j) {
        __m256 v[kPanelRegs];
        for (int p = 0; p < kPanelRegs; ++p) v[p] = acc[p][j];
        store(t + j, v);
      }
    }
    for (; t < n_tok; ++t) {
      const BlockQ8A* xs[1] = {x + t * nb};
      __m256 acc[kPanelRegs][1];
      panel_tile<kType, 1>(panel, nb, xs, acc);
      __m256 v[kPanelRegs];
      for (int p = 0; p < kPanelRegs; ++p) v[p] = acc[p][0];
      store(t, v);
    }
  }
}

void a_gemm_q8a(GgmlType type, const uint8_t* rows, size_t row_stride, int64_t n_rows, const BlockQ8A* x, int64_t n_tok,
                int64_t K, float* y, int64_t ldy) {
  switch (type) {
    case GgmlType::Q8_0: return gemm_q8a_t<GgmlType::Q8_0>(rows, row_stride, n_rows, x, n_tok, K, y, ldy);
    case GgmlType::Q4_0: return gemm_q8a_t<GgmlType::Q4_0>(rows, row_stride, n_rows, x, n_tok, K, y, ldy);
    default: return gemm_q8a_t<GgmlType::Q4_1>(rows, row_stride, n_rows, x, n_tok, K, y, ldy);
  }
}

// 8 consecutive row elements as floats: fp16 (converted, exact) or fp32; one element likewise.
inline __m256 load8(const uint16_t* r) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(r)));
}
inline __m256 load8(const float* r) {
  return _mm256_loadu_ps(r);
}
inline float to_float(uint16_t h) {
  return h2f(h);
}
inline float to_float(float f) {
  return f;
}

// Float prefill, BLIS-style. A panel of 16 weight rows is converted to fp32 and transposed to
// [k][16] over kKc columns at a time (16 KiB, stays in L1), then a 6-token x 16-row register tile
// (12 accumulators + 2 panel registers + 1 broadcast = 15 of 16 ymm) runs 2 panel loads and 6
// activation broadcasts per 12 FMAs, all from L1. The dot-product form it replaces (3 rows x 4 tokens)
// read both operands from L2 on the long rows of 1B-class layers and stalled there at ~75% of peak.
// Each output is one FMA chain over k in order; partial sums wait in y between column blocks.
constexpr int kFloatRegs = 2, kPanelN = 8 * kFloatRegs, kTileTok = 6;
constexpr int64_t kKc = 256;

// The 8 x 8 transpose of v (rows become columns).
inline void transpose8(__m256 v[8]) {
  __m256 t[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(v[i], v[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(v[i], v[i + 1]);
  }
  __m256 u[8];
  for (int i = 0; i < 8; i += 4) {
    u[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 4; ++i) {
    v[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
    v[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
  }
}

// panel[k * 16 + r] = float(rows[r * stride + k0 + k]) for k < kc; rows from nr on are zero.
// The next column block of the same rows is prefetched into L2 while this one is used: mapped weights
// come from DRAM in 512-byte pieces of many rows (pages), which the hardware prefetchers do not follow.
template <typename Elem>
void pack_panel_f32(const Elem* rows, int64_t stride, int nr, int64_t k0, int64_t kc, int64_t K, float* panel) {
  const int64_t next = std::min(K - (k0 + kc), kKc);
  for (int r = 0; r < nr; ++r) {
    const char* p = reinterpret_cast<const char*>(rows + r * stride + k0 + kc);
    for (int64_t b = 0; b < next * int64_t(sizeof(Elem)); b += 64) _mm_prefetch(p + b, _MM_HINT_T1);
  }
  const int64_t kc8 = kc / 8 * 8;
  for (int half = 0; half < kFloatRegs; ++half) {
    for (int64_t k = 0; k < kc8; k += 8) {
      __m256 v[8];
      for (int i = 0; i < 8; ++i) {
        const int r = 8 * half + i;
        v[i] = r < nr ? load8(rows + r * stride + k0 + k) : _mm256_setzero_ps();
      }
      transpose8(v);
      for (int i = 0; i < 8; ++i) _mm256_store_ps(panel + (k + i) * kPanelN + 8 * half, v[i]);
    }
  }
  for (int64_t k = kc8; k < kc; ++k)
    for (int r = 0; r < kPanelN; ++r) panel[k * kPanelN + r] = r < nr ? to_float(rows[r * stride + k0 + k]) : 0.0f;
}

// The outer-product register tile both float prefill GEMMs and prompt attention's value sums use:
//   y[t * ldy + 8 p + l] (+)= sum_k w[k * w_stride + 8 p + l] * x[t * ldx + k]   (t < kTok, p < kRegs, l < 8)
// one FMA chain per output in k order; `acc` is only ever indexed by constants so it stays in registers.
template <int kTok, int kRegs, typename Elem>
inline void outer_tile(const Elem* w, int64_t w_stride, int64_t kc, const float* x, int64_t ldx, float* y, int64_t ldy,
                       bool accumulate) {
  __m256 acc[kTok][kRegs];
#pragma GCC unroll 8
  for (int t = 0; t < kTok; ++t)
    for (int p = 0; p < kRegs; ++p) acc[t][p] = accumulate ? _mm256_loadu_ps(y + t * ldy + 8 * p) : _mm256_setzero_ps();
  for (int64_t k = 0; k < kc; ++k) {
    __m256 wv[kRegs];
    for (int p = 0; p < kRegs; ++p) wv[p] = load8(w + k * w_stride + 8 * p);
#pragma GCC unroll 8
    for (int t = 0; t < kTok; ++t) {
      const __m256 xv = _mm256_broadcast_ss(x + t * ldx + k);
      for (int p = 0; p < kRegs; ++p) acc[t][p] = _mm256_fmadd_ps(wv[p], xv, acc[t][p]);
    }
  }
#pragma GCC unroll 8
  for (int t = 0; t < kTok; ++t)
    for (int p = 0; p < kRegs; ++p) _mm256_storeu_ps(y + t * ldy + 8 * p, acc[t][p]);
}

// Up to 4 packed panels (64 rows, 64 KiB in L2) per column block, so each 6-token slice of x is
// fetched once into L1 and used by all of them.
constexpr int kPanelsPerBlock = 4;

template <int kTok>
void tile_panels(const float* panels, int n_panels, int64_t kc, const float* x, int64_t ldx, float* y, int64_t ldy,
                 bool accumulate) {
  for (int p = 0; p < n_panels; ++p)
    outer_tile<kTok, kFloatRegs>(panels + p * kKc * kPanelN, kPanelN, kc, x, ldx, y + p * kPanelN, ldy, accumulate);
}

// Partial sums wait between column blocks in a private, aligned buffer and reach y once: y's rows are
// shared with the tasks of neighbouring rows on other threads, and a line stored by both cores per
// column block (y need not be 64-byte aligned) cost two threads half their speed.
template <typename Elem>
void gemm_rows(const Elem* rows, int64_t stride, int64_t n_rows, const float* x, int64_t n_tok, int64_t K, float* y,
               int64_t ldy) {
  alignas(32) static thread_local float panels[kPanelsPerBlock * kKc * kPanelN];
  static thread_local std::vector<float> sums;
  constexpr int64_t kBlockRows = kPanelsPerBlock * kPanelN;
  sums.resize(static_cast<size_t>(n_tok * kBlockRows));
  for (int64_t r0 = 0; r0 < n_rows; r0 += kBlockRows) {
    const int64_t nr = std::min(kBlockRows, n_rows - r0);
    const int n_panels = static_cast<int>((nr + kPanelN - 1) / kPanelN);
    const int last_nr = static_cast<int>(nr - (n_panels - 1) * kPanelN);
    for (int64_t k0 = 0; k0 < K; k0 += kKc) {
      const int64_t kc = std::min(kKc, K - k0);
      for (int p = 0; p < n_panels; ++p) {
        pack_panel_f32(rows + (r0 + p * kPanelN) * stride, stride, p + 1 < n_panels ? kPanelN : last_nr, k0, kc, K,
                       panels + p * kKc * kPanelN);
      }
      const bool accumulate = k0 > 0;
      int64_t t = 0;  // whole panels into the buffer (lanes past nr hold sums over zero rows)
      for (; t + kTileTok <= n_tok; t += kTileTok) {
        tile_panels<kTileTok>(panels, n_panels, kc, x + t * K + k0, K, sums.data() + t * kBlockRows, kBlockRows,
                              accumulate);
      }
      const float* xt = x + t * K + k0;
      float* st = sums.data() + t * kBlockRows;
      switch (n_tok - t) {
        case 5: tile_panels<5>(panels, n_panels, kc, xt, K, st, kBlockRows, accumulate); break;
        case 4: tile_panels<4>(panels, n_panels, kc, xt, K, st, kBlockRows, accumulate); break;
        case 3: tile_panels<3>(panels, n_panels, kc, xt, K, st, kBlockRows, accumulate); break;
        case 2: tile_panels<2>(panels, n_panels, kc, xt, K, st, kBlockRows, accumulate); break;
        case 1: tile_panels<1>(panels, n_panels, kc, xt, K, st, kBlockRows, accumulate); break;
        default: break;
      }
    }
    for (int64_t t = 0; t < n_tok; ++t) std::copy_n(sums.data() + t * kBlockRows, nr, y + t * ldy + r0);
  }
}

void a_gemm_f32(const float* rows, int64_t n_rows, const float* x, int64_t n_tok, int64_t K, float* y, int64_t ldy) {
  gemm_rows(rows, K, n_rows, x, n_tok, K, y, ldy);
}
void a_gemm_f16(const uint16_t* rows, int64_t stride, int64_t n_rows, const float* x, int64_t n_tok, int64_t K,
                float* y, int64_t ldy) {
  gemm_rows(rows, stride, n_rows, x, n_tok, K, y, ldy);
}

void a_f16_to_f32_row(const uint16_t* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
  for (; i < n; ++i) dst[i] = h2f(src[i]);
}

void a_f32_to_f16_row(const float* src, uint16_t* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), h);
  }
  for (; i < n; ++i) dst[i] = fp32_to_fp16(src[i]);
}

// 8 consecutive row elements as floats: fp16 (converted) or fp32.
inline void axpy_row(float a, const uint16_t* x, float* y, int64_t n) {
  a_axpy_f16(a, x, y, n);
}
inline void axpy_row(float a, const float* x, float* y, int64_t n) {
  a_axpy_f32(a, x, y, n);
}
inline float dot_row(const uint16_t* r, const float* q, int64_t n) {
  return a_dot_f16(r, q, n);
}
inline float dot_row(const float* r, const float* q, int64_t n) {
  return a_dot_f32(r, q, n);
}

template <typename Elem>
void accumulate_rows(const float* p, const Elem* rows, int64_t stride, int64_t n, float* out, int64_t d) {
  if (d % 8 != 0) {
    for (int64_t j = 0; j < n; ++j) axpy_row(p[j], rows + j * stride, out, d);
    return;
  }
  // Columns in chunks of up to 64 (8 registers) kept live across all n rows.
  for (int64_t c0 = 0; c0 < d; c0 += 64) {
    const int nv = static_cast<int>(std::min<int64_t>(64, d - c0) / 8);
    __m256 acc[8];
    for (int v = 0; v < nv; ++v) acc[v] = _mm256_loadu_ps(out + c0 + 8 * v);
    for (int64_t j = 0; j < n; ++j) {
      const __m256 pj = _mm256_set1_ps(p[j]);
      const Elem* r = rows + j * stride + c0;
      for (int v = 0; v < nv; ++v) acc[v] = _mm256_fmadd_ps(pj, load8(r + 8 * v), acc[v]);
    }
    for (int v = 0; v < nv; ++v) _mm256_storeu_ps(out + c0 + 8 * v, acc[v]);
  }
}

void a_accumulate_f16(const float* p, const uint16_t* rows, int64_t stride, int64_t n, float* out, int64_t d) {
  accumulate_rows(p, rows, stride, n, out, d);
}
void a_accumulate_f32(const float* p, const float* rows, int64_t stride, int64_t n, float* out, int64_t d) {
  accumulate_rows(p, rows, stride, n, out, d);
}

void a_accumulate_q8_0(const float* p, const uint8_t* rows, int64_t stride, int64_t n, float* out, int64_t d) {
  if (d > 64) {
    for (int64_t j = 0; j < n; ++j) a_axpy_q8_0(p[j], rows + j * stride, out, d);
    return;
  }
  const int nb = static_cast<int>(d / 32);
  __m256 acc[8];
  for (int v = 0; v < 4 * nb; ++v) acc[v] = _mm256_loadu_ps(out + 8 * v);
  for (int64_t j = 0; j < n; ++j) {
    const auto* b = reinterpret_cast<const BlockQ8_0*>(rows + j * stride);
    for (int k = 0; k < nb; ++k) {
      const __m256 s = _mm256_set1_ps(p[j] * h2f(b[k].d));
      const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[k].qs));
      const __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
      acc[4 * k] = _mm256_fmadd_ps(s, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo)), acc[4 * k]);
      acc[4 * k + 1] =
          _mm256_fmadd_ps(s, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8))), acc[4 * k + 1]);
      acc[4 * k + 2] = _mm256_fmadd_ps(s, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi)), acc[4 * k + 2]);
      acc[4 * k + 3] =
          _mm256_fmadd_ps(s, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8))), acc[4 * k + 3]);
    }
  }
  for (int v = 0; v < 4 * nb; ++v) _mm256_storeu_ps(out + 8 * v, acc[v]);
}

void a_dot_keys_q8_0(const float* q, const uint8_t* rows, int64_t stride, int64_t n, float* scores, int64_t d) {
  if (d > 64) {
    for (int64_t j = 0; j < n; ++j) scores[j] = a_dot_q8_0(rows + j * stride, q, d);
    return;
  }
  const int nb = static_cast<int>(d / 32);
  __m256 qv[8];
  for (int v = 0; v < 4 * nb; ++v) qv[v] = _mm256_loadu_ps(q + 8 * v);
  for (int64_t j = 0; j < n; ++j) {
    const auto* b = reinterpret_cast<const BlockQ8_0*>(rows + j * stride);
    __m256 acc = _mm256_setzero_ps();
    for (int k = 0; k < nb; ++k) {
      const __m256i qq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[k].qs));
      const __m128i lo = _mm256_castsi256_si128(qq), hi = _mm256_extracti128_si256(qq, 1);
      __m256 s = _mm256_mul_ps(qv[4 * k], _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo)));
      s = _mm256_fmadd_ps(qv[4 * k + 1], _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8))), s);
      s = _mm256_fmadd_ps(qv[4 * k + 2], _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi)), s);
      s = _mm256_fmadd_ps(qv[4 * k + 3], _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8))), s);
      acc = _mm256_fmadd_ps(_mm256_set1_ps(h2f(b[k].d)), s, acc);
    }
    scores[j] = hsum(acc);
  }
}

// Q4_0 rows: the same register-resident loops, nibbles unpacked and centred (code - 8) per block.
void a_accumulate_q4_0(const float* p, const uint8_t* rows, int64_t stride, int64_t n, float* out, int64_t d) {
  if (d > 64) {
    for (int64_t j = 0; j < n; ++j) a_axpy_q4_0(p[j], rows + j * stride, out, d);
    return;
  }
  const int nb = static_cast<int>(d / 32);
  const __m256 eight = _mm256_set1_ps(8.0f);
  __m256 acc[8], q[4];
  for (int v = 0; v < 4 * nb; ++v) acc[v] = _mm256_loadu_ps(out + 8 * v);
  for (int64_t j = 0; j < n; ++j) {
    const auto* b = reinterpret_cast<const BlockQ4_0*>(rows + j * stride);
    for (int k = 0; k < nb; ++k) {
      const __m256 s = _mm256_set1_ps(p[j] * h2f(b[k].d));
      unpack_nibbles(b[k].qs, q);
      for (int i = 0; i < 4; ++i) acc[4 * k + i] = _mm256_fmadd_ps(s, _mm256_sub_ps(q[i], eight), acc[4 * k + i]);
    }
  }
  for (int v = 0; v < 4 * nb; ++v) _mm256_storeu_ps(out + 8 * v, acc[v]);
}

void a_dot_keys_q4_0(const float* qx, const uint8_t* rows, int64_t stride, int64_t n, float* scores, int64_t d) {
  if (d > 64) {
    for (int64_t j = 0; j < n; ++j) scores[j] = a_dot_q4_0(rows + j * stride, qx, d);
    return;
  }
  const int nb = static_cast<int>(d / 32);
  const __m256 eight = _mm256_set1_ps(8.0f);
  __m256 qv[8], q[4];
  for (int v = 0; v < 4 * nb; ++v) qv[v] = _mm256_loadu_ps(qx + 8 * v);
  for (int64_t j = 0; j < n; ++j) {
    const auto* b = reinterpret_cast<const BlockQ4_0*>(rows + j * stride);
    __m256 acc = _mm256_setzero_ps();
    for (int k = 0; k < nb; ++k) {
      unpack_nibbles(b[k].qs, q);
      __m256 s = _mm256_mul_ps(qv[4 * k], _mm256_sub_ps(q[0], eight));
      for (int i = 1; i < 4; ++i) s = _mm256_fmadd_ps(qv[4 * k + i], _mm256_sub_ps(q[i], eight), s);
      acc = _mm256_fmadd_ps(_mm256_set1_ps(h2f(b[k].d)), s, acc);
    }
    scores[j] = hsum(acc);
  }
}

// The four keys' sums of a0..a3 (hadd pairs, then fold the 128-bit halves): decode's reduction per quad.
inline __m128 quad_sums(__m256 a0, __m256 a1, __m256 a2, __m256 a3) {
  const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
  return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

// Four keys per step so their horizontal sums share one reduction; each key's product chain runs
// over the head dimension in order. q stays in registers up to d = 64 and is re-read from L1 beyond
// (d = 128: 16 vectors would not fit beside the keys).
template <typename Elem, bool kQInRegs>
void dot_keys_quads(const float* q, const Elem* rows, int64_t stride, int64_t n, float* scores, int64_t d) {
  const int nv = static_cast<int>(d / 8);
  __m256 qv[8];
  if constexpr (kQInRegs)
    for (int v = 0; v < nv; ++v) qv[v] = _mm256_loadu_ps(q + 8 * v);
  auto qvec = [&](int v) {
    if constexpr (kQInRegs)
      return qv[v];
    else
      return _mm256_loadu_ps(q + 8 * v);
  };
  auto key = [&](const Elem* r) {
    __m256 acc = _mm256_mul_ps(qvec(0), load8(r));
    for (int v = 1; v < nv; ++v) acc = _mm256_fmadd_ps(qvec(v), load8(r + 8 * v), acc);
    return acc;
  };
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) {
    const __m256 a0 = key(rows + j * stride), a1 = key(rows + (j + 1) * stride);
    const __m256 a2 = key(rows + (j + 2) * stride), a3 = key(rows + (j + 3) * stride);
    _mm_storeu_ps(scores + j, quad_sums(a0, a1, a2, a3));
  }
  for (; j < n; ++j) scores[j] = hsum(key(rows + j * stride));
}

template <typename Elem>
void dot_keys_rows(const float* q, const Elem* rows, int64_t stride, int64_t n, float* scores, int64_t d) {
  if (d % 8 != 0) {
    for (int64_t j = 0; j < n; ++j) scores[j] = dot_row(rows + j * stride, q, d);
  } else if (d <= 64) {
    dot_keys_quads<Elem, true>(q, rows, stride, n, scores, d);
  } else {
    dot_keys_quads<Elem, false>(q, rows, stride, n, scores, d);
  }
}

void a_dot_keys_f16(const float* q, const uint16_t* rows, int64_t stride, int64_t n, float* scores, int64_t d) {
  dot_keys_rows(q, rows, stride, n, scores, d);
}
void a_dot_keys_f32(const float* q, const float* rows, int64_t stride, int64_t n, float* scores, int64_t d) {
  dot_keys_rows(q, rows, stride, n, scores, d);
}

// Prefill's attention, several query rows per pass over the keys and values, each row's numbers
// exactly what dot_keys_rows / accumulate_rows give it alone (kernels.h): the same product chain per
// (query, key) and the reduction decode uses at that key position (quads of 4, single keys at a row's
// tail); values in key order per output lane.
template <typename Elem, int kQ>
void keys_for_queries(const float* q, int64_t q_stride, const int64_t* n_of, const Elem* rows, int64_t stride,
                      float* scores, int64_t sc_stride, int64_t d) {
  const int nv = static_cast<int>(d / 8);
  int64_t n_max = 0;
  for (int i = 0; i < kQ; ++i) n_max = std::max(n_max, n_of[i]);
  int64_t j = 0;
  for (; j + 4 <= n_max; j += 4) {
    __m256 acc[kQ][4];
    {
      __m256 qv[kQ];
      for (int i = 0; i < kQ; ++i) qv[i] = _mm256_loadu_ps(q + i * q_stride);
#pragma GCC unroll 4
      for (int kk = 0; kk < 4; ++kk) {
        const __m256 kv = load8(rows + (j + kk) * stride);
        for (int i = 0; i < kQ; ++i) acc[i][kk] = _mm256_mul_ps(qv[i], kv);
      }
    }
    for (int v = 1; v < nv; ++v) {
      __m256 qv[kQ];
      for (int i = 0; i < kQ; ++i) qv[i] = _mm256_loadu_ps(q + i * q_stride + 8 * v);
#pragma GCC unroll 4
      for (int kk = 0; kk < 4; ++kk) {
        const __m256 kv = load8(rows + (j + kk) * stride + 8 * v);
        for (int i = 0; i < kQ; ++i) acc[i][kk] = _mm256_fmadd_ps(qv[i], kv, acc[i][kk]);
      }
    }
    for (int i = 0; i < kQ; ++i) {
      float* sc = scores + i * sc_stride;
      if (j + 4 <= n_of[i]) {
        _mm_storeu_ps(sc + j, quad_sums(acc[i][0], acc[i][1], acc[i][2], acc[i][3]));
      } else {
        for (int64_t kk = 0; kk < std::min<int64_t>(4, n_of[i] - j); ++kk) sc[j + kk] = hsum(acc[i][kk]);
      }
    }
  }
  // The keys after the last full quad (fewer than 4 per row): the per-row kernel, whose reduction
  // for so few keys is the single one decode uses there.
  for (int i = 0; i < kQ; ++i)
    if (n_of[i] > j) {
      dot_keys_rows(q + i * q_stride, rows + j * stride, stride, n_of[i] - j, scores + i * sc_stride + j, d);
    }
}

template <typename Elem>
void dot_keys_block_rows(const float* q, int64_t q_stride, int64_t nq, const int64_t* n_of, const Elem* rows,
                         int64_t stride, float* scores, int64_t sc_stride, int64_t d) {
  int64_t i = 0;
  if (d % 8 == 0) {  // dot_keys_rows' quad path; otherwise it goes row by row too
    for (; i + 3 <= nq; i += 3)
      keys_for_queries<Elem, 3>(q + i * q_stride, q_stride, n_of + i, rows, stride, scores + i * sc_stride, sc_stride,
                                d);
  }
  for (; i < nq; ++i) dot_keys_rows(q + i * q_stride, rows, stride, n_of[i], scores + i * sc_stride, d);
}

template <typename Elem>
void accumulate_block_rows(const float* p, int64_t p_stride, int64_t np, const int64_t* n_of, const Elem* rows,
                           int64_t stride, float* out, int64_t out_stride, int64_t d) {
  constexpr int kQ = 6;
  int64_t i = 0;
  if (d % 8 == 0) {
    for (; i + kQ <= np; i += kQ) {
      const int64_t n = *std::max_element(n_of + i, n_of + i + kQ);
      const float* pi = p + i * p_stride;
      float* oi = out + i * out_stride;
      int64_t c = 0;
      // 16 (or a last 8) output lanes at a time, kQ rows sharing each loaded value vector; p[i][j] = 0
      // past row i's keys, so the extra terms add exact zeros.
      for (; c + 16 <= d; c += 16) outer_tile<kQ, 2>(rows + c, stride, n, pi, p_stride, oi + c, out_stride, true);
      if (c < d) outer_tile<kQ, 1>(rows + c, stride, n, pi, p_stride, oi + c, out_stride, true);
    }
  }
  for (; i < np; ++i) accumulate_rows(p + i * p_stride, rows, stride, n_of[i], out + i * out_stride, d);
}

void a_dot_keys_block_f16(const float* q, int64_t q_stride, int64_t nq, const int64_t* n_of, const uint16_t* rows,
                          int64_t stride, float* scores, int64_t sc_stride, int64_t d) {
  dot_keys_block_rows(q, q_stride, nq, n_of, rows, stride, scores, sc_stride, d);
}
void a_accumulate_block_f16(const float* p, int64_t p_stride, int64_t np, const int64_t* n_of, const uint16_t* rows,
                            int64_t stride, float* out, int64_t out_stride, int64_t d) {
  accumulate_block_rows(p, p_stride, np, n_of, rows, stride, out, out_stride, d);
}

// exp(x) for x <= 0 (softmax after subtracting the maximum): x = n ln2 + r with |r| <= ln2/2, a
// degree-6 polynomial for exp(r) (relative error ~2e-7), 2^n built in the exponent bits; inputs below
// -87 give 0 (their weight is below float precision next to the maximum's exp(0) = 1).
inline __m256 exp_nonpositive(__m256 x) {
  const __m256 lo = _mm256_set1_ps(-87.0f);
  const __m256 small = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
  x = _mm256_max_ps(x, lo);
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_andnot_ps(small, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
}

float a_exp_shift_sum(float* x, int64_t n, float max) {
  const __m256 m = _mm256_set1_ps(max);
  __m256 acc = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 e = exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(x + i), m));
    _mm256_storeu_ps(x + i, e);
    acc = _mm256_add_ps(acc, e);
  }
  float sum = hsum(acc);
  for (; i < n; ++i) sum += x[i] = std::exp(x[i] - max);
  return sum;
}

// silu(g) * u with e = exp(-|g|) <= 1 (no overflow for any g): sigmoid(g) = 1 / (1 + e) for g >= 0 and
// e / (1 + e) below. Relative error ~3e-7 against the scalar definition.
void a_silu_mul(float* gate, const float* up, int64_t n) {
  const __m256 sign = _mm256_set1_ps(-0.0f), one = _mm256_set1_ps(1.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 g = _mm256_loadu_ps(gate + i);
    const __m256 e = exp_nonpositive(_mm256_or_ps(g, sign));  // exp(-|g|)
    const __m256 num = _mm256_blendv_ps(one, e, g);           // g < 0 (sign bit set): e
    const __m256 sig = _mm256_div_ps(num, _mm256_add_ps(one, e));
    _mm256_storeu_ps(gate + i, _mm256_mul_ps(_mm256_mul_ps(g, sig), _mm256_loadu_ps(up + i)));
  }
  for (; i < n; ++i) gate[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

// 16 int8 -> 16 int16 lanes.
inline __m256i widen16(const int8_t* p) {
  return _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

inline int32_t hsum_i32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}

// int8 x int8 products widened to int16 and paired by madd into int32: exact (|a*b + c*d| <= 2^15).
// A tile of 4 weight rows x 2 tokens reuses every widened load twice.
void a_gemm_s8(const int8_t* rows, int64_t n_rows, const int8_t* x, int64_t n_tok, int64_t K, int32_t* acc,
               int64_t ldy) {
  const int64_t k16 = K / 16 * 16, r4 = n_rows / 4 * 4, t2 = n_tok / 2 * 2;
  auto tail = [&](const int8_t* w, const int8_t* xt) {
    int32_t s = 0;
    for (int64_t k = k16; k < K; ++k) s += int32_t(w[k]) * int32_t(xt[k]);
    return s;
  };
  for (int64_t t = 0; t < t2; t += 2) {
    const int8_t *x0 = x + t * K, *x1 = x0 + K;
    for (int64_t r = 0; r < r4; r += 4) {
      const int8_t* w[4] = {rows + r * K, rows + (r + 1) * K, rows + (r + 2) * K, rows + (r + 3) * K};
      __m256i a[4][2];
      for (auto& row : a) row[0] = row[1] = _mm256_setzero_si256();
      for (int64_t k = 0; k < k16; k += 16) {
        const __m256i v0 = widen16(x0 + k), v1 = widen16(x1 + k);
        for (int i = 0; i < 4; ++i) {
          const __m256i wi = widen16(w[i] + k);
          a[i][0] = _mm256_add_epi32(a[i][0], _mm256_madd_epi16(wi, v0));
          a[i][1] = _mm256_add_epi32(a[i][1], _mm256_madd_epi16(wi, v1));
        }
      }
      for (int i = 0; i < 4; ++i) {
        acc[t * ldy + r + i] = hsum_i32(a[i][0]) + tail(w[i], x0);
        acc[(t + 1) * ldy + r + i] = hsum_i32(a[i][1]) + tail(w[i], x1);
      }
    }
    for (int64_t r = r4; r < n_rows; ++r) {
      gemm_s8_generic(rows + r * K, 1, x0, 2, K, acc + t * ldy + r, ldy);
    }
  }
  if (t2 < n_tok) {
    const int8_t* xt = x + t2 * K;
    for (int64_t r = 0; r < n_rows; ++r) {
      __m256i a = _mm256_setzero_si256();
      for (int64_t k = 0; k < k16; k += 16)
        a = _mm256_add_epi32(a, _mm256_madd_epi16(widen16(rows + r * K + k), widen16(xt + k)));
      acc[t2 * ldy + r] = hsum_i32(a) + tail(rows + r * K, xt);
    }
  }
}

}  // namespace

// Throughput probes for the bench's prefill bound: independent chains, enough to cover latency.
double avx2_probe_fp32(int64_t iters) {
  __m256 a[12];
  for (int i = 0; i < 12; ++i) a[i] = _mm256_set1_ps(0.001f * static_cast<float>(i));
  const __m256 b = _mm256_set1_ps(0.9999f), c = _mm256_set1_ps(1e-4f);
  for (int64_t it = 0; it < iters; ++it)
    for (auto& v : a) v = _mm256_fmadd_ps(v, b, c);
  __m256 s = a[0];
  for (int i = 1; i < 12; ++i) s = _mm256_add_ps(s, a[i]);
  return static_cast<double>(hsum(s));  // keeps the chains alive; 12 x 8 x 2 flops per iteration
}

double avx2_probe_int8(int64_t iters) {
  __m256i a[8];
  const __m256i w = _mm256_set1_epi8(1);
  for (int i = 0; i < 8; ++i) a[i] = _mm256_set1_epi8(static_cast<char>(i));
  for (int64_t it = 0; it < iters; ++it)
    for (auto& v : a) v = _mm256_maddubs_epi16(w, v);  // 32 u8 x s8 MACs (the int16 sums reinterpreted)
  __m256i s = a[0];
  for (int i = 1; i < 8; ++i) s = _mm256_add_epi32(s, a[i]);
  return static_cast<double>(hsum_i32(s));  // 8 x 32 x 2 ops per iteration
}

KernelTable avx2_kernels() {
  return {"avx2",
          a_dot_f32,
          a_dot_q8_0,
          a_dot_q4_0,
          a_dot_q4_1,
          a_dot_f16,
          a_dot_bf16,
          a_axpy_f32,
          a_axpy_f16,
          a_axpy_q8_0,
          a_axpy_q4_0,
          a_kivi_keys,
          a_kivi_values,
          a_quantize_q8a,
          a_dot_q8_0_q8a,
          a_dot_q4_0_q8a,
          a_dot_q4_1_q8a,
          a_gemm_q8a,
          a_gemm_f32,
          a_f16_to_f32_row,
          a_accumulate_f16,
          a_accumulate_q8_0,
          a_dot_keys_q8_0,
          a_dot_keys_f16,
          a_exp_shift_sum,
          a_accumulate_q4_0,
          a_dot_keys_q4_0,
          a_gemm_s8,
          a_silu_mul,
          a_accumulate_f32,
          a_dot_keys_f32,
          a_gemm_f16,
          a_dot_keys_block_f16,
          a_accumulate_block_f16,
          a_f32_to_f16_row};
}

}  // namespace pyrt::cpu
