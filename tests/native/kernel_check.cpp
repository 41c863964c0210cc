// Native kernel check: every CPU kernel table this build has (generic + AVX2 on x86-64; generic,
// NEON and NEON+dotprod on AArch64) against float64 references on tail sizes. tests/unit/
// test_native_kernels.py builds it natively and cross-compiled for aarch64, and runs the latter
// under qemu-aarch64 (timings there mean nothing; results must be right). Prints one line per table
// and check; exits 1 on the first failure with what failed.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backends/cpu/kernels.h"
#include "pyrt/ggml_types.h"

using namespace pyrt;

namespace {

std::mt19937 rng(1234);

std::vector<float> randn(int64_t n, float scale = 1.0f) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = d(rng);
  return v;
}

[[noreturn]] void fail(const std::string& table, const std::string& what) {
  std::printf("FAIL %s: %s\n", table.c_str(), what.c_str());
  std::exit(1);
}

void near(const std::string& table, const std::string& what, double got, double want, double scale) {
  if (!(std::fabs(got - want) <= 1e-5 * scale + 1e-6)) {
    fail(table, what + ": got " + std::to_string(got) + ", want " + std::to_string(want));
  }
}

std::vector<uint8_t> quantize(GgmlType t, const std::vector<float>& w) {
  const int64_t n = static_cast<int64_t>(w.size());
  std::vector<uint8_t> out(row_bytes(t, n));
  if (t == GgmlType::Q8_0) quantize_row_q8_0(w.data(), reinterpret_cast<BlockQ8_0*>(out.data()), n);
  if (t == GgmlType::Q4_0) quantize_row_q4_0(w.data(), reinterpret_cast<BlockQ4_0*>(out.data()), n);
  if (t == GgmlType::Q4_1) quantize_row_q4_1(w.data(), reinterpret_cast<BlockQ4_1*>(out.data()), n);
  return out;
}

