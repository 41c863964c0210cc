#include "backends/cpu/kernels.h"

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>
#if defined(PYRT_HAVE_NEON_KERNELS) && defined(__linux__)
#include <sys/auxv.h>
#endif

#include "pyrt/error.h"

namespace pyrt::cpu {

#if defined(PYRT_HAVE_NEON_KERNELS)
bool cpu_has_dotprod() {
#if defined(__linux__) && defined(HWCAP_ASIMDDP)
  return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#elif defined(__APPLE__)
  return true;  // every Apple arm64 core has it
#else
  return false;
#endif
}
#endif

namespace {
KernelTable pick() {
#if defined(PYRT_HAVE_NEON_KERNELS)
  return cpu_has_dotprod() ? neon_dotprod_kernels() : neon_kernels();
#endif
#if defined(PYRT_HAVE_AVX2_KERNELS)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")) {
    return avx2_kernels();
  }
#endif
  return generic_kernels();
}
KernelTable& active() {
  static KernelTable t = pick();
  return t;
}
}  // namespace

const KernelTable& kernels() {
  return active();
}

bool set_kernels(const char* name) {
  if (std::strcmp(name, "generic") == 0) {
    active() = generic_kernels();
    return true;
  }
#if defined(PYRT_HAVE_AVX2_KERNELS)
  if (std::strcmp(name, "avx2") == 0 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    active() = avx2_kernels();
    return true;
  }
#endif
#if defined(PYRT_HAVE_NEON_KERNELS)
  if (std::strcmp(name, "neon") == 0) {
    active() = neon_kernels();
    return true;
  }
  if (std::strcmp(name, "neon-dotprod") == 0 && cpu_has_dotprod()) {
    active() = neon_dotprod_kernels();
    return true;
  }
#endif
  if (std::strcmp(name, "auto") == 0) {
    active() = pick();
    return true;
  }
  return false;
}

float dot_row(const KernelTable& k, GgmlType type, const void* row, const float* x, int64_t n) {
  switch (type) {
    case GgmlType::F32: return k.dot_f32(static_cast<const float*>(row), x, n);
    case GgmlType::F16: return k.dot_f16(row, x, n);
    case GgmlType::BF16: return k.dot_bf16(row, x, n);
    case GgmlType::Q8_0: return k.dot_q8_0(row, x, n);
    case GgmlType::Q4_0: return k.dot_q4_0(row, x, n);
    case GgmlType::Q4_1: return k.dot_q4_1(row, x, n);
    default: fail(ErrorCode::kUnsupported, "no CPU kernel for tensor type " + type_name(static_cast<uint32_t>(type)));
  }
}

PeakRates measure_peak(int threads) {
  PeakRates out;
#if defined(PYRT_HAVE_AVX2_KERNELS)
  if (std::strcmp(kernels().name, "avx2") != 0) return out;
  auto rate = [threads](double (*probe)(int64_t), double ops_per_iter) {
    constexpr int64_t kIters = 20'000'000;
    double best = 0;
    for (int rep = 0; rep < 3; ++rep) {
      std::vector<std::thread> pool;
      std::atomic<double> sink{0};
      const auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < threads; ++i) pool.emplace_back([&] { sink = sink + probe(kIters); });
      for (auto& t : pool) t.join();
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      best = std::max(best, threads * kIters * ops_per_iter / s / 1e9);
    }
    return best;
  };
  out.fp32_gflops = rate(avx2_probe_fp32, 192);
  out.int8_gops = rate(avx2_probe_int8, 512);
#else
  (void)threads;
#endif
  return out;
}

bool has_q8a_dot(GgmlType type) {
  return type == GgmlType::Q8_0 || type == GgmlType::Q4_0 || type == GgmlType::Q4_1;
}

