// AVX2 + FMA + F16C kernels. Built with -mavx2 -mfma -mf16c for this file only and selected at
// run time by kernels.cpp, so the rest of the binary stays baseline x86-64.
#include <immintrin.h>

#include "backends/cpu/kernels.h"

namespace pyrt::cpu {
namespace {

inline float hsum(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
  return _mm_cvtss_f32(lo);
}

inline __m256 load_u8x8_ps(__m128i bytes8) { return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes8)); }

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
    acc = _mm256_fmadd_ps(_mm256_set1_ps(fp16_to_fp32(b[i].d)), bs, acc);
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
    acc = _mm256_fmadd_ps(_mm256_set1_ps(fp16_to_fp32(b[i].d)), bs, acc);
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
    acc = _mm256_fmadd_ps(_mm256_set1_ps(fp16_to_fp32(b[i].d)), qx, acc);
    acc = _mm256_fmadd_ps(_mm256_set1_ps(fp16_to_fp32(b[i].m)), sx, acc);
  }
  return hsum(acc);
}

float a_dot_f16(const void* row, const float* x, int64_t n) {
  const auto* h = static_cast<const uint16_t*>(row);
  __m256 acc = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 w = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + i)));
    acc = _mm256_fmadd_ps(w, _mm256_loadu_ps(x + i), acc);
  }
  float s = hsum(acc);
  for (; i < n; ++i) s += fp16_to_fp32(h[i]) * x[i];
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
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  for (; i < n; ++i) y[i] += a * x[i];
}

void a_axpy_f16(float a, const uint16_t* x, float* y, int64_t n) {
  const __m256 av = _mm256_set1_ps(a);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 xv = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + i)));
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, xv, _mm256_loadu_ps(y + i)));
  }
  for (; i < n; ++i) y[i] += a * fp16_to_fp32(x[i]);
}

void a_axpy_q8_0(float a, const void* row, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ8_0*>(row);
  for (int64_t i = 0; i < n / kQK8_0; ++i, y += kQK8_0) {
    const __m256 ad = _mm256_set1_ps(a * fp16_to_fp32(b[i].d));
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
    const __m256 ad = _mm256_set1_ps(a * fp16_to_fp32(b[i].d));
    unpack_nibbles(b[i].qs, q);
    for (int j = 0; j < 4; ++j) {
      _mm256_storeu_ps(y + 8 * j, _mm256_fmadd_ps(ad, _mm256_sub_ps(q[j], eight), _mm256_loadu_ps(y + 8 * j)));
    }
  }
}

// 32 codes -> four vectors of 8 floats via the byte table (2-bit: 4 codes a byte, 4-bit: 2).
inline void unpack32_ps(const uint8_t* codes, int bits, const float* lut, __m256 out[4]) {
  if (bits == 2) {
    for (int v = 0; v < 4; ++v) {
      const __m128 lo = _mm_loadu_ps(lut + codes[2 * v] * 4), hi = _mm_loadu_ps(lut + codes[2 * v + 1] * 4);
      out[v] = _mm256_set_m128(hi, lo);
    }
  } else {
    for (int v = 0; v < 4; ++v) {
      const uint8_t* b = codes + 4 * v;
      out[v] = _mm256_setr_ps(lut[b[0] * 2], lut[b[0] * 2 + 1], lut[b[1] * 2], lut[b[1] * 2 + 1], lut[b[2] * 2],
                              lut[b[2] * 2 + 1], lut[b[3] * 2], lut[b[3] * 2 + 1]);
    }
  }
}

void a_kivi_key_scores(const uint8_t* codes, int64_t code_stride, const float* qs, int64_t d, int bits, float* sc) {
  const float* lut = kivi_lut(bits);
  __m256 acc[4] = {_mm256_loadu_ps(sc), _mm256_loadu_ps(sc + 8), _mm256_loadu_ps(sc + 16), _mm256_loadu_ps(sc + 24)};
  __m256 c[4];
  for (int64_t ch = 0; ch < d; ++ch) {
    unpack32_ps(codes + ch * code_stride, bits, lut, c);
    const __m256 q = _mm256_set1_ps(qs[ch]);
    for (int v = 0; v < 4; ++v) acc[v] = _mm256_fmadd_ps(q, c[v], acc[v]);
  }
  for (int v = 0; v < 4; ++v) _mm256_storeu_ps(sc + 8 * v, acc[v]);
}

void a_kivi_value_axpy(const uint8_t* codes, int bits, float ps, float pm, float* out) {
  __m256 c[4];
  unpack32_ps(codes, bits, kivi_lut(bits), c);
  const __m256 p = _mm256_set1_ps(ps), m = _mm256_set1_ps(pm);
  for (int v = 0; v < 4; ++v) {
    _mm256_storeu_ps(out + 8 * v, _mm256_add_ps(_mm256_fmadd_ps(p, c[v], _mm256_loadu_ps(out + 8 * v)), m));
  }
}

}  // namespace

KernelTable avx2_kernels() {
  return {"avx2",     a_dot_f32,  a_dot_q8_0, a_dot_q4_0,        a_dot_q4_1,       a_dot_f16,
          a_dot_bf16, a_axpy_f32, a_axpy_f16, a_axpy_q8_0,       a_axpy_q4_0,      a_kivi_key_scores,
          a_kivi_value_axpy};
}

}  // namespace pyrt::cpu
