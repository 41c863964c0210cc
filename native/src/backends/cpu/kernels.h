// CPU inner kernels behind one dispatch table. kernels_generic.cpp is the living definition;
// ISA-specific files (AVX2 now, NEON next) must match it within float reassociation error.
#pragma once
#include <cstdint>

#include "pyrt/ggml_types.h"

namespace pyrt::cpu {

// Activations quantized to 8 bits in blocks of 32 (an in-memory format, never written to files):
// scale d, s = d * sum(qs) (the minimum term of Q4_1 dots), and the codes. Quantized weights times
// these run as integer dot products.
struct BlockQ8A {
  float d, s;
  int8_t qs[32];
};

struct KernelTable {
  const char* name;
  float (*dot_f32)(const float* a, const float* b, int64_t n);
  // Fused dequantize + dot of one weight row (type F32/F16/BF16/Q8_0/Q4_0/Q4_1) with float x.
  float (*dot_q8_0)(const void* row, const float* x, int64_t n);
  float (*dot_q4_0)(const void* row, const float* x, int64_t n);
  float (*dot_q4_1)(const void* row, const float* x, int64_t n);
  float (*dot_f16)(const void* row, const float* x, int64_t n);
  float (*dot_bf16)(const void* row, const float* x, int64_t n);
  void (*axpy_f32)(float a, const float* x, float* y, int64_t n);  // y += a*x
  void (*axpy_f16)(float a, const uint16_t* x, float* y, int64_t n);
  void (*axpy_q8_0)(float a, const void* row, float* y, int64_t n);  // y += a * dequant(row)
  void (*axpy_q4_0)(float a, const void* row, float* y, int64_t n);
  // KIVI (SPEC 4.1) read in place over a whole range of one head's cache: groups of 32 with b-bit codes
  // packed LSB first (b = 2 or 4, cb = 4 b bytes per group) and an fp16 scale and minimum per group
  // (entry e: scale[e], mn[e], codes at codes + e * cb). nq query heads at once (GQA heads share one
  // unpacking of the codes; each query's arithmetic is the same as alone). The fused forms:
  // keys, n_groups groups of 32 tokens, group g / channel c at entry g * group_stride + c:
  //   sc[i * sc_stride + 32 g + t] = sum_c (q_ic s_gc) code_gct + sum_c q_ic mn_gc
  void (*kivi_keys)(const uint16_t* scale, const uint16_t* mn, const uint8_t* codes, int64_t group_stride,
                    int64_t n_groups, int64_t d, int bits, const float* q, int64_t q_stride, int nq, float* sc,
                    int64_t sc_stride);
  // values, n tokens, token t / channel group j (channels 32 j ..) at entry t * token_stride + j:
  //   out[i * out_stride + c] += sum_t (p_it s_tj) code_tc + sum_t p_it mn_tj
  void (*kivi_values)(const uint16_t* scale, const uint16_t* mn, const uint8_t* codes, int64_t token_stride, int64_t n,
                      int64_t d, int bits, const float* p, int64_t p_stride, int nq, float* out, int64_t out_stride);
  // x (n % 32 == 0) -> BlockQ8A: d = max|x| / 127, codes = round-half-even(x / d).
  void (*quantize_q8a)(const float* x, int64_t n, BlockQ8A* out);
  // Weight row . quantized activations with integer block dots. Every table computes, block by block,
  // the exact integer dot of the codes (Q4: unsigned nibbles 0..15) and then acc = fma(d_w * d_x, dot,
  // acc), for Q4 followed by acc = fma(m_w, s_x, acc) (m_w = -8 d_w for Q4_0): results agree bit for bit
  // across tables and between the dots and gemm_q8a, whatever the token count.
  float (*dot_q8_0_q8a)(const void* row, const BlockQ8A* x, int64_t n);
  float (*dot_q4_0_q8a)(const void* row, const BlockQ8A* x, int64_t n);
  float (*dot_q4_1_q8a)(const void* row, const BlockQ8A* x, int64_t n);
  // Blocked products, y[t * ldy + r] = row_r . x_t for r < n_rows, t < n_tok: quantized rows
  // (Q8_0/Q4_0/Q4_1, row_stride bytes apart) with 8-bit activations (K / 32 blocks per token), and
  // float rows (K apart) with float activations. ISA versions reuse each loaded weight block for
  // several tokens (register tiles); the generic ones are loops over the dots.
  void (*gemm_q8a)(GgmlType type, const uint8_t* rows, size_t row_stride, int64_t n_rows, const BlockQ8A* x,
                   int64_t n_tok, int64_t K, float* y, int64_t ldy);
  void (*gemm_f32)(const float* rows, int64_t n_rows, const float* x, int64_t n_tok, int64_t K, float* y, int64_t ldy);
  void (*f16_to_f32_row)(const uint16_t* src, float* dst, int64_t n);
  // out[0..d) += sum_j p[j] * row_j for n fp16 rows `stride` elements apart (attention's value sum;
  // ISA versions keep `out` in registers across the rows instead of a load/store per row).
  void (*accumulate_f16)(const float* p, const uint16_t* rows, int64_t stride, int64_t n, float* out, int64_t d);
  // The same two over Q8_0 rows (`stride` bytes apart), d a multiple of 32.
  void (*accumulate_q8_0)(const float* p, const uint8_t* rows, int64_t stride, int64_t n, float* out, int64_t d);
  void (*dot_keys_q8_0)(const float* q, const uint8_t* rows, int64_t stride, int64_t n, float* scores, int64_t d);
  // scores[j] = q . row_j for n fp16 rows `stride` elements apart (attention's key scores).
  void (*dot_keys_f16)(const float* q, const uint16_t* rows, int64_t stride, int64_t n, float* scores, int64_t d);
  // Softmax numerator: x[i] = exp(x[i] - max), returns the sum (attention over long contexts).
  float (*exp_shift_sum)(float* x, int64_t n, float max);
  // The value-sum and key-score kernels over Q4_0 rows (the q4_0 KV cache).
  void (*accumulate_q4_0)(const float* p, const uint8_t* rows, int64_t stride, int64_t n, float* out, int64_t d);
  void (*dot_keys_q4_0)(const float* q, const uint8_t* rows, int64_t stride, int64_t n, float* scores, int64_t d);
  // W8A8 (the NPU path's integer core): acc[t * ldy + r] = sum_k x[t * K + k] * rows[r * K + k] in int32.
  // Integer sums are exact in any order, so every ISA version returns the same numbers bit for bit.
  void (*gemm_s8)(const int8_t* rows, int64_t n_rows, const int8_t* x, int64_t n_tok, int64_t K, int32_t* acc,
                  int64_t ldy);
  // SwiGLU's elementwise step: gate[i] = gate[i] / (1 + exp(-gate[i])) * up[i].
  void (*silu_mul)(float* gate, const float* up, int64_t n);
  // accumulate / dot_keys over fp32 rows (`stride` floats apart; the f32 KV cache), with the same
  // arithmetic as the fp16 versions on converted rows.
  void (*accumulate_f32)(const float* p, const float* rows, int64_t stride, int64_t n, float* out, int64_t d);
  void (*dot_keys_f32)(const float* q, const float* rows, int64_t stride, int64_t n, float* scores, int64_t d);
  // gemm_f32 over fp16 rows (`stride` elements apart) read in place, no dequantized copy.
  void (*gemm_f16)(const uint16_t* rows, int64_t stride, int64_t n_rows, const float* x, int64_t n_tok, int64_t K,
                   float* y, int64_t ldy);
  // Prefill's attention over fp16 rows (`stride` elements apart), nq query rows at once, row i over its
  // first n_of[i] keys: scores row i = dot_keys_f16(q_i, n_of[i]), out row i += accumulate_f16(p_i,
  // n_of[i]), bit for bit (each row's arithmetic is the single call's), so a prompt's attention gives
  // decode's numbers. accumulate_block_f16 reads p rows up to the largest n_of: p[i][j] must be 0 for
  // j >= n_of[i].
  void (*dot_keys_block_f16)(const float* q, int64_t q_stride, int64_t nq, const int64_t* n_of, const uint16_t* rows,
                             int64_t stride, float* scores, int64_t sc_stride, int64_t d);
  void (*accumulate_block_f16)(const float* p, int64_t p_stride, int64_t np, const int64_t* n_of, const uint16_t* rows,
                               int64_t stride, float* out, int64_t out_stride, int64_t d);
  // fp32 -> fp16, round to nearest even: fp32_to_fp16's bits for every non-NaN input (NaNs stay NaNs).
  // The f16 KV cache stores every prompt row through it.
  void (*f32_to_f16_row)(const float* src, uint16_t* dst, int64_t n);
};

// code -> float tables for one byte of packed KIVI codes (LSB first): 4 codes of 2 bits, 2 of 4 bits.
const float* kivi_lut(int bits);

KernelTable generic_kernels();
#if defined(PYRT_HAVE_AVX2_KERNELS)
KernelTable avx2_kernels();
#endif
#if defined(PYRT_HAVE_NEON_KERNELS)
KernelTable neon_kernels();
KernelTable neon_dotprod_kernels();
bool cpu_has_dotprod();
#endif

#if defined(PYRT_HAVE_AVX2_KERNELS)
double avx2_probe_fp32(int64_t iters);  // 192 flops per iteration
double avx2_probe_int8(int64_t iters);  // 512 int8 ops (vpmaddubsw only) per iteration
#endif
// Measured peak of `threads` threads running FMA (fp32) and int8 multiply-add chains concurrently:
// the numerator of the prefill bound. Zero where this build has no probe for the CPU.
struct PeakRates {
  double fp32_gflops = 0, int8_gops = 0;
};
PeakRates measure_peak(int threads);

// The table picked for this CPU at first use.
const KernelTable& kernels();
// Force a table by name ("generic", "avx2", "neon", "neon-dotprod", "auto") — tests compare ISA paths
// against the generic one. Returns false for a table this build or CPU does not have.
bool set_kernels(const char* name);

float dot_row(const KernelTable& k, GgmlType type, const void* row, const float* x, int64_t n);
// Weight types with an integer path (row . BlockQ8A activations), and that dot.
bool has_q8a_dot(GgmlType type);
// The generic blocked products (also the definition the ISA versions are tested against).
void gemm_q8a_generic(GgmlType type, const uint8_t* rows, size_t row_stride, int64_t n_rows, const BlockQ8A* x,
                      int64_t n_tok, int64_t K, float* y, int64_t ldy);
void gemm_f32_generic(const float* rows, int64_t n_rows, const float* x, int64_t n_tok, int64_t K, float* y,
                      int64_t ldy);
void gemm_f16_generic(const uint16_t* rows, int64_t stride, int64_t n_rows, const float* x, int64_t n_tok, int64_t K,
                      float* y, int64_t ldy);
void gemm_s8_generic(const int8_t* rows, int64_t n_rows, const int8_t* x, int64_t n_tok, int64_t K, int32_t* acc,
                     int64_t ldy);
float dot_row_q8a(const KernelTable& k, GgmlType type, const void* row, const BlockQ8A* x, int64_t n);
// dequantize_row with the table's vector conversions where it has them (F16).
void dequantize_row_fast(const KernelTable& k, GgmlType type, const void* src, float* dst, int64_t n);
// y += a * row for row types F32, F16, Q8_0, Q4_0 (value side of attention over a quantized cache).
void axpy_row(const KernelTable& k, GgmlType type, float a, const void* row, float* y, int64_t n);

}  // namespace pyrt::cpu
