#include "backends/cpu/ops.h"

#include <algorithm>
#include <cmath>
#include <functional>

#include "backends/cpu/kernels.h"
#include "pyrt/error.h"

namespace pyrt {

void rms_norm(const float* x, const float* w, float* out, int64_t n, float eps) {
  double ss = 0;
  for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
  const float scale = 1.0f / std::sqrt(static_cast<float>(ss / n) + eps);
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] * scale * w[i];
}

void layer_norm_rows(const float* x, const float* w, const float* b, float* out, int64_t T, int64_t n, float eps) {
  for (int64_t t = 0; t < T; ++t) {
    const float* xt = x + t * n;
    float* ot = out + t * n;
    double mean = 0, var = 0;
    for (int64_t i = 0; i < n; ++i) mean += xt[i];
    mean /= static_cast<double>(n);
    for (int64_t i = 0; i < n; ++i) var += (xt[i] - mean) * (xt[i] - mean);
    const float inv = 1.0f / std::sqrt(static_cast<float>(var / static_cast<double>(n)) + eps);
    const float m = static_cast<float>(mean);
    for (int64_t i = 0; i < n; ++i) ot[i] = (xt[i] - m) * inv * w[i] + (b ? b[i] : 0.0f);
  }
}

int64_t conv1d(const Weight& w, const float* bias, const float* x, int64_t T_in, int64_t C_in, int kernel, int stride,
               int pad, float* out, ThreadPool& pool) {
  if (w.cols != C_in * kernel) {
    fail(ErrorCode::kFormat, "conv1d weight '" + w.name + "' has " + std::to_string(w.cols) + " columns, expected " +
                                 std::to_string(C_in * kernel));
  }
  const int64_t T_out = (T_in + 2 * pad - kernel) / stride + 1;
  // im2col: one row per output position holding the (C_in, kernel) window, so the conv is a matmul.
  std::vector<float> cols(static_cast<size_t>(T_out * C_in * kernel), 0.0f);
  for (int64_t t = 0; t < T_out; ++t) {
    float* row = cols.data() + t * C_in * kernel;
    for (int k = 0; k < kernel; ++k) {
      const int64_t src = t * stride - pad + k;
      if (src < 0 || src >= T_in) continue;
      const float* xs = x + src * C_in;
      for (int64_t c = 0; c < C_in; ++c) row[c * kernel + k] = xs[c];
    }
  }
  linear(w, bias, cols.data(), T_out, out, pool);
  return T_out;
}