void check_table(const std::string& name) {
  if (!cpu::set_kernels(name.c_str())) fail(name, "table not available");
  const cpu::KernelTable& k = cpu::kernels();
  const cpu::KernelTable g = cpu::generic_kernels();
  // Float dots, axpy, fp16 conversion.
  for (int64_t n : {1, 7, 31, 32, 33, 255, 4097}) {
    auto a = randn(n), b = randn(n);
    double want = 0, scale = 0;
    for (int64_t i = 0; i < n; ++i) want += double(a[i]) * b[i], scale += std::fabs(double(a[i]) * b[i]);
    near(name, "dot_f32 n=" + std::to_string(n), k.dot_f32(a.data(), b.data(), n), want, scale);
    std::vector<uint16_t> h(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) h[i] = fp32_to_fp16(a[i]);
    want = scale = 0;
    for (int64_t i = 0; i < n; ++i) want += double(fp16_to_fp32(h[i])) * b[i], scale += std::fabs(double(a[i]) * b[i]);
    near(name, "dot_f16 n=" + std::to_string(n), k.dot_f16(h.data(), b.data(), n), want, scale);
    std::vector<float> conv(static_cast<size_t>(n)), y = b, yh = b;
    k.f16_to_f32_row(h.data(), conv.data(), n);
    k.axpy_f32(0.5f, a.data(), y.data(), n);
    k.axpy_f16(0.5f, h.data(), yh.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      if (conv[i] != fp16_to_fp32(h[i])) fail(name, "f16_to_f32_row differs at " + std::to_string(i));
      near(name, "axpy_f32", y[i], b[i] + 0.5 * a[i], std::fabs(b[i]) + std::fabs(a[i]));
      near(name, "axpy_f16", yh[i], b[i] + 0.5 * fp16_to_fp32(h[i]), std::fabs(b[i]) + std::fabs(a[i]));
    }
  }
  // fp32 -> fp16 rows (the f16 KV cache): fp32_to_fp16's bits, including halfway cases (ties to even),
  // subnormal and overflowing magnitudes, zeros of both signs and infinities; NaN stays NaN.
  {
    std::vector<float> src;
    std::mt19937 bits_rng(7);
    for (int i = 0; i < 4096; ++i) {
      const uint32_t w = bits_rng();
      float f;
      std::memcpy(&f, &w, 4);
      src.push_back(f);  // every exponent, NaNs included
    }
    for (uint32_t h = 0; h < 0x7C00; h += 7) {  // exact halves and ties between neighbouring halves
      const float a = fp16_to_fp32(static_cast<uint16_t>(h)), b = fp16_to_fp32(static_cast<uint16_t>(h + 1));
      src.push_back(a), src.push_back(-a), src.push_back(0.5f * (a + b)), src.push_back(-0.5f * (a + b));
    }
    for (float f : {0.0f, -0.0f, 65504.0f, 65520.0f, 65519.99f, 1e-8f, 2.9802322e-08f, INFINITY, -INFINITY, NAN})
      src.push_back(f);
    for (int64_t n : {int64_t(src.size()), int64_t(7), int64_t(9)}) {
      std::vector<uint16_t> got(static_cast<size_t>(n));
      k.f32_to_f16_row(src.data(), got.data(), n);
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t want = fp32_to_fp16(src[i]);
        const bool both_nan = std::isnan(src[i]) && (got[i] & 0x7FFF) > 0x7C00 && (want & 0x7FFF) > 0x7C00;
        if (got[i] != want && !both_nan) fail(name, "f32_to_f16_row differs at " + std::to_string(i));
      }
    }
  }
  // Weighted sum of fp16 rows (attention values), head dims with and without full 64-column chunks.
  for (int64_t d : {8, 64, 80, 128, 7}) {
    const int64_t n = 37, stride = d + 16;
    auto pv = randn(n), base = randn(d), vals = randn(n * stride);
    std::vector<uint16_t> rows(static_cast<size_t>(n * stride));
    for (size_t i = 0; i < rows.size(); ++i) rows[i] = fp32_to_fp16(vals[i]);
    auto out = base;
    k.accumulate_f16(pv.data(), rows.data(), stride, n, out.data(), d);
    std::vector<float> sc(static_cast<size_t>(n));
    k.dot_keys_f16(base.data(), rows.data(), stride, n, sc.data(), d);
    for (int64_t j = 0; j < n; ++j) {
      double want = 0, scale = 0;
      for (int64_t c = 0; c < d; ++c) {
        want += double(base[c]) * fp16_to_fp32(rows[j * stride + c]);
        scale += std::fabs(double(base[c]) * fp16_to_fp32(rows[j * stride + c]));
      }
      near(name, "dot_keys_f16 d=" + std::to_string(d), sc[j], want, scale);
    }
    for (int64_t c = 0; c < d; ++c) {
      double want = base[c], scale = std::fabs(base[c]);
      for (int64_t j = 0; j < n; ++j) {
        want += double(pv[j]) * fp16_to_fp32(rows[j * stride + c]);
        scale += std::fabs(double(pv[j]) * fp16_to_fp32(rows[j * stride + c]));
      }
      near(name, "accumulate_f16 d=" + std::to_string(d), out[c], want, scale);
    }
  }
  // Prefill's blocked attention: every row's scores and value sums are the single calls' bits, for
  // causal (staggered) and equal key counts, query counts across the 3- and 6-row tiles, and head dims
  // on and off the vector paths (48: a half chunk; 80, 128: q re-read from L1; 7: scalar).
  for (int64_t d : {64, 48, 80, 128, 7}) {
    for (int64_t nq : {1, 5, 7, 13}) {
      for (bool causal : {true, false}) {
        const int64_t n_max = 45, stride = d + 8, q_stride = d + 3;
        std::vector<int64_t> n_of(static_cast<size_t>(nq));
        for (int64_t i = 0; i < nq; ++i) n_of[i] = causal ? n_max - (nq - 1 - i) * 3 : n_max;
        auto vals = randn(n_max * stride), q = randn(nq * q_stride), base = randn(nq * d);
        std::vector<uint16_t> rows(vals.size());
        for (size_t i = 0; i < rows.size(); ++i) rows[i] = fp32_to_fp16(vals[i]);
        std::vector<float> sc(static_cast<size_t>(nq * n_max), 0.0f), p(sc.size(), 0.0f);
        auto pr = randn(nq * n_max);
        for (int64_t i = 0; i < nq; ++i)
          for (int64_t j = 0; j < n_of[i]; ++j) p[i * n_max + j] = pr[i * n_max + j];
        auto out = base;
        k.dot_keys_block_f16(q.data(), q_stride, nq, n_of.data(), rows.data(), stride, sc.data(), n_max, d);
        k.accumulate_block_f16(p.data(), n_max, nq, n_of.data(), rows.data(), stride, out.data(), d, d);
        const std::string what = " d=" + std::to_string(d) + " nq=" + std::to_string(nq) + (causal ? " causal" : "");
        for (int64_t i = 0; i < nq; ++i) {
          std::vector<float> one(static_cast<size_t>(n_of[i]));
          k.dot_keys_f16(q.data() + i * q_stride, rows.data(), stride, n_of[i], one.data(), d);
          for (int64_t j = 0; j < n_of[i]; ++j)
            if (one[j] != sc[i * n_max + j]) fail(name, "dot_keys_block_f16 differs from dot_keys_f16" + what);
          std::vector<float> acc(base.begin() + i * d, base.begin() + (i + 1) * d);
          k.accumulate_f16(p.data() + i * n_max, rows.data(), stride, n_of[i], acc.data(), d);
          for (int64_t c = 0; c < d; ++c)
            if (acc[c] != out[i * d + c]) fail(name, "accumulate_block_f16 differs from accumulate_f16" + what);
        }
      }
    }
  }
  // The same over fp32 rows (the blocked prefill attention's converted blocks), every key count up to
  // two quads plus a tail.
  for (int64_t d : {8, 16, 64, 80, 128, 7}) {
    for (int64_t n : {1, 2, 3, 4, 5, 6, 7, 8, 9, 37}) {
      const int64_t stride = d + 4;
      auto pv = randn(n), base = randn(d), rows = randn(n * stride);
      auto out = base;
      std::vector<float> sc(static_cast<size_t>(n));
      k.accumulate_f32(pv.data(), rows.data(), stride, n, out.data(), d);
      k.dot_keys_f32(base.data(), rows.data(), stride, n, sc.data(), d);
      for (int64_t j = 0; j < n; ++j) {
        double want = 0, scale = 0;
        for (int64_t c = 0; c < d; ++c)
          want += double(base[c]) * rows[j * stride + c], scale += std::fabs(double(base[c]) * rows[j * stride + c]);
        near(name, "dot_keys_f32 d=" + std::to_string(d) + " n=" + std::to_string(n), sc[j], want, scale);
      }
      for (int64_t c = 0; c < d; ++c) {
        double want = base[c], scale = std::fabs(base[c]);
        for (int64_t j = 0; j < n; ++j)
          want += double(pv[j]) * rows[j * stride + c], scale += std::fabs(double(pv[j]) * rows[j * stride + c]);
        near(name, "accumulate_f32 d=" + std::to_string(d) + " n=" + std::to_string(n), out[c], want, scale);
      }
    }
  }
  // The same over Q8_0 and Q4_0 rows.
  for (GgmlType type : {GgmlType::Q8_0, GgmlType::Q4_0}) {
    const std::string tn = type == GgmlType::Q8_0 ? "q8_0" : "q4_0";
    const auto accumulate = type == GgmlType::Q8_0 ? k.accumulate_q8_0 : k.accumulate_q4_0;
    const auto dot_keys = type == GgmlType::Q8_0 ? k.dot_keys_q8_0 : k.dot_keys_q4_0;
    for (int64_t d : {32, 64, 128}) {
      const int64_t n = 29;
      const size_t stride = row_bytes(type, d) + 34;  // rows of a wider cache line, head at offset 0
      std::vector<uint8_t> rows(stride * n);
      std::vector<std::vector<float>> deq;
      for (int64_t j = 0; j < n; ++j) {
        auto q = quantize(type, randn(d));
        std::copy(q.begin(), q.end(), rows.begin() + j * stride);
        deq.emplace_back(static_cast<size_t>(d));
        dequantize_row(type, q.data(), deq.back().data(), d);
      }
      auto pv = randn(n), base = randn(d);
      auto out = base;
      std::vector<float> sc(static_cast<size_t>(n));
      accumulate(pv.data(), rows.data(), static_cast<int64_t>(stride), n, out.data(), d);
      dot_keys(base.data(), rows.data(), static_cast<int64_t>(stride), n, sc.data(), d);
      for (int64_t c = 0; c < d; ++c) {
        double want = base[c], scale = std::fabs(base[c]);
        for (int64_t j = 0; j < n; ++j)
          want += double(pv[j]) * deq[j][c], scale += std::fabs(double(pv[j]) * deq[j][c]);
        near(name, "accumulate_" + tn + " d=" + std::to_string(d), out[c], want, scale);
      }
      for (int64_t j = 0; j < n; ++j) {
        double want = 0, scale = 0;
        for (int64_t c = 0; c < d; ++c)
          want += double(base[c]) * deq[j][c], scale += std::fabs(double(base[c]) * deq[j][c]);
        near(name, "dot_keys_" + tn + " d=" + std::to_string(d), sc[j], want, scale);
      }
    }
  }
  // Softmax numerator: exp(x - max) within 1e-6 relative (and underflow to 0 far below the max).
  for (int64_t n : {1, 7, 8, 33, 4097}) {
    auto x = randn(n, 10.0f);
    if (n > 3) x[3] = -1e30f;
    float mx = -INFINITY;
    for (float v : x) mx = std::max(mx, v);
    auto y = x;
    const float sum = k.exp_shift_sum(y.data(), n, mx);
    double want_sum = 0;
    for (int64_t i = 0; i < n; ++i) {
      const double want = std::exp(double(x[i] - mx));  // the kernel subtracts in float, as the reference does
      want_sum += want;
      if (std::fabs(y[i] - want) > 1e-6 * want + 1e-30) fail(name, "exp_shift_sum element " + std::to_string(i));
    }
    near(name, "exp_shift_sum sum", sum, want_sum, want_sum);
  }
  // SwiGLU step: silu(g) * u within 1e-6 relative of float64, also for large |g| (exp(-g) overflow).
  for (int64_t n : {1, 7, 8, 33, 4097}) {
    auto g = randn(n, 6.0f);
    const auto u = randn(n, 1.0f);
    if (n > 3) g[1] = 120.0f, g[2] = -120.0f, g[3] = 0.0f;
    auto y = g;
    k.silu_mul(y.data(), u.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      const double want = double(g[i]) / (1.0 + std::exp(-double(g[i]))) * u[i];
      if (std::fabs(y[i] - want) > 1e-6 * std::fabs(want) + 1e-30) fail(name, "silu_mul element " + std::to_string(i));
    }
  }
  // 8-bit activations: the quantizer is bit-identical to the generic one; integer dots equal the
  // float64 product of the dequantized operands; the blocked GEMM equals its dots.
  for (int64_t n : {32, 64, 96, 576, 4128}) {
    auto x = randn(n, 3.0f);
    x[0] = 0;
    std::vector<cpu::BlockQ8A> qa(static_cast<size_t>(n / 32)), qg(qa.size());
    k.quantize_q8a(x.data(), n, qa.data());
    g.quantize_q8a(x.data(), n, qg.data());
    for (size_t b = 0; b < qa.size(); ++b) {
      if (qa[b].d != qg[b].d || std::fabs(qa[b].s - qg[b].s) > 1e-6f * std::fabs(qg[b].s))
        fail(name, "quantize_q8a scale");
      for (int i = 0; i < 32; ++i) {
        if (qa[b].qs[i] != qg[b].qs[i]) fail(name, "quantize_q8a code at block " + std::to_string(b));
      }
    }
    for (GgmlType t : {GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1}) {
      const std::string tn = type_name(static_cast<uint32_t>(t));
      const int64_t n_rows = 5, n_tok = 6;
      std::vector<uint8_t> rows;
      std::vector<std::vector<float>> deq;
      for (int64_t r = 0; r < n_rows; ++r) {
        auto w = randn(n);
        auto q = quantize(t, w);
        rows.insert(rows.end(), q.begin(), q.end());
        deq.emplace_back(static_cast<size_t>(n));
        dequantize_row(t, q.data(), deq.back().data(), n);
      }
      const size_t stride = row_bytes(t, n);
      std::vector<cpu::BlockQ8A> xs(static_cast<size_t>(n_tok * n / 32));
      std::vector<std::vector<float>> xf;
      for (int64_t j = 0; j < n_tok; ++j) {
        auto xt = randn(n, 2.0f);
        k.quantize_q8a(xt.data(), n, xs.data() + j * n / 32);
        xf.emplace_back(static_cast<size_t>(n));
        for (int64_t i = 0; i < n; ++i) xf.back()[i] = xs[j * n / 32 + i / 32].qs[i % 32] * xs[j * n / 32 + i / 32].d;
      }
      std::vector<float> y(static_cast<size_t>(n_tok * n_rows));
      k.gemm_q8a(t, rows.data(), stride, n_rows, xs.data(), n_tok, n, y.data(), n_rows);
      for (int64_t j = 0; j < n_tok; ++j) {
        for (int64_t r = 0; r < n_rows; ++r) {
          double want = 0, scale = 0;
          for (int64_t i = 0; i < n; ++i)
            want += double(deq[r][i]) * xf[j][i], scale += std::fabs(double(deq[r][i]) * xf[j][i]);
          const float dot = cpu::dot_row_q8a(k, t, rows.data() + r * stride, xs.data() + j * n / 32, n);
          near(name, "dot_" + tn + "_q8a n=" + std::to_string(n), dot, want, scale);
          near(name, "gemm_q8a " + tn + " n=" + std::to_string(n), y[j * n_rows + r], want, scale);
          // The per-block arithmetic is fixed (kernels.h): every table's dot and blocked product give
          // the generic dot's bits.
          const float exact =
              cpu::dot_row_q8a(cpu::generic_kernels(), t, rows.data() + r * stride, xs.data() + j * n / 32, n);
          if (dot != exact || y[j * n_rows + r] != exact) fail(name, "q8a " + tn + " differs from the generic bits");
        }
      }
    }
  }
  // Blocked float GEMM: row counts across the 16-row panels and 64-row blocks, token counts across the
  // 6-token tiles, K across the 256-column blocks (with tails).
  const int64_t gemm_shapes[][2] = {{7, 9}, {16, 6}, {37, 13}, {70, 1}};
  for (int64_t K : {1, 8, 33, 576, 600})
    for (const auto& rt : gemm_shapes) {
      const int64_t n_rows = rt[0], n_tok = rt[1];
      auto w = randn(n_rows * K), x = randn(n_tok * K);
      std::vector<float> y(static_cast<size_t>(n_rows * n_tok));
      k.gemm_f32(w.data(), n_rows, x.data(), n_tok, K, y.data(), n_rows);
      for (int64_t t = 0; t < n_tok; ++t) {
        for (int64_t r = 0; r < n_rows; ++r) {
          double want = 0, scale = 0;
          for (int64_t i = 0; i < K; ++i)
            want += double(w[r * K + i]) * x[t * K + i], scale += std::fabs(double(w[r * K + i]) * x[t * K + i]);
          near(name, "gemm_f32 K=" + std::to_string(K), y[t * n_rows + r], want, scale);
        }
      }
      // The same over fp16 rows read in place (a wider row stride, as inside a mapped tensor).
      const int64_t stride = K + 5;
      std::vector<uint16_t> h(static_cast<size_t>(n_rows * stride), 0);
      for (int64_t r = 0; r < n_rows; ++r)
        for (int64_t i = 0; i < K; ++i) h[r * stride + i] = fp32_to_fp16(w[r * K + i]);
      k.gemm_f16(h.data(), stride, n_rows, x.data(), n_tok, K, y.data(), n_rows);
      for (int64_t t = 0; t < n_tok; ++t) {
        for (int64_t r = 0; r < n_rows; ++r) {
          double want = 0, scale = 0;
          for (int64_t i = 0; i < K; ++i) {
            const double wv = fp16_to_fp32(h[r * stride + i]);
            want += wv * x[t * K + i], scale += std::fabs(wv * x[t * K + i]);
          }
          near(name, "gemm_f16 K=" + std::to_string(K), y[t * n_rows + r], want, scale);
        }
      }
    }
  // int8 GEMM (W8A8 delegate core): exact integers, extremes included.
  for (int64_t K : {1, 15, 16, 17, 576}) {
    const int64_t n_rows = 5, n_tok = 3;
    std::uniform_int_distribution<int> d(-128, 127);
    std::vector<int8_t> w(static_cast<size_t>(n_rows * K)), x(static_cast<size_t>(n_tok * K));
    for (auto& v : w) v = static_cast<int8_t>(d(rng));
    for (auto& v : x) v = static_cast<int8_t>(d(rng));
    for (int64_t i = 0; i < K; ++i) w[i] = x[i] = -128;
    std::vector<int32_t> acc(static_cast<size_t>(n_rows * n_tok));
    k.gemm_s8(w.data(), n_rows, x.data(), n_tok, K, acc.data(), n_rows);
    for (int64_t t = 0; t < n_tok; ++t) {
      for (int64_t r = 0; r < n_rows; ++r) {
        int64_t want = 0;
        for (int64_t i = 0; i < K; ++i) want += int64_t(w[r * K + i]) * x[t * K + i];
        if (acc[t * n_rows + r] != want) fail(name, "gemm_s8 K=" + std::to_string(K) + " differs from the exact sum");
      }
    }
  }
  std::printf("OK %s\n", name.c_str());
}

}  // namespace

int main() {
  std::vector<std::string> tables = {"generic"};
#if defined(PYRT_HAVE_AVX2_KERNELS)
  if (cpu::set_kernels("avx2")) tables.push_back("avx2");
#endif
#if defined(PYRT_HAVE_NEON_KERNELS)
  tables.push_back("neon");
  if (cpu::cpu_has_dotprod()) tables.push_back("neon-dotprod");
#endif
  for (const auto& t : tables) check_table(t);
  cpu::set_kernels("auto");
  std::printf("auto picks %s\n", cpu::kernels().name);
  return 0;
}
