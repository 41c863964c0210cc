// One layer's keys or values, in one storage format. The attention loop only asks a store for
// scores against a query (keys) or for a probability-weighted sum of rows (values), so every format
// is read directly, never through a dequantized copy.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace pyrt {

struct KvSpec {
  enum class Kind { kF32, kF16, kQ8_0, kQ4_0, kKivi } kind = Kind::kF16;
  int bits = 0;        // KIVI: 2 or 4
  int group = 32;      // KIVI: G (tokens per key group / channels per value group)
  int residual = 128;  // KIVI: R, full-precision window (multiple of G)
  // Beyond SPEC 4.1 (both on by default where they measured better on SmolLM2; "-s0-noclip" is the
  // paper's algorithm exactly):
  int sink = 0;       // the first S tokens stay fp16 for good (attention sinks); default 4
  bool clip = false;  // each key group's range searched for least squared error; default for 2 bits
  std::string name() const;
};
// "f32", "f16", "q8_0", "q4_0", "kivi4", "kivi2", with KIVI options as in "kivi2-g32-r128-s4-clip"
// (-g<G> -r<R> -s<S> -clip / -noclip). name() spells every KIVI option out, so it parses back.
KvSpec parse_kv_spec(const std::string& text);

// A KIVI store's buffers as laid out in memory (the GPU decode kernel reads this layout; see
// kernels/pyrt_cuda.h KiviCache). Rows are n_heads * head_dim values. Keys: quantized group g, channel
// ch of a row is entry g * row + ch (G tokens' codes packed along the tokens); values: token t, channel
// group j is entry t * (row / G) + j (G channels' codes). Codes pack 8 / bits per byte, lowest first.
struct KiviView {
  bool keys = true;
  int bits = 0, group = 0;
  int64_t n_sink = 0, n_quant = 0, n_window = 0;  // tokens: fp16 sink, quantized, fp16 window
  const uint16_t *sink = nullptr, *scale = nullptr, *min = nullptr, *window = nullptr;  // fp16 bits
  const uint8_t* codes = nullptr;
  int64_t n_entries = 0;  // scale / min entries (codes: n_entries * group * bits / 8 bytes)
};

class KvStore {
 public:
  virtual ~KvStore() = default;
  // Appends T rows of n_heads * head_dim floats (positions size() .. size() + T - 1).
  virtual void append(const float* rows, int64_t T) = 0;
  // Called once the current step's attention is done (KIVI moves tokens out of the fp16 window).
  virtual void finish_step() {}
  virtual int64_t size() const = 0;
  virtual int n_heads() const = 0;
  virtual int head_dim() const = 0;
  virtual size_t bytes() const = 0;  // everything held: codes, scales, minima, residual window
  virtual void clear() = 0;
  // scores[j] = q . key_j(head) for j < n (keys only).
  virtual void dot_keys(int head, const float* q, int64_t n, float* scores) const = 0;
  // out += sum_j p[j] * value_j(head) for j < n (values only).
  virtual void accumulate(int head, const float* p, int64_t n, float* out) const = 0;
  // nq query heads reading this KV head at once (GQA): query i at q + i * q_stride, its scores at
  // scores + i * sc_stride, its output at out + i * out_stride. Each query's result is exactly what the
  // single calls give; formats that can share work across the queries (KIVI: unpacking codes) override
  // these and say so with shares_across_queries().
  virtual void dot_keys_multi(int head, const float* q, int64_t q_stride, int nq, int64_t n, float* scores,
                              int64_t sc_stride) const;
  virtual void accumulate_multi(int head, const float* p, int64_t p_stride, int nq, int64_t n, float* out,
                                int64_t out_stride) const;
  virtual bool shares_across_queries() const { return false; }
  // Prefill: nq query rows of one head (q_stride apart), row i over tokens key0 .. key0 + n_of[i] - 1
  // (scores[i][j] is token key0 + j's), with exactly the single calls' numbers when key0 = 0 (the
  // defaults are those calls in a loop). Formats with blocked kernels for this (fp16 rows) say so with
  // has_blocked_reads(). accumulate_rows reads p rows up to the largest n_of: p[i][j] must be 0 for
  // j >= n_of[i].
  virtual bool has_blocked_reads() const { return false; }
  virtual void dot_keys_rows(int head, const float* q, int64_t q_stride, int64_t nq, const int64_t* n_of, float* scores,
                             int64_t sc_stride, int64_t key0 = 0) const;
  virtual void accumulate_rows(int head, const float* p, int64_t p_stride, int64_t nq, const int64_t* n_of, float* out,
                               int64_t out_stride, int64_t key0 = 0) const;
  // Token counts in the quantized part and in the full-precision part (tests of the KIVI schedule;
  // KIVI's fp16 sink tokens count as full precision).
  virtual std::pair<int64_t, int64_t> split_sizes() const { return {size(), 0}; }
  // KIVI stores: their buffers (kUnsupported for other formats).
  virtual KiviView kivi_view() const;
};

std::unique_ptr<KvStore> make_key_store(const KvSpec& spec, int n_heads, int head_dim);
std::unique_ptr<KvStore> make_value_store(const KvSpec& spec, int n_heads, int head_dim);

// KIVI's asymmetric quantizer (SPEC 4.1) on n values: fp16 scale and minimum; codes computed against
// the stored (fp16) scale/min; max == min gives codes 0 and keeps the minimum (no NaN). With `clip`
// the range [min, max] may shrink from either end (steps of 4% of it, up to 32%) to whichever gives
// the least squared error after rounding: at 2 bits one outlier otherwise costs the whole group
// resolution.
void kivi_quantize_group(const float* x, int n, int stride, int bits, uint16_t* scale, uint16_t* mn, uint8_t* codes,
                         bool clip = false);

}  // namespace pyrt