namespace {

// Float tiles: a multiple of the 16-row packed panel. Integer prefill: tiles of 16 rows (one packed
// panel) x 96 tokens (a multiple of the 3-token register tile) keep the activation blocks in L2 while
// rows stream.
constexpr int64_t kRowsPerTask = 16, kTileRows = 16, kTileTokens = 96;
// Fewer tokens than this (decode steps, a batch of sessions' steps) take the GEMV straight from the mapped
// rows, every token against each 8-row panel while it is in L1; more take the packed prefill tiles.
constexpr int64_t kGemvMaxTokens = 8;

// One weight's share of a matmul: `n_tasks` independent tasks over its rows.
struct MatmulPart {
  int64_t n_tasks = 0;
  std::function<void(int64_t)> run;
};

MatmulPart plan_matmul(const cpu::KernelTable& k, const Weight& w, const float* x, const cpu::BlockQ8A* xq, int64_t T,
                       float* y, int threads) {
  const int64_t N = w.rows, K = w.cols;
  const int64_t n_tasks = (N + kRowsPerTask - 1) / kRowsPerTask;
  // Few tokens: few long contiguous chunks (4 per thread) rather than many small ones, so each thread
  // streams its rows sequentially, which the hardware prefetchers reward (decode is bandwidth-bound).
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(N / 16, int64_t(threads) * 4));
  const int64_t rows_per_chunk = (N + chunks - 1) / chunks;
  if (xq) {  // integer dots of the mapped rows against the 8-bit activation blocks
    const int64_t nb = K / 32;
    if (T < kGemvMaxTokens) {
      return {chunks, [&k, &w, xq, T, y, N, K, rows_per_chunk](int64_t c) {
                const int64_t r0 = c * rows_per_chunk, r1 = std::min(N, r0 + rows_per_chunk);
                if (r0 < r1) k.gemm_q8a(w.type, w.data + r0 * w.row_stride, w.row_stride, r1 - r0, xq, T, K, y + r0, N);
              }};
    }
    const int64_t row_tiles = (N + kTileRows - 1) / kTileRows, tok_tiles = (T + kTileTokens - 1) / kTileTokens;
    return {row_tiles * tok_tiles, [&k, &w, xq, T, y, N, K, nb, tok_tiles](int64_t task) {
              const int64_t r0 = (task / tok_tiles) * kTileRows, t0 = (task % tok_tiles) * kTileTokens;
              k.gemm_q8a(w.type, w.data + r0 * w.row_stride, w.row_stride, std::min(kTileRows, N - r0), xq + t0 * nb,
                         std::min(kTileTokens, T - t0), K, y + t0 * N + r0, N);
            }};
  }
  if (T < 4 || w.type == GgmlType::F32) {  // fused dequantize-dot straight from the mapped weights
    return {chunks, [&k, &w, x, T, y, N, K, rows_per_chunk](int64_t c) {
              const int64_t r1 = std::min(N, (c + 1) * rows_per_chunk);
              for (int64_t r = c * rows_per_chunk; r < r1; ++r) {
                const uint8_t* row = w.data + r * w.row_stride;
                for (int64_t t = 0; t < T; ++t) y[t * N + r] = cpu::dot_row(k, w.type, row, x + t * K, K);
              }
            }};
  }
  if (w.type == GgmlType::F16) {  // fp16 rows straight from the mapping (converted in registers)
    // Tasks of up to 64 rows (the kernel's block: each activation slice serves 4 panels; fewer rows
    // where that would leave under 8 tasks a thread) x an even share of the tokens, at most 128 (one
    // column block of their activations stays in L2 across the 6-token tiles; panels are packed again
    // per block, so no block is left with a few tokens to pay a whole packing).
    const int64_t rows = std::clamp<int64_t>(N / (int64_t(threads) * 8) / kTileRows * kTileRows, kTileRows, 64);
    const int64_t tok_tiles = (T + 127) / 128, tok_block = ((T + tok_tiles - 1) / tok_tiles + 5) / 6 * 6;
    const int64_t row_tasks = (N + rows - 1) / rows;
    return {row_tasks * tok_tiles, [&k, &w, x, T, y, N, K, rows, tok_tiles, tok_block](int64_t task) {
              const int64_t r0 = (task / tok_tiles) * rows, r1 = std::min(N, r0 + rows);
              const int64_t t0 = (task % tok_tiles) * tok_block;
              if (t0 >= T) return;
              k.gemm_f16(reinterpret_cast<const uint16_t*>(w.data + r0 * w.row_stride),
                         static_cast<int64_t>(w.row_stride / 2), r1 - r0, x + t0 * K, std::min(tok_block, T - t0), K,
                         y + t0 * N + r0, N);
            }};
  }
  // Other types with many tokens: dequantize a tile of rows once, reuse it for every token.
  return {n_tasks, [&k, &w, x, T, y, N, K](int64_t task) {
            thread_local std::vector<float> tile;
            const int64_t r0 = task * kRowsPerTask, r1 = std::min(N, r0 + kRowsPerTask);
            tile.resize(static_cast<size_t>(kRowsPerTask * K));
            for (int64_t r = r0; r < r1; ++r) {
              cpu::dequantize_row_fast(k, w.type, w.data + r * w.row_stride, tile.data() + (r - r0) * K, K);
            }
            k.gemm_f32(tile.data(), r1 - r0, x, T, K, y + r0, N);
          }};
}

}  // namespace

void matmul_shared_input(const Weight* const* ws, float* const* ys, int n_w, const float* x, int64_t T,
                         ThreadPool& pool) {
  const cpu::KernelTable& k = cpu::kernels();
  const int64_t K = ws[0]->cols;
  auto uses_q8a = [&](const Weight& w) { return w.q8_activations && cpu::has_q8a_dot(w.type) && K % 32 == 0; };
  bool any_q8a = false;
  for (int i = 0; i < n_w; ++i) {
    if (ws[i]->cols != K) {
      fail(ErrorCode::kInternal, "weights '" + ws[0]->name + "' and '" + ws[i]->name + "' do not take the same input");
    }
    any_q8a |= uses_q8a(*ws[i]);
  }
  // The activations are quantized to 8-bit blocks once for every weight that multiplies them.
  std::vector<cpu::BlockQ8A> xq;
  if (any_q8a) {
    const int64_t nb = K / 32;
    xq.resize(static_cast<size_t>(T * nb));
    if (T == 1)
      k.quantize_q8a(x, K, xq.data());
    else
      pool.run(T, [&](int64_t t) { k.quantize_q8a(x + t * K, K, xq.data() + t * nb); });
  }
  std::vector<MatmulPart> parts;
  int64_t total = 0;
  for (int i = 0; i < n_w; ++i) {
    parts.push_back(plan_matmul(k, *ws[i], x, uses_q8a(*ws[i]) ? xq.data() : nullptr, T, ys[i], pool.size()));
    total += parts.back().n_tasks;
  }
  pool.run(total, [&](int64_t task) {
    size_t p = 0;
    while (task >= parts[p].n_tasks) task -= parts[p++].n_tasks;
    parts[p].run(task);
  });
}

