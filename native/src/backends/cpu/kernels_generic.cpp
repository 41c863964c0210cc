// Portable scalar kernels: the reference every ISA-specific path is tested against.
#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "backends/cpu/kernels.h"

namespace pyrt::cpu {
namespace {

float g_dot_f32(const float* a, const float* b, int64_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += a[i + j] * b[i + j];
  float s = 0;
  for (; i < n; ++i) s += a[i] * b[i];
  for (float v : acc) s += v;
  return s;
}

float g_dot_q8_0(const void* row, const float* x, int64_t n) {
  const auto* b = static_cast<const BlockQ8_0*>(row);
  float s = 0;
  for (int64_t i = 0; i < n / kQK8_0; ++i, x += kQK8_0) {
    float bs = 0;
    for (int j = 0; j < kQK8_0; ++j) bs += b[i].qs[j] * x[j];
    s += bs * fp16_to_fp32(b[i].d);
  }
  return s;
}

float g_dot_q4_0(const void* row, const float* x, int64_t n) {
  const auto* b = static_cast<const BlockQ4_0*>(row);
  float s = 0;
  for (int64_t i = 0; i < n / kQK4_0; ++i, x += kQK4_0) {
    float bs = 0;
    for (int j = 0; j < kQK4_0 / 2; ++j) {
      bs += ((b[i].qs[j] & 0x0F) - 8) * x[j];
      bs += ((b[i].qs[j] >> 4) - 8) * x[j + kQK4_0 / 2];
    }
    s += bs * fp16_to_fp32(b[i].d);
  }
  return s;
}

float g_dot_q4_1(const void* row, const float* x, int64_t n) {
  const auto* b = static_cast<const BlockQ4_1*>(row);
  float s = 0;
  for (int64_t i = 0; i < n / kQK4_1; ++i, x += kQK4_1) {
    float qx = 0, sx = 0;
    for (int j = 0; j < kQK4_1 / 2; ++j) {
      qx += (b[i].qs[j] & 0x0F) * x[j] + (b[i].qs[j] >> 4) * x[j + kQK4_1 / 2];
      sx += x[j] + x[j + kQK4_1 / 2];
    }
    s += qx * fp16_to_fp32(b[i].d) + sx * fp16_to_fp32(b[i].m);
  }
  return s;
}

float g_dot_f16(const void* row, const float* x, int64_t n) {
  const auto* h = static_cast<const uint16_t*>(row);
  float s = 0;
  for (int64_t i = 0; i < n; ++i) s += fp16_to_fp32(h[i]) * x[i];
  return s;
}

float g_dot_bf16(const void* row, const float* x, int64_t n) {
  const auto* h = static_cast<const uint16_t*>(row);
  float s = 0;
  for (int64_t i = 0; i < n; ++i) s += bf16_to_fp32(h[i]) * x[i];
  return s;
}

void g_axpy_f32(float a, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

void g_axpy_f16(float a, const uint16_t* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * fp16_to_fp32(x[i]);
}

void g_axpy_q8_0(float a, const void* row, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ8_0*>(row);
  for (int64_t i = 0; i < n / kQK8_0; ++i, y += kQK8_0) {
    const float ad = a * fp16_to_fp32(b[i].d);
    for (int j = 0; j < kQK8_0; ++j) y[j] += ad * b[i].qs[j];
  }
}

void g_axpy_q4_0(float a, const void* row, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ4_0*>(row);
  for (int64_t i = 0; i < n / kQK4_0; ++i, y += kQK4_0) {
    const float ad = a * fp16_to_fp32(b[i].d);
    for (int j = 0; j < kQK4_0 / 2; ++j) {
      y[j] += ad * ((b[i].qs[j] & 0x0F) - 8);
      y[j + kQK4_0 / 2] += ad * ((b[i].qs[j] >> 4) - 8);
    }
  }
}

// Unpacks the 32 codes of one group into floats through the byte table.
void unpack32(const uint8_t* codes, int bits, float* out) {
  const float* lut = kivi_lut(bits);
  const int per_byte = 8 / bits;
  for (int i = 0; i < 32 / per_byte; ++i)
    for (int j = 0; j < per_byte; ++j) out[i * per_byte + j] = lut[codes[i] * per_byte + j];
}

void g_kivi_keys(const uint16_t* scale, const uint16_t* mn, const uint8_t* codes, int64_t group_stride,
                 int64_t n_groups, int64_t d, int bits, const float* q, int64_t q_stride, int nq, float* sc,
                 int64_t sc_stride) {
  const int64_t cb = 4 * bits;
  std::vector<float> qs(static_cast<size_t>(d));
  float c32[32];
  for (int64_t g = 0; g < n_groups; ++g) {
    const int64_t e0 = g * group_stride;
    for (int i = 0; i < nq; ++i) {
      const float* qi = q + i * q_stride;
      float* s = sc + i * sc_stride + 32 * g;
      float beta = 0.0f;
      for (int64_t c = 0; c < d; ++c) {
        qs[c] = qi[c] * fp16_to_fp32(scale[e0 + c]);
        beta += qi[c] * fp16_to_fp32(mn[e0 + c]);
      }
      std::fill(s, s + 32, 0.0f);
      for (int64_t c = 0; c < d; ++c) {
        unpack32(codes + (e0 + c) * cb, bits, c32);
        for (int t = 0; t < 32; ++t) s[t] += qs[c] * c32[t];
      }
      for (int t = 0; t < 32; ++t) s[t] += beta;
    }
  }
}

void g_kivi_values(const uint16_t* scale, const uint16_t* mn, const uint8_t* codes, int64_t token_stride, int64_t n,
                   int64_t d, int bits, const float* p, int64_t p_stride, int nq, float* out, int64_t out_stride) {
  const int64_t cb = 4 * bits;
  float c32[32];
  for (int i = 0; i < nq; ++i) {
    for (int64_t j = 0; j < d / 32; ++j) {
      float* o = out + i * out_stride + 32 * j;
      float msum = 0.0f;
      for (int64_t t = 0; t < n; ++t) {
        const int64_t e = t * token_stride + j;
        const float pt = p[i * p_stride + t], ps = pt * fp16_to_fp32(scale[e]);
        msum += pt * fp16_to_fp32(mn[e]);
        unpack32(codes + e * cb, bits, c32);
        for (int c = 0; c < 32; ++c) o[c] += ps * c32[c];
      }
      for (int c = 0; c < 32; ++c) o[c] += msum;
    }
  }
}

void g_quantize_q8a(const float* x, int64_t n, BlockQ8A* out) {
  for (int64_t b = 0; b < n / 32; ++b, x += 32) {
    float amax = 0;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[i]));
    const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    int sum = 0;
    for (int i = 0; i < 32; ++i) {
      const int q = static_cast<int>(std::nearbyint(x[i] * id));  // half-to-even, like the SIMD paths
      out[b].qs[i] = static_cast<int8_t>(q);
      sum += q;
    }
    out[b].d = d;
    out[b].s = d * static_cast<float>(sum);
  }
}

// The per-block definition every table follows bit for bit (kernels.h): exact integer dot, then
// acc = fma(d_w * d_x, dot, acc) and, for Q4, acc = fma(m_w, s_x, acc).
float g_dot_q8_0_q8a(const void* row, const BlockQ8A* x, int64_t n) {
  const auto* w = static_cast<const BlockQ8_0*>(row);
  float acc = 0;
  for (int64_t b = 0; b < n / 32; ++b) {
    int sum = 0;
    for (int i = 0; i < 32; ++i) sum += w[b].qs[i] * x[b].qs[i];
    acc = std::fma(fp16_to_fp32(w[b].d) * x[b].d, static_cast<float>(sum), acc);
  }
  return acc;
}

// Q4_0 and Q4_1 on unsigned nibbles (0..15) with a minimum: m = -8 d for Q4_0, the stored one for Q4_1.
template <typename Block>
float dot_q4_q8a(const Block* w, const BlockQ8A* x, int64_t n) {
  float acc = 0;
  for (int64_t b = 0; b < n / 32; ++b) {
    int sum = 0;
    for (int i = 0; i < 16; ++i) sum += (w[b].qs[i] & 0x0F) * x[b].qs[i] + (w[b].qs[i] >> 4) * x[b].qs[i + 16];
    const float d = fp16_to_fp32(w[b].d);
    float m;
    if constexpr (std::is_same_v<Block, BlockQ4_1>)
      m = fp16_to_fp32(w[b].m);
    else
      m = -8.0f * d;
    acc = std::fma(d * x[b].d, static_cast<float>(sum), acc);
    acc = std::fma(m, x[b].s, acc);
  }
  return acc;
}

float g_dot_q4_0_q8a(const void* row, const BlockQ8A* x, int64_t n) {
  return dot_q4_q8a(static_cast<const BlockQ4_0*>(row), x, n);
}
float g_dot_q4_1_q8a(const void* row, const BlockQ8A* x, int64_t n) {
  return dot_q4_q8a(static_cast<const BlockQ4_1*>(row), x, n);
}

void g_f16_to_f32_row(const uint16_t* src, float* dst, int64_t n) {
  dequantize_row(GgmlType::F16, src, dst, n);
}
void g_f32_to_f16_row(const float* src, uint16_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = fp32_to_fp16(src[i]);
}

void g_accumulate_f16(const float* p, const uint16_t* rows, int64_t stride, int64_t n, float* out, int64_t d) {
  for (int64_t j = 0; j < n; ++j) g_axpy_f16(p[j], rows + j * stride, out, d);
}

void g_dot_keys_f16(const float* q, const uint16_t* rows, int64_t stride, int64_t n, float* scores, int64_t d) {
  for (int64_t j = 0; j < n; ++j) scores[j] = g_dot_f16(rows + j * stride, q, d);
}

void g_accumulate_q8_0(const float* p, const uint8_t* rows, int64_t stride, int64_t n, float* out, int64_t d) {
  for (int64_t j = 0; j < n; ++j) g_axpy_q8_0(p[j], rows + j * stride, out, d);
}

void g_dot_keys_q8_0(const float* q, const uint8_t* rows, int64_t stride, int64_t n, float* scores, int64_t d) {
  for (int64_t j = 0; j < n; ++j) scores[j] = g_dot_q8_0(rows + j * stride, q, d);
}

void g_accumulate_q4_0(const float* p, const uint8_t* rows, int64_t stride, int64_t n, float* out, int64_t d) {
  for (int64_t j = 0; j < n; ++j) g_axpy_q4_0(p[j], rows + j * stride, out, d);
}

void g_dot_keys_q4_0(const float* q, const uint8_t* rows, int64_t stride, int64_t n, float* scores, int64_t d) {
  for (int64_t j = 0; j < n; ++j) scores[j] = g_dot_q4_0(rows + j * stride, q, d);
}

float g_exp_shift_sum(float* x, int64_t n, float max) {
  float sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += x[i] = std::exp(x[i] - max);
  return sum;
}

void g_silu_mul(float* gate, const float* up, int64_t n) {
  for (int64_t i = 0; i < n; ++i) gate[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

void g_accumulate_f32(const float* p, const float* rows, int64_t stride, int64_t n, float* out, int64_t d) {
  for (int64_t j = 0; j < n; ++j) g_axpy_f32(p[j], rows + j * stride, out, d);
}

// The same sequential sum as g_dot_f16 (an f32 cache scores like an f16 one holding the same values).
void g_dot_keys_f32(const float* q, const float* rows, int64_t stride, int64_t n, float* scores, int64_t d) {
  for (int64_t j = 0; j < n; ++j) {
    float s = 0;
    for (int64_t i = 0; i < d; ++i) s += rows[j * stride + i] * q[i];
    scores[j] = s;
  }
}

void g_dot_keys_block_f16(const float* q, int64_t q_stride, int64_t nq, const int64_t* n_of, const uint16_t* rows,
                          int64_t stride, float* scores, int64_t sc_stride, int64_t d) {
  for (int64_t i = 0; i < nq; ++i) g_dot_keys_f16(q + i * q_stride, rows, stride, n_of[i], scores + i * sc_stride, d);
}

void g_accumulate_block_f16(const float* p, int64_t p_stride, int64_t np, const int64_t* n_of, const uint16_t* rows,
                            int64_t stride, float* out, int64_t out_stride, int64_t d) {
  for (int64_t i = 0; i < np; ++i) g_accumulate_f16(p + i * p_stride, rows, stride, n_of[i], out + i * out_stride, d);
}

}  // namespace

KernelTable generic_kernels() {
  return {"generic",
          g_dot_f32,
          g_dot_q8_0,
          g_dot_q4_0,
          g_dot_q4_1,
          g_dot_f16,
          g_dot_bf16,
          g_axpy_f32,
          g_axpy_f16,
          g_axpy_q8_0,
          g_axpy_q4_0,
          g_kivi_keys,
          g_kivi_values,
          g_quantize_q8a,
          g_dot_q8_0_q8a,
          g_dot_q4_0_q8a,
          g_dot_q4_1_q8a,
          gemm_q8a_generic,
          gemm_f32_generic,
          g_f16_to_f32_row,
          g_accumulate_f16,
          g_accumulate_q8_0,
          g_dot_keys_q8_0,
          g_dot_keys_f16,
          g_exp_shift_sum,
          g_accumulate_q4_0,
          g_dot_keys_q4_0,
          gemm_s8_generic,
          g_silu_mul,
          g_accumulate_f32,
          g_dot_keys_f32,
          gemm_f16_generic,
          g_dot_keys_block_f16,
          g_accumulate_block_f16,
          g_f32_to_f16_row};
}

}  // namespace pyrt::cpu