float dot_row_q8a(const KernelTable& k, GgmlType type, const void* row, const BlockQ8A* x, int64_t n) {
  switch (type) {
    case GgmlType::Q8_0: return k.dot_q8_0_q8a(row, x, n);
    case GgmlType::Q4_0: return k.dot_q4_0_q8a(row, x, n);
    case GgmlType::Q4_1: return k.dot_q4_1_q8a(row, x, n);
    default: fail(ErrorCode::kUnsupported, "no integer CPU kernel for " + type_name(static_cast<uint32_t>(type)));
  }
}

void gemm_q8a_generic(GgmlType type, const uint8_t* rows, size_t row_stride, int64_t n_rows, const BlockQ8A* x,
                      int64_t n_tok, int64_t K, float* y, int64_t ldy) {
  const KernelTable g = generic_kernels();
  for (int64_t r = 0; r < n_rows; ++r)
    for (int64_t t = 0; t < n_tok; ++t)
      y[t * ldy + r] = dot_row_q8a(g, type, rows + r * row_stride, x + t * (K / 32), K);
}

void gemm_f32_generic(const float* rows, int64_t n_rows, const float* x, int64_t n_tok, int64_t K, float* y,
                      int64_t ldy) {
  const KernelTable g = generic_kernels();
  for (int64_t r = 0; r < n_rows; ++r)
    for (int64_t t = 0; t < n_tok; ++t) y[t * ldy + r] = g.dot_f32(x + t * K, rows + r * K, K);
}

void gemm_f16_generic(const uint16_t* rows, int64_t stride, int64_t n_rows, const float* x, int64_t n_tok, int64_t K,
                      float* y, int64_t ldy) {
  const KernelTable g = generic_kernels();
  for (int64_t r = 0; r < n_rows; ++r)
    for (int64_t t = 0; t < n_tok; ++t) y[t * ldy + r] = g.dot_f16(rows + r * stride, x + t * K, K);
}

void gemm_s8_generic(const int8_t* rows, int64_t n_rows, const int8_t* x, int64_t n_tok, int64_t K, int32_t* acc,
                     int64_t ldy) {
  for (int64_t t = 0; t < n_tok; ++t) {
    for (int64_t r = 0; r < n_rows; ++r) {
      int32_t s = 0;
      for (int64_t k = 0; k < K; ++k) s += int32_t(x[t * K + k]) * int32_t(rows[r * K + k]);
      acc[t * ldy + r] = s;
    }
  }
}

void dequantize_row_fast(const KernelTable& k, GgmlType type, const void* src, float* dst, int64_t n) {
  if (type == GgmlType::F16) return k.f16_to_f32_row(static_cast<const uint16_t*>(src), dst, n);
  dequantize_row(type, src, dst, n);
}

const float* kivi_lut(int bits) {
  struct Luts {
    float two[256][4], four[256][2];
    Luts() {
      for (int b = 0; b < 256; ++b) {
        for (int j = 0; j < 4; ++j) two[b][j] = static_cast<float>((b >> (2 * j)) & 3);
        for (int j = 0; j < 2; ++j) four[b][j] = static_cast<float>((b >> (4 * j)) & 15);
      }
    }
  };
  static const Luts luts;
  return bits == 2 ? &luts.two[0][0] : &luts.four[0][0];
}

void axpy_row(const KernelTable& k, GgmlType type, float a, const void* row, float* y, int64_t n) {
  switch (type) {
    case GgmlType::F32: return k.axpy_f32(a, static_cast<const float*>(row), y, n);
    case GgmlType::F16: return k.axpy_f16(a, static_cast<const uint16_t*>(row), y, n);
    case GgmlType::Q8_0: return k.axpy_q8_0(a, row, y, n);
    case GgmlType::Q4_0: return k.axpy_q4_0(a, row, y, n);
    default: fail(ErrorCode::kUnsupported, "no CPU axpy kernel for " + type_name(static_cast<uint32_t>(type)));
  }
}

}  // namespace pyrt::cpu