void matmul(const Weight& w, const float* x, int64_t T, float* y, ThreadPool& pool) {
  const Weight* ws[1] = {&w};
  float* ys[1] = {y};
  matmul_shared_input(ws, ys, 1, x, T, pool);
}

void add_bias(float* y, const float* bias, int64_t T, int64_t n) {
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < n; ++i) y[t * n + i] += bias[i];
}

std::vector<float> rope_inv_freq(int n_rot, float base, const float* freq_factors) {
  std::vector<float> inv(n_rot / 2);
  for (int i = 0; i < n_rot / 2; ++i) {
    // HF: 1 / base ** (arange(0, dim, 2).float() / dim), all in float32.
    const float expo = static_cast<float>(2 * i) / static_cast<float>(n_rot);
    inv[i] = 1.0f / std::pow(base, expo);
    if (freq_factors) inv[i] /= freq_factors[i];
  }
  return inv;
}

void rope_angles(float pos, const std::vector<float>& inv_freq, float* cos_out, float* sin_out) {
  for (size_t i = 0; i < inv_freq.size(); ++i) {
    const float theta = pos * inv_freq[i];
    cos_out[i] = std::cos(theta), sin_out[i] = std::sin(theta);
  }
}

void rope_with(float* x, int n_heads, int head_dim, int n_rot, const float* c, const float* s, RopeMode mode) {
  const int half = n_rot / 2;
  for (int i = 0; i < half; ++i) {
    for (int h = 0; h < n_heads; ++h) {
      float* v = x + h * head_dim;
      const int a = mode == RopeMode::kNorm ? 2 * i : i;
      const int b = mode == RopeMode::kNorm ? 2 * i + 1 : i + half;
      const float x0 = v[a], x1 = v[b];
      v[a] = x0 * c[i] - x1 * s[i];
      v[b] = x0 * s[i] + x1 * c[i];
    }
  }
}

void rope(float* x, int n_heads, int head_dim, int n_rot, float pos, const std::vector<float>& inv_freq,
          RopeMode mode) {
  thread_local std::vector<float> cs;
  cs.resize(2 * inv_freq.size());
  rope_angles(pos, inv_freq, cs.data(), cs.data() + inv_freq.size());
  rope_with(x, n_heads, head_dim, n_rot, cs.data(), cs.data() + inv_freq.size(), mode);
}

void silu_mul(float* gate, const float* up, int64_t n, ThreadPool* pool) {
  const cpu::KernelTable& k = cpu::kernels();
  constexpr int64_t kChunk = 16384;
  if (!pool || n <= kChunk) return k.silu_mul(gate, up, n);
  pool->run((n + kChunk - 1) / kChunk, [&](int64_t c) {
    const int64_t i0 = c * kChunk;
    k.silu_mul(gate + i0, up + i0, std::min(kChunk, n - i0));
  });
}

void relu(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

void gelu_tanh(float* x, int64_t n) {
  constexpr float kSqrt2OverPi = 0.7978845608028654f;
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    x[i] = 0.5f * v * (1.0f + std::tanh(kSqrt2OverPi * (v + 0.044715f * v * v * v)));
  }
}

void gelu_erf(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = 0.5f * x[i] * (1.0f + std::erf(x[i] * 0.7071067811865476f));
}

void activate(Activation a, float* x, int64_t n) {
  switch (a) {
    case Activation::kRelu: return relu(x, n);
    case Activation::kGeluTanh: return gelu_tanh(x, n);
    case Activation::kGeluErf: return gelu_erf(x, n);
    case Activation::kSilu:
      for (int64_t i = 0; i < n; ++i) x[i] = x[i] / (1.0f + std::exp(-x[i]));
      return;
  }
}

void embed_tokens(const Weight& table, const int32_t* ids, int64_t n, float* out) {
  for (int64_t t = 0; t < n; ++t)
    dequantize_row(table.type, table.data + ids[t] * table.row_stride, out + t * table.cols, table.cols);
}

void rms_norm_rows(const float* x, const float* w, float* out, int64_t T, int64_t n, float eps, ThreadPool* pool) {
  constexpr int64_t kRowsPerTask = 32;
  if (!pool || T <= kRowsPerTask) {
    for (int64_t t = 0; t < T; ++t) rms_norm(x + t * n, w, out + t * n, n, eps);
    return;
  }
  pool->run((T + kRowsPerTask - 1) / kRowsPerTask, [&](int64_t task) {
    const int64_t t1 = std::min(T, (task + 1) * kRowsPerTask);
    for (int64_t t = task * kRowsPerTask; t < t1; ++t) rms_norm(x + t * n, w, out + t * n, n, eps);
  });
}

void linear(const Weight& w, const float* bias, const float* x, int64_t T, float* y, ThreadPool& pool) {
  matmul(w, x, T, y, pool);
  if (bias) add_bias(y, bias, T, w.rows);
}

void add_inplace(float* x, const float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] += y[i];
}

}  // namespace pyrt
