// KIVI (SPEC 4.1) on the GPU: quantizing groups of a fp16 window into the layout the decode kernel reads
// (KiviCache), with the CPU quantizer's arithmetic step for step (kivi_quantize_group in
// memory/kv_store.cpp: clip search, fp16-rounded scale and minimum, round-half-even codes), every
// operation spelled with __f*_rn so nvcc cannot fuse it into an FMA the CPU does not do; and fp16 copies
// of a KIVI cache's tokens for prefill attention.
#include "common.cuh"
#include "pyrt_cuda.h"

namespace pyrt::cuda {
namespace {

__device__ __forceinline__ float round16(float x) {
  return __half2float(__float2half_rn(x));
}

__device__ __forceinline__ int kivi_code(float x, float m, float s, int qmax) {
  return static_cast<int>(rintf(fminf(fmaxf(__fdiv_rn(__fsub_rn(x, m), s), 0.0f), static_cast<float>(qmax))));
}

// One group of n fp16 values `stride` apart -> fp16 scale / min and packed codes (LSB first).
__device__ void quantize_group(const half* x, int n, int stride, int bits, bool clip, half* scale, half* mn,
                               uint8_t* codes) {
  float lo = __half2float(x[0]), hi = lo;
  for (int i = 1; i < n; ++i) {
    const float v = __half2float(x[i * stride]);
    lo = fminf(lo, v);
    hi = fmaxf(hi, v);
  }
  const int qmax = (1 << bits) - 1;
  if (clip && hi > lo) {  // plain min-max first: it wins ties
    constexpr int kSteps = 8;
    constexpr float kStep = 0.04f;
    const float range = __fsub_rn(hi, lo), unit = __fmul_rn(range, kStep);
    float best = INFINITY, best_lo = lo, best_hi = hi;
    for (int a = 0; a <= kSteps; ++a) {
      for (int b = 0; b <= kSteps; ++b) {
        const float l = __fadd_rn(lo, __fmul_rn(unit, static_cast<float>(a)));
        const float h = __fsub_rn(hi, __fmul_rn(unit, static_cast<float>(b)));
        const float m = round16(l), s = round16(__fdiv_rn(__fsub_rn(h, l), static_cast<float>(qmax)));
        if (!(s > 0.0f)) continue;
        float err = 0.0f;
        for (int i = 0; i < n; ++i) {
          const float xi = __half2float(x[i * stride]);
          const float r = __fsub_rn(__fadd_rn(__fmul_rn(static_cast<float>(kivi_code(xi, m, s, qmax)), s), m), xi);
          err = __fadd_rn(err, __fmul_rn(r, r));
        }
        if (err < best) best = err, best_lo = l, best_hi = h;
      }
    }
    lo = best_lo, hi = best_hi;
  }
  *mn = __float2half_rn(lo);
  *scale = __float2half_rn(__fdiv_rn(__fsub_rn(hi, lo), static_cast<float>(qmax)));
  const float m = __half2float(*mn), s = __half2float(*scale);
  const int per_byte = 8 / bits;
  for (int i = 0; i < (n + per_byte - 1) / per_byte; ++i) codes[i] = 0;
  if (s == 0.0f) return;  // constant group: codes 0, the minimum carries the value
  for (int i = 0; i < n; ++i)
    codes[i / per_byte] |=
        static_cast<uint8_t>(kivi_code(__half2float(x[i * stride]), m, s, qmax) << ((i % per_byte) * bits));
}

// Keys: entry e = g * row + ch over tokens g * G .. g * G + G - 1 of channel ch. Values: entry
// e = t * (row / G) + j over channels j * G .. j * G + G - 1 of token t. One thread per entry.
__global__ void quantize_kernel(bool keys, const half* rows, int n_entries, int row, int group, int bits, bool clip,
                                half* scale, half* mn, uint8_t* codes) {
  const int e = blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= n_entries) return;
  const half* x = keys ? rows + size_t(e / row) * group * row + e % row : rows + size_t(e) * group;
  const int stride = keys ? row : 1;
  quantize_group(x, group, stride, bits, clip, scale + e, mn + e, codes + size_t(e) * (group * bits / 8));
}

}  // namespace

cudaError_t kivi_quantize(bool keys, const half* rows, int n_tokens, int row, int group, int bits, bool clip,
                          half* scale, half* mn, uint8_t* codes, cudaStream_t stream) {
  if (n_tokens < 0 || row <= 0 || group <= 0 || (bits != 2 && bits != 4) || (group * bits) % 8 != 0)
    return cudaErrorInvalidValue;
  if (keys ? n_tokens % group != 0 : row % group != 0) return cudaErrorInvalidValue;
  const int n_entries = keys ? n_tokens / group * row : n_tokens * (row / group);
  if (n_entries == 0) return cudaSuccess;
  PYRT_LAUNCH(blocks_for(n_entries, 128), 128, 0, stream, quantize_kernel)(keys, rows, n_entries, row, group, bits,
                                                                           clip, scale, mn, codes);
  return cudaGetLastError();
}

}  // namespace pyrt::cuda
