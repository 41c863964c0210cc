// AVX2 + FMA + F16C kernels. Built with -mavx2 -mfma -mf16c for this file only and selected at
// run time by kernels.cpp, so the rest of the binary stays baseline x86-64.
#include <immintrin.h>

#include "backends/cpu/kernels.h"

namespace pyrt::cpu {
namespace {

// One fp16 -> fp32 with F16C (the shared table lookup is an out-of-line call in the inner loops).
inline float h2f(uint16_t h) { return _cvtsh_ss(h); }

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
  const auto* h = static_cast<const uint16_t*>(row);
  __m256 acc = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 w = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + i)));
    acc = _mm256_fmadd_ps(w, _mm256_loadu_ps(x + i), acc);
  }
  float s = hsum(acc);
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
      q[j] = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v[j], idv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
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

// Sum of products of signed bytes, as 8 int32 partial sums converted to float (sign trick for maddubs).
inline __m256 dot_i8(__m256i a, __m256i b) {
  const __m256i prod = _mm256_maddubs_epi16(_mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a));
  return _mm256_cvtepi32_ps(_mm256_madd_epi16(prod, _mm256_set1_epi16(1)));
}

inline __m256 dot_u8_i8(__m256i u, __m256i s) {
  return _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
}

// 16 bytes of nibbles -> 32 bytes: low nibbles (elements 0-15) then high nibbles (16-31).
inline __m256i nibbles_to_bytes(const uint8_t* qs) {
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), _mm256_set1_epi8(0x0F));
}

// The integer dots run two blocks per iteration into separate accumulators: one accumulator makes the
// loop a chain of dependent FMAs (latency-bound), two keep the load and multiply units busy.
float a_dot_q8_0_q8a(const void* row, const BlockQ8A* x, int64_t n) {
  const auto* w = static_cast<const BlockQ8_0*>(row);
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  const int64_t nb = n / 32;
  auto block = [&](int64_t b, __m256 acc) {
    const __m256i wq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[b].qs));
    const __m256i xq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[b].qs));
    return _mm256_fmadd_ps(_mm256_set1_ps(h2f(w[b].d) * x[b].d), dot_i8(wq, xq), acc);
  };
  int64_t b = 0;
  for (; b + 2 <= nb; b += 2) {
    acc0 = block(b, acc0);
    acc1 = block(b + 1, acc1);
  }
  if (b < nb) acc0 = block(b, acc0);
  return hsum(_mm256_add_ps(acc0, acc1));
}

float a_dot_q4_0_q8a(const void* row, const BlockQ8A* x, int64_t n) {
  const auto* w = static_cast<const BlockQ4_0*>(row);
  const __m256i eight = _mm256_set1_epi8(8);
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  const int64_t nb = n / 32;
  auto block = [&](int64_t b, __m256 acc) {
    const __m256i wq = _mm256_sub_epi8(nibbles_to_bytes(w[b].qs), eight);
    const __m256i xq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[b].qs));
    return _mm256_fmadd_ps(_mm256_set1_ps(h2f(w[b].d) * x[b].d), dot_i8(wq, xq), acc);
  };
  int64_t b = 0;
  for (; b + 2 <= nb; b += 2) {
    acc0 = block(b, acc0);
    acc1 = block(b + 1, acc1);
  }
  if (b < nb) acc0 = block(b, acc0);
  return hsum(_mm256_add_ps(acc0, acc1));
}

float a_dot_q4_1_q8a(const void* row, const BlockQ8A* x, int64_t n) {
  const auto* w = static_cast<const BlockQ4_1*>(row);
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  float mins0 = 0, mins1 = 0;
  const int64_t nb = n / 32;
  auto block = [&](int64_t b, __m256 acc) {
    const __m256i xq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[b].qs));
    return _mm256_fmadd_ps(_mm256_set1_ps(h2f(w[b].d) * x[b].d), dot_u8_i8(nibbles_to_bytes(w[b].qs), xq), acc);
  };
  int64_t b = 0;
  for (; b + 2 <= nb; b += 2) {
    acc0 = block(b, acc0);
    acc1 = block(b + 1, acc1);
    mins0 += h2f(w[b].m) * x[b].s;
    mins1 += h2f(w[b + 1].m) * x[b + 1].s;
  }
  if (b < nb) {
    acc0 = block(b, acc0);
    mins0 += h2f(w[b].m) * x[b].s;
  }
  return hsum(_mm256_add_ps(acc0, acc1)) + (mins0 + mins1);
}

}  // namespace

KernelTable avx2_kernels() {
  return {"avx2",         a_dot_f32,      a_dot_q8_0,     a_dot_q4_0,     a_dot_q4_1,       a_dot_f16,
          a_dot_bf16,     a_axpy_f32,     a_axpy_f16,     a_axpy_q8_0,    a_axpy_q4_0,      a_kivi_key_scores,
          a_kivi_value_axpy, a_quantize_q8a, a_dot_q8_0_q8a, a_dot_q4_0_q8a, a_dot_q4_1_q8a};
}

}  // namespace pyrt::cpu
