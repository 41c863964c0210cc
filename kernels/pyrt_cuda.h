// Host API of the CUDA kernels (device pointers in, cudaError_t out: errors are values).
// The runtime and the `_cuda` Python module call these; nothing here needs a GPU to compile.
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <vector>

namespace pyrt::cuda {

// FlashAttention-2-style forward. q: [B, Hq, Sq, D], k/v: [B, Hkv, Sk, D] (fp16, contiguous);
// out: [B, Hq, Sq, D] fp32, lse: [B, Hq, Sq] fp32 (natural log; -inf for fully masked rows).
// Causal masks are aligned bottom-right (query i sees keys j <= i + Sk - Sq). Query head h reads
// KV head h / (Hq / Hkv). D in {64, 80, 96, 128}.
//
// Variable-length (padding-free) mode: with cu_seqlens_q/k set (exclusive prefix sums of the B
// lengths, B + 1 entries), q/k/v/out are packed token-major, q: [T_q, Hq, D], k/v: [T_k, Hkv, D],
// out: [T_q, Hq, D], lse: [Hq, T_q]; Sq/Sk are then the maximum lengths.
struct FlashParams {
  const half* q;
  const half* k;
  const half* v;
  float* out;
  float* lse;
  int B, Hq, Hkv, Sq, Sk, D;
  float scale;
  bool causal;
  const int* cu_seqlens_q = nullptr;
  const int* cu_seqlens_k = nullptr;
  int total_q = 0;  // T_q in varlen mode (for the lse layout)
  // Dense mode only. kv_capacity > Sk: k/v are [B, Hkv, kv_capacity, D] of which the first Sk rows are
  // read (a KV cache). q_token_major: q/out are [B, Sq, Hq, D] (a layer's projections as they come).
  int kv_capacity = 0;
  bool q_token_major = false;
  // An additive bias by relative position (T5), [Hq, Sq + Sk - 1]: key j and the query at position p
  // (row i sits at p = i + Sk - Sq, bottom-right) add rel_bias[h][j - p + Sk - 1] to their scaled score.
  // The same vector for every sequence; in varlen mode Sq / Sk are the largest lengths.
  const float* rel_bias = nullptr;
};
cudaError_t flash_attn_fwd(const FlashParams& p, cudaStream_t stream);

// KV cache element formats the decode kernel reads directly (ggml block layouts along D).
enum class KvFormat : int { kF16 = 0, kQ8_0 = 1, kQ4_0 = 2, kKivi = 3 };

// One sequence's KIVI keys or values (SPEC 4.1) in the CPU runtime's layout (memory/kv_store.h
// KiviView), on the device. Rows hold all Hkv * D channels; tokens [0, n_sink) are fp16 sink rows, the
// next n_quant are quantized (keys: entry g * row + channel per group of `group` tokens; values: entry
// t * (row / group) + channel / group), the last n_window are fp16 rows. Value = scale * code + min.
struct KiviCache {
  const half* sink;
  const half* scale;
  const half* min;
  const uint8_t* codes;
  const half* window;
  int n_sink, n_quant, n_window, bits, group;
};
// Bytes of one token's row of D values in a row format (0 for KIVI, which is not row-major).
__host__ __device__ inline int kv_row_bytes(KvFormat f, int D) {
  return f == KvFormat::kF16 ? D * 2 : f == KvFormat::kQ8_0 ? D / 32 * 34 : f == KvFormat::kQ4_0 ? D / 32 * 18 : 0;
}
// Appends T token rows of fp32 keys or values, src [T, n_heads, D], to a cache laid out
// [n_heads, capacity, kv_row_bytes(format, D)] at positions pos0 .. pos0 + T - 1 (what flash_attn and
// decode_attn read). q8_0 / q4_0 rows get exactly the CPU runtime's quantizer bits. D % 32 == 0.
cudaError_t kv_append(KvFormat format, const float* src, int T, int n_heads, int D, void* cache, int capacity, int pos0,
                      cudaStream_t stream);
// KIVI groups from fp16 rows [n_tokens, row] (row = Hkv * D): keys per channel over `group` tokens
// (n_tokens a multiple of group; entries g * row + ch), values per token over `group` channels (entries
// t * (row / group) + j); scale / min / codes point at the first new entry. Bits equal the CPU's.
cudaError_t kivi_quantize(bool keys, const half* rows, int n_tokens, int row, int group, int bits, bool clip,
                          half* scale, half* mn, uint8_t* codes, cudaStream_t stream);
// The first n positions of a q8_0 / q4_0 cache as fp16 [n_heads, n, D] (prefill attention input).
cudaError_t kv_to_f16(KvFormat format, const void* cache, int n_heads, int capacity, int n, int D, half* out,
                      cudaStream_t stream);

// One sequence's row-format cache, [Hkv, capacity, kv_row_bytes] for keys and for values.
struct KvSeq {
  const void* k;
  const void* v;
  int capacity;
};

// Split-K decode attention (Flash-Decoding) for one query token per sequence over ragged lengths.
// q: [B, Hq, D] fp16; k/v: [B, Hkv, S_max, row_bytes] in `format`; seqlens: [B] int32 (device).
// All query heads of a KV group are processed by one CTA so K/V are read once. Each of n_splits
// CTAs per (b, kv head) handles a contiguous key range and writes (O_s, LSE_s) into the
// workspace [B, Hq, n_splits, D] / [B, Hq, n_splits]; a combine kernel merges them.
struct DecodeParams {
  const half* q;
  const void* k;
  const void* v;
  const int* seqlens;
  KvFormat format;
  int B, Hq, Hkv, S_max, D;
  float scale;
  int n_splits;
  float* o_partial;
  float* lse_partial;
  float* out;  // [B, Hq, D]
  float* lse;  // [B, Hq]
  // format kKivi: B caches each (device arrays); k/v are then unused.
  const KiviCache* kivi_k = nullptr;
  const KiviCache* kivi_v = nullptr;
  // Row formats, sequences in separate caches (sessions): a device array of B; k/v/S_max are then unused.
  const KvSeq* seqs = nullptr;
};
cudaError_t decode_attn(const DecodeParams& p, cudaStream_t stream);
// The first n tokens of batch row 0's KIVI keys and values (p.format kKivi, p.Hkv, p.D, p.kivi_k/v) as
// fp16 [Hkv, n, D] each: what prefill attention reads.
cudaError_t kivi_to_f16(const DecodeParams& p, int n, half* k_out, half* v_out, cudaStream_t stream);

// flash-attn's split count heuristic (SPEC 6.3).
int num_splits_heuristic(int batch_nheads_mblocks, int num_sms, int num_n_blocks, int max_splits);
// Split count for decode_attn on the current device: the heuristic over resident CTA slots.
int decode_auto_splits(KvFormat format, int B, int Hkv, int D, int max_len);

// Lean Attention (stream-K decode, SPEC 6.4): the same inputs and outputs as decode_attn, but the
// work, every KV group's 64-key tiles in (batch, kv head) order, is cut into n_ctas equal contiguous
// ranges (a range may end mid-sequence or span sequences), so ragged batches keep every CTA equally
// busy. tile_prefix (device, B * Hkv + 1 ints) is lean_tile_prefix(seqlens, Hkv); p.n_splits is
// unused; o_partial / lse_partial hold lean_partial_slots(n_ctas, B, Hkv) * (Hq / Hkv) partials.
// n_ctas is capped at total_tiles (a CTA without a tile would have nothing to do).
cudaError_t decode_attn_lean(const DecodeParams& p, const int* tile_prefix, int total_tiles, int n_ctas,
                             cudaStream_t stream);
std::vector<int> lean_tile_prefix(const std::vector<int>& seqlens, int Hkv);
int lean_partial_slots(int n_ctas, int B, int Hkv);
// Resident CTA slots of the decode kernel on the current device (Lean's persistent grid size).
int lean_auto_ctas(KvFormat format, int D);

// y[N] = W[N, K] x[K] for ggml rows (type ids: F16 = 1, Q8_0 = 8, Q4_0 = 2, Q4_1 = 3; K % 32 == 0).
cudaError_t gemv_quant(int ggml_type, const void* w, const float* x, float* y, int N, int K, cudaStream_t stream);
// The same for `rows` activation rows, x [rows, K] -> y [rows, N] (a batch of decode steps): up to
// kGemvMaxRows rows share one read of the weights; each row's result equals gemv_quant's bit for bit.
constexpr int kGemvMaxRows = 8;
cudaError_t gemv_quant_rows(int ggml_type, const void* w, const float* x, int rows, float* y, int N, int K,
                            cudaStream_t stream);

// Tensor-core GEMM for prefill: y[T, N] (row stride ldy) = x[T, K] . w[N, K]^T, fp16 operands, fp32
// accumulation and output. Any T, N, K (edges are zero-padded in shared memory).
cudaError_t gemm_f16_tc(const half* x, const half* w, float* y, int T, int N, int K, int ldy, cudaStream_t stream);
// The same GEMM over a model's rows as stored: ggml type 1 (F16, as gemm_f16_tc) or Q8_0 = 8, Q4_0 = 2,
// Q4_1 = 3 (K % 32 == 0), dequantized to fp16 as each tile is loaded: bit for bit dequant_rows_f16
// followed by gemm_f16_tc, without the fp16 copy of the weights.
cudaError_t gemm_ggml_tc(int ggml_type, const half* x, const void* w, float* y, int T, int N, int K, int ldy,
                         cudaStream_t stream);
// ggml-quantized rows (Q8_0 = 8, Q4_0 = 2, Q4_1 = 3; K % 32 == 0) as fp16 [N, K] for gemm_f16_tc.
cudaError_t dequant_rows_f16(int ggml_type, const void* w, half* out, int N, int K, cudaStream_t stream);
cudaError_t f32_to_f16(const float* x, half* y, int64_t n, cudaStream_t stream);

// A decoder layer's elementwise steps, fp32 rows as on the CPU:
// y[r] = x[r] / sqrt(mean(x[r]^2) + eps) * w for `rows` rows of n;
cudaError_t rms_norm(const float* x, const float* w, float* y, int rows, int n, float eps, cudaStream_t stream);
// LayerNorm: y[r] = (x[r] - mean) / sqrt(var + eps) * w + b (b may be null);
cudaError_t layer_norm(const float* x, const float* w, const float* b, float* y, int rows, int n, float eps,
                       cudaStream_t stream);
// y[r] += bias for `rows` rows of n (biased linears);
cudaError_t add_bias(float* y, const float* bias, int64_t rows, int n, cudaStream_t stream);
// x *= s over n values;
cudaError_t scale(float* x, float s, int64_t n, cudaStream_t stream);
// x[r] += table[positions[r]] for rows of `width` (learned positions; positions[r] < 0: padding, untouched);
cudaError_t add_positions(float* x, const float* table, const int* positions, int rows, int width, cudaStream_t stream);
// rotary embedding in place on x [T, n_heads, head_dim] at positions pos0.., angle (pos * inv_freq[i])
// for pair i < n_rot / 2: (2i, 2i + 1) in ggml's normal mode, (i, i + n_rot / 2) for NeoX;
cudaError_t rope(float* x, int T, int n_heads, int head_dim, int n_rot, int pos0, const float* inv_freq, bool neox,
                 cudaStream_t stream);
// The same with each row's own position (device [T]): packed rows of several sequences.
cudaError_t rope_positions(float* x, int T, int n_heads, int head_dim, int n_rot, const int* positions,
                           const float* inv_freq, bool neox, cudaStream_t stream);
// gate = silu(gate) * up over n values.
cudaError_t swiglu(float* gate, const float* up, int64_t n, cudaStream_t stream);
// The CPU runtime's activations (core/ops.h, same order): x = act(x) * up (up may be null: x = act(x)).
enum class Act : int { kRelu = 0, kGeluTanh = 1, kGeluErf = 2, kSilu = 3 };
cudaError_t act_mul(Act act, float* x, const float* up, int64_t n, cudaStream_t stream);
// x += y over n values (the residual stream).
cudaError_t add_inplace(float* x, const float* y, int64_t n, cudaStream_t stream);

// ByteTransformer-style packing (SPEC 6.1). mask: [B, S_max] int32, 1 for valid positions (right
// padding). Writes cu_seqlens [B + 1] (exclusive scan of the lengths, cu[B] = T_valid) and the gather
// map word_idx [T_valid] (packed row -> padded row b * S_max + i). B <= 1024.
cudaError_t build_varlen_index(const int* mask, int B, int S_max, int* cu_seqlens, int* word_idx, cudaStream_t stream);
// [B * S_max, D] -> [T_valid, D] and back (pad rows written as 0). D * 2 bytes must be a multiple of 16.
cudaError_t pack_rows(const half* padded, const int* word_idx, int T_valid, int D, half* packed, cudaStream_t stream);
cudaError_t unpack_rows(const half* packed, const int* word_idx, int T_valid, int B_times_S, int D, half* padded,
                        cudaStream_t stream);

}  // namespace pyrt::cuda
