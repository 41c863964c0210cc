// The CPU's operations on float rows (RMSNorm, RoPE, matmul over quantized weights, activations):
// what the CPU backend (cpu_backend.h) runs, built on the kernel tables (kernels.h).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "backends/backend.h"
#include "core/weight.h"
#include "pyrt/threadpool.h"

namespace pyrt {

void rms_norm(const float* x, const float* w, float* out, int64_t n, float eps);
// LayerNorm with weight and optional bias over T rows of n (Whisper, BERT-style models).
void layer_norm_rows(const float* x, const float* w, const float* b, float* out, int64_t T, int64_t n, float eps);
// 1-D convolution, zero padding `pad` on both sides: x [T_in, C_in] (time-major), w rows = C_out with
// columns (C_in, kernel) kernel-fastest (PyTorch's Conv1d weight flattened), out [T_out, C_out].
int64_t conv1d(const Weight& w, const float* bias, const float* x, int64_t T_in, int64_t C_in, int kernel, int stride,
               int pad, float* out, ThreadPool& pool);
// y[T, rows] = x[T, cols] @ W^T
void matmul(const Weight& w, const float* x, int64_t T, float* y, ThreadPool& pool);
// ys[i] = x @ ws[i]^T for n_w weights that read the same input (Q/K/V, gate/up): the activations are
// quantized once and one pool run covers every weight's rows, so decode pays one thread handoff, not
// one per matrix. Each output is exactly what matmul() gives.
void matmul_shared_input(const Weight* const* ws, float* const* ys, int n_w, const float* x, int64_t T,
                         ThreadPool& pool);
// Adds a bias vector of n floats to each of T rows.
void add_bias(float* y, const float* bias, int64_t T, int64_t n);

// RoPE tables for `n_rot` dims: inv_freq[i] = base^(-2i/n_rot) / freq_factor[i], in float32 like HF.
std::vector<float> rope_inv_freq(int n_rot, float base, const float* freq_factors);
// Rotates each of n_heads vectors of head_dim in place for position `pos` (already scaled).
void rope(float* x, int n_heads, int head_dim, int n_rot, float pos, const std::vector<float>& inv_freq, RopeMode mode);
// rope()'s angles for `pos`: cos / sin of pos * inv_freq[i] for every i, computed once for a token and
// reused by its queries and keys in every layer; rope_with() rotates with them (the same bits as rope()).
void rope_angles(float pos, const std::vector<float>& inv_freq, float* cos_out, float* sin_out);
void rope_with(float* x, int n_heads, int head_dim, int n_rot, const float* c, const float* s, RopeMode mode);

// gate = silu(gate) * up; split across the pool when given (SwiGLU over a whole prompt).
void silu_mul(float* gate, const float* up, int64_t n, ThreadPool* pool = nullptr);
void relu(float* x, int64_t n);
void gelu_tanh(float* x, int64_t n);  // 0.5x(1 + tanh(sqrt(2/pi)(x + 0.044715x^3))), HF gelu_new / gelu_pytorch_tanh
void gelu_erf(float* x, int64_t n);   // 0.5x(1 + erf(x/sqrt(2))), exact GELU
void activate(Activation a, float* x, int64_t n);

// out[t] = row ids[t] of the embedding table (dequantized).
void embed_tokens(const Weight& table, const int32_t* ids, int64_t n, float* out);
// RMSNorm of T rows of n; rows split across the pool when given (each row's bits as alone).
void rms_norm_rows(const float* x, const float* w, float* out, int64_t T, int64_t n, float eps,
                   ThreadPool* pool = nullptr);
// y[T, rows] = x @ W^T (+ bias).
void linear(const Weight& w, const float* bias, const float* x, int64_t T, float* y, ThreadPool& pool);
void add_inplace(float* x, const float* y, int64_t n);  // x += y

}  // namespace pyrt
