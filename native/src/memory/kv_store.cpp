#include "memory/kv_store.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "backends/cpu/kernels.h"
#include "pyrt/error.h"
#include "pyrt/ggml_types.h"

namespace pyrt {

std::string KvSpec::name() const {
  switch (kind) {
    case Kind::kF32: return "f32";
    case Kind::kF16: return "f16";
    case Kind::kQ8_0: return "q8_0";
    case Kind::kQ4_0: return "q4_0";
    case Kind::kKivi:
      return "kivi" + std::to_string(bits) + "-g" + std::to_string(group) + "-r" + std::to_string(residual) + "-s" +
             std::to_string(sink) + (clip ? "-clip" : "-noclip");
  }
  return "?";
}

KvSpec parse_kv_spec(const std::string& text) {
  KvSpec s;
  auto bad = [&](const std::string& why) -> KvSpec {
    fail(ErrorCode::kInvalidArgument,
         "kv cache type '" + text + "': " + why +
             " (supported: f32, f16, q8_0, q4_0, kivi4, kivi2, with KIVI options -g<G> -r<R> -s<S> -clip -noclip, "
             "e.g. kivi2-g32-r128-s4-clip)");
  };
  std::string base = text.substr(0, text.find('-'));
  if (base == "f32")
    s.kind = KvSpec::Kind::kF32;
  else if (base == "f16")
    s.kind = KvSpec::Kind::kF16;
  else if (base == "q8_0")
    s.kind = KvSpec::Kind::kQ8_0;
  else if (base == "q4_0")
    s.kind = KvSpec::Kind::kQ4_0;
  else if (base == "kivi4" || base == "kivi2") {
    s.kind = KvSpec::Kind::kKivi;
    s.bits = base[4] - '0';
    // SmolLM2-135M, 4096 tokens: the sink takes kivi2's KL from 0.17 to ~0.09 and kivi4's from 3.7e-3 to
    // 2.0e-3; clipping key groups takes kivi2 to 0.05 but costs kivi4 (1.5e-3 -> 2.3e-3 over 1024).
    s.sink = 4;
    s.clip = s.bits == 2;
  } else {
    return bad("unknown type");
  }
  size_t pos = base.size();
  while (pos < text.size()) {
    if (s.kind != KvSpec::Kind::kKivi) return bad("options apply to kivi only");
    const size_t next = text.find('-', pos + 1);
    const std::string opt = text.substr(pos + 1, next == std::string::npos ? std::string::npos : next - pos - 1);
    pos = next == std::string::npos ? text.size() : next;
    if (opt == "clip" || opt == "noclip") {
      s.clip = opt == "clip";
      continue;
    }
    if (opt.size() < 2 || (opt[0] != 'g' && opt[0] != 'r' && opt[0] != 's')) return bad("unknown option '" + opt + "'");
    char* end = nullptr;
    const long v = std::strtol(opt.c_str() + 1, &end, 10);
    if (*end != '\0' || v < (opt[0] == 's' ? 0 : 1) || v > 65536) return bad("bad value in '" + opt + "'");
    (opt[0] == 'g' ? s.group : opt[0] == 'r' ? s.residual : s.sink) = static_cast<int>(v);
  }
  if (s.kind == KvSpec::Kind::kKivi && (s.residual % s.group != 0 || (s.group * s.bits) % 8 != 0)) {
    return bad("R must be a multiple of G, and G * bits a whole number of bytes");
  }
  return s;
}

namespace {

// SPEC 4.1's code for x against the stored minimum m and scale s > 0: clamp, then round half to even.
inline int kivi_code(float x, float m, float s, int qmax) {
  return static_cast<int>(std::nearbyint(std::min(std::max((x - m) / s, 0.0f), static_cast<float>(qmax))));
}

// Squared error of quantizing n values against fp16 (scale, min) as stored.
float kivi_group_error(const float* x, int n, int stride, int qmax, float m, float s) {
  float err = 0.0f;
  for (int i = 0; i < n; ++i) {
    const float r = static_cast<float>(kivi_code(x[i * stride], m, s, qmax)) * s + m - x[i * stride];
    err += r * r;
  }
  return err;
}

}  // namespace

void kivi_quantize_group(const float* x, int n, int stride, int bits, uint16_t* scale, uint16_t* mn, uint8_t* codes,
                         bool clip) {
  float lo = x[0], hi = x[0];
  for (int i = 1; i < n; ++i) {
    lo = std::min(lo, x[i * stride]);
    hi = std::max(hi, x[i * stride]);
  }
  const int qmax = (1 << bits) - 1;
  if (clip && hi > lo) {
    // Plain min-max (a = b = 0) comes first, so it wins ties and clipping only happens where it helps.
    constexpr int kSteps = 8;
    constexpr float kStep = 0.04f;
    const float range = hi - lo;
    float best = std::numeric_limits<float>::infinity(), best_lo = lo, best_hi = hi;
    for (int a = 0; a <= kSteps; ++a) {
      for (int b = 0; b <= kSteps; ++b) {
        const float l = lo + range * kStep * a, h = hi - range * kStep * b;
        const float m = fp16_to_fp32(fp32_to_fp16(l)),
                    s = fp16_to_fp32(fp32_to_fp16((h - l) / static_cast<float>(qmax)));
        if (!(s > 0.0f)) continue;
        const float err = kivi_group_error(x, n, stride, qmax, m, s);
        if (err < best) {
          best = err;
          best_lo = l;
          best_hi = h;
        }
      }
    }
    lo = best_lo;
    hi = best_hi;
  }
  *mn = fp32_to_fp16(lo);
  *scale = fp32_to_fp16((hi - lo) / static_cast<float>(qmax));
  const float m = fp16_to_fp32(*mn), s = fp16_to_fp32(*scale);
  const int per_byte = 8 / bits;
  std::memset(codes, 0, static_cast<size_t>((n + per_byte - 1) / per_byte));
  if (s == 0.0f) return;  // constant group: every code 0, the minimum carries the value
  for (int i = 0; i < n; ++i) {
    codes[i / per_byte] |=
        static_cast<uint8_t>(kivi_code(x[i * stride], m, s, qmax) << ((i % per_byte) * bits));  // LSB first
  }
}

namespace {

// bytes() reports capacity (that is what is held), so growth keeps little slack: a bulk append
// reserves exactly, token-by-token growth adds 1/16 at a time (still amortised O(1) per token).
template <typename Vec>
void reserve_for(Vec& v, size_t n) {
  if (n > v.capacity()) v.reserve(std::max(n, v.capacity() + v.capacity() / 16));
}
template <typename Vec>
void grow_to(Vec& v, size_t n) {
  reserve_for(v, n);
  v.resize(n);
}

// After tokens leave an fp16 window, give back what a large prefill left allocated.
template <typename Vec>
void trim_window(Vec& v, size_t keep_elems) {
  if (v.capacity() > 2 * std::max(v.size(), keep_elems)) v.shrink_to_fit();
}

inline int code_at(const uint8_t* codes, int i, int bits) {
  const int per_byte = 8 / bits;
  return (codes[i / per_byte] >> ((i % per_byte) * bits)) & ((1 << bits) - 1);
}

}  // namespace

KiviView KvStore::kivi_view() const {
  fail(ErrorCode::kUnsupported, "this KV store is not a KIVI store");
}

void KvStore::dot_keys_multi(int head, const float* q, int64_t q_stride, int nq, int64_t n, float* scores,
                             int64_t sc_stride) const {
  for (int i = 0; i < nq; ++i) dot_keys(head, q + i * q_stride, n, scores + i * sc_stride);
}

void KvStore::accumulate_multi(int head, const float* p, int64_t p_stride, int nq, int64_t n, float* out,
                               int64_t out_stride) const {
  for (int i = 0; i < nq; ++i) accumulate(head, p + i * p_stride, n, out + i * out_stride);
}

// From key0 on, the single calls run from token 0 and the leading part is dropped (scores) or
// weighted by exact zeros (values): correct for every format, and no caller takes this path for speed
// (attention only starts past token 0 on stores with blocked reads).
void KvStore::dot_keys_rows(int head, const float* q, int64_t q_stride, int64_t nq, const int64_t* n_of, float* scores,
                            int64_t sc_stride, int64_t key0) const {
  std::vector<float> all;
  for (int64_t i = 0; i < nq; ++i) {
    if (key0 == 0) {
      dot_keys(head, q + i * q_stride, n_of[i], scores + i * sc_stride);
    } else if (n_of[i] > 0) {
      all.resize(static_cast<size_t>(key0 + n_of[i]));
      dot_keys(head, q + i * q_stride, key0 + n_of[i], all.data());
      std::copy_n(all.data() + key0, n_of[i], scores + i * sc_stride);
    }
  }
}

void KvStore::accumulate_rows(int head, const float* p, int64_t p_stride, int64_t nq, const int64_t* n_of, float* out,
                              int64_t out_stride, int64_t key0) const {
  std::vector<float> all;
  for (int64_t i = 0; i < nq; ++i) {
    if (key0 == 0) {
      accumulate(head, p + i * p_stride, n_of[i], out + i * out_stride);
    } else if (n_of[i] > 0) {
      all.assign(static_cast<size_t>(key0), 0.0f);
      all.insert(all.end(), p + i * p_stride, p + i * p_stride + n_of[i]);
      accumulate(head, all.data(), key0 + n_of[i], out + i * out_stride);
    }
  }
}

namespace {

// f32 / f16 / q8_0 / q4_0: one row of n_heads * head_dim per token, ggml block layout along the row.
class RowStore : public KvStore {
 public:
  RowStore(GgmlType type, int n_heads, int head_dim)
      : type_(type),
        n_heads_(n_heads),
        head_dim_(head_dim),
        row_(row_bytes(type, int64_t(n_heads) * head_dim)),
        head_bytes_(row_bytes(type, head_dim)) {
    if (head_dim % type_traits(type).block_size != 0) {
      fail(ErrorCode::kUnsupported,
           std::string("kv cache ") + type_traits(type).name + " needs a head dimension that is a multiple of " +
               std::to_string(type_traits(type).block_size) + ", got " + std::to_string(head_dim));
    }
  }
  void append(const float* rows, int64_t T) override {
    const int64_t n = int64_t(n_heads_) * head_dim_;
    const size_t old = data_.size();
    grow(old + T * row_);
    uint8_t* dst = data_.data() + old;
    for (int64_t t = 0; t < T; ++t, dst += row_) {
      const float* src = rows + t * n;
      switch (type_) {
        case GgmlType::F32: std::memcpy(dst, src, n * 4); break;
        case GgmlType::F16: cpu::kernels().f32_to_f16_row(src, reinterpret_cast<uint16_t*>(dst), n); break;
        case GgmlType::Q8_0: quantize_row_q8_0(src, reinterpret_cast<BlockQ8_0*>(dst), n); break;
        case GgmlType::Q4_0: quantize_row_q4_0(src, reinterpret_cast<BlockQ4_0*>(dst), n); break;
        default: fail(ErrorCode::kInternal, "row store type");
      }
    }
    size_ += T;
  }
  int64_t size() const override { return size_; }
  int n_heads() const override { return n_heads_; }
  int head_dim() const override { return head_dim_; }
  size_t bytes() const override { return data_.capacity(); }
  void clear() override {
    std::vector<uint8_t>().swap(data_);
    size_ = 0;
  }
  void dot_keys(int head, const float* q, int64_t n, float* scores) const override {
    const cpu::KernelTable& k = cpu::kernels();
    const uint8_t* base = data_.data() + head * head_bytes_;
    if (type_ == GgmlType::F16) {
      k.dot_keys_f16(q, f16_head(head), f16_stride(), n, scores, head_dim_);
      return;
    }
    if (type_ == GgmlType::F32) {
      k.dot_keys_f32(q, reinterpret_cast<const float*>(base), static_cast<int64_t>(row_ / 4), n, scores, head_dim_);
      return;
    }
    if (const auto dot = type_ == GgmlType::Q8_0   ? k.dot_keys_q8_0
                         : type_ == GgmlType::Q4_0 ? k.dot_keys_q4_0
                                                   : nullptr) {
      dot(q, base, static_cast<int64_t>(row_), n, scores, head_dim_);
      return;
    }
    for (int64_t j = 0; j < n; ++j) scores[j] = cpu::dot_row(k, type_, base + j * row_, q, head_dim_);
  }
  void accumulate(int head, const float* p, int64_t n, float* out) const override {
    const cpu::KernelTable& k = cpu::kernels();
    const uint8_t* base = data_.data() + head * head_bytes_;
    if (type_ == GgmlType::F16) {
      k.accumulate_f16(p, f16_head(head), f16_stride(), n, out, head_dim_);
      return;
    }
    if (type_ == GgmlType::F32) {
      k.accumulate_f32(p, reinterpret_cast<const float*>(base), static_cast<int64_t>(row_ / 4), n, out, head_dim_);
      return;
    }
    if (const auto acc = type_ == GgmlType::Q8_0   ? k.accumulate_q8_0
                         : type_ == GgmlType::Q4_0 ? k.accumulate_q4_0
                                                   : nullptr) {
      acc(p, base, static_cast<int64_t>(row_), n, out, head_dim_);
      return;
    }
    for (int64_t j = 0; j < n; ++j) cpu::axpy_row(k, type_, p[j], base + j * row_, out, head_dim_);
  }
  bool has_blocked_reads() const override { return type_ == GgmlType::F16; }
  void dot_keys_rows(int head, const float* q, int64_t q_stride, int64_t nq, const int64_t* n_of, float* scores,
                     int64_t sc_stride, int64_t key0) const override {
    if (type_ != GgmlType::F16) return KvStore::dot_keys_rows(head, q, q_stride, nq, n_of, scores, sc_stride, key0);
    cpu::kernels().dot_keys_block_f16(q, q_stride, nq, n_of, f16_head(head) + key0 * f16_stride(), f16_stride(), scores,
                                      sc_stride, head_dim_);
  }
  void accumulate_rows(int head, const float* p, int64_t p_stride, int64_t nq, const int64_t* n_of, float* out,
                       int64_t out_stride, int64_t key0) const override {
    if (type_ != GgmlType::F16) return KvStore::accumulate_rows(head, p, p_stride, nq, n_of, out, out_stride, key0);
    cpu::kernels().accumulate_block_f16(p, p_stride, nq, n_of, f16_head(head) + key0 * f16_stride(), f16_stride(), out,
                                        out_stride, head_dim_);
  }

 private:
  const uint16_t* f16_head(int head) const {
    return reinterpret_cast<const uint16_t*>(data_.data() + head * head_bytes_);
  }
  int64_t f16_stride() const { return static_cast<int64_t>(row_ / 2); }
  void grow(size_t bytes) {
    // Geometric growth from a 256-token start: a long conversation reallocates O(log n) times.
    if (bytes > data_.capacity()) data_.reserve(std::max(bytes, data_.capacity() + data_.capacity() / 16 + 64 * row_));
    data_.resize(bytes);
  }
  GgmlType type_;
  int n_heads_, head_dim_;
  size_t row_, head_bytes_;
  std::vector<uint8_t> data_;
  int64_t size_ = 0;
};

// What both KIVI stores hold: fp16 scales and minima, packed codes, and the fp16 window of the newest
// tokens (rows of n_heads * head_dim, oldest first). In time order: the optional fp16 sink (the first S
// tokens, kept for good), the quantized part, the window.
class KiviStore : public KvStore {
 public:
  KiviStore(const KvSpec& s, int n_heads, int head_dim)
      : s_(s), n_heads_(n_heads), d_(head_dim), code_bytes_(static_cast<size_t>(s.group * s.bits / 8)) {}
  void append(const float* rows, int64_t T) override {
    const int64_t to_sink = std::min<int64_t>(T, s_.sink - sink_size());
    if (to_sink > 0) {
      append_fp16(sink_, rows, to_sink);
      rows += to_sink * row();
      T -= to_sink;
    }
    append_fp16(fp_, rows, T);
  }
  int64_t size() const override { return sink_size() + n_quant_ + fp_size(); }
  int n_heads() const override { return n_heads_; }
  int head_dim() const override { return d_; }
  size_t bytes() const override {
    return (scale_.capacity() + min_.capacity() + fp_.capacity() + sink_.capacity()) * 2 + codes_.capacity();
  }
  void clear() override {
    for (auto* v : {&scale_, &min_, &fp_, &sink_}) std::vector<uint16_t>().swap(*v);
    std::vector<uint8_t>().swap(codes_);
    n_quant_ = 0;
  }
  std::pair<int64_t, int64_t> split_sizes() const override { return {n_quant_, sink_size() + fp_size()}; }
  KiviView kivi_view() const override {
    KiviView v;
    v.bits = s_.bits, v.group = s_.group;
    v.n_sink = sink_size(), v.n_quant = n_quant_, v.n_window = fp_size();
    v.sink = sink_.data(), v.scale = scale_.data(), v.min = min_.data(), v.window = fp_.data(), v.codes = codes_.data();
    v.n_entries = static_cast<int64_t>(scale_.size());
    return v;
  }

 protected:
  int64_t row() const { return int64_t(n_heads_) * d_; }
  int64_t fp_size() const { return static_cast<int64_t>(fp_.size()) / row(); }
  int64_t sink_size() const { return static_cast<int64_t>(sink_.size()) / row(); }
  void append_fp16(std::vector<uint16_t>& dst, const float* rows, int64_t T) {
    const size_t old = dst.size();
    grow_to(dst, old + T * row());
    cpu::kernels().f32_to_f16_row(rows, dst.data() + old, T * row());
  }
  // Room for `groups` more (scale, min, codes) entries, reserved at once.
  void reserve_groups(int64_t groups) {
    reserve_for(scale_, scale_.size() + groups);
    reserve_for(min_, min_.size() + groups);
    reserve_for(codes_, codes_.size() + groups * code_bytes_);
  }
  // Quantizes n values (stride apart) as one more group.
  void push_group(const float* x, int n, int stride, bool clip) {
    const size_t i = scale_.size();
    grow_to(scale_, i + 1);
    grow_to(min_, i + 1);
    grow_to(codes_, (i + 1) * code_bytes_);
    kivi_quantize_group(x, n, stride, s_.bits, &scale_[i], &min_[i], &codes_[i * code_bytes_], clip);
  }
  // Drops the oldest `tokens` of the window once they are quantized.
  void pop_window(int64_t tokens, int64_t keep_tokens) {
    fp_.erase(fp_.begin(), fp_.begin() + tokens * row());
    trim_window(fp_, static_cast<size_t>(keep_tokens * row()));
  }
  // Scores / value sums over `count` fp16 rows (the sink or the window) for this head's n_q queries.
  void score_fp16(const std::vector<uint16_t>& rows, int head, const float* q, int64_t q_stride, int n_q, int64_t count,
                  float* scores, int64_t sc_stride) const {
    const cpu::KernelTable& k = cpu::kernels();
    for (int i = 0; i < n_q; ++i)
      for (int64_t j = 0; j < count; ++j)
        scores[i * sc_stride + j] = k.dot_f16(&rows[j * row() + int64_t(head) * d_], q + i * q_stride, d_);
  }
  void accumulate_fp16(const std::vector<uint16_t>& rows, int head, const float* p, int64_t p_stride, int n_q,
                       int64_t count, float* out, int64_t out_stride) const {
    const cpu::KernelTable& k = cpu::kernels();
    for (int i = 0; i < n_q; ++i)
      for (int64_t j = 0; j < count; ++j)
        k.axpy_f16(p[i * p_stride + j], &rows[j * row() + int64_t(head) * d_], out + i * out_stride, d_);
  }

  KvSpec s_;
  int n_heads_, d_;
  size_t code_bytes_;
  int64_t n_quant_ = 0;
  std::vector<uint16_t> scale_, min_, fp_, sink_;
  std::vector<uint8_t> codes_;
};

// KIVI keys: per channel, groups of G consecutive tokens, codes packed along the token axis.
// Tokens leave the fp16 buffer R at a time (a chunked buffer of 0..R-1 tokens between steps).
class KiviKeyStore : public KiviStore {
 public:
  using KiviStore::KiviStore;
  void finish_step() override {
    const int64_t move = fp_size() / s_.residual * s_.residual;
    if (move == 0) return;
    reserve_groups(move / s_.group * row());
    std::vector<float> tmp(static_cast<size_t>(s_.group));
    for (int64_t g0 = 0; g0 < move; g0 += s_.group) {
      // one group = G tokens; for every (head, channel) in order: fp16 scale, fp16 min, packed codes
      for (int64_t ch = 0; ch < row(); ++ch) {
        for (int t = 0; t < s_.group; ++t) tmp[t] = fp16_to_fp32(fp_[(g0 + t) * row() + ch]);
        push_group(tmp.data(), s_.group, 1, s_.clip);
      }
    }
    n_quant_ += move;
    pop_window(move, s_.residual);
  }
  void dot_keys(int head, const float* q, int64_t n, float* scores) const override {
    dot_keys_multi(head, q, 0, 1, n, scores, 0);
  }
  bool shares_across_queries() const override { return true; }
  void dot_keys_multi(int head, const float* q, int64_t q_stride, int n_q, int64_t n, float* scores,
                      int64_t sc_stride) const override {
    const int64_t ns = std::min(n, sink_size());
    score_fp16(sink_, head, q, q_stride, n_q, ns, scores, sc_stride);
    n -= ns;
    scores += ns;
    const int64_t nq = std::min<int64_t>(n, n_quant_), full = nq / s_.group;
    const cpu::KernelTable& k = cpu::kernels();
    // Group g, channel c of this head is entry g * row() + head * d + c.
    const uint16_t* scale = scale_.data() + int64_t(head) * d_;
    const uint16_t* mn = min_.data() + int64_t(head) * d_;
    const uint8_t* codes = codes_.data() + static_cast<size_t>(int64_t(head) * d_) * code_bytes_;
    if (s_.group == 32) {
      k.kivi_keys(scale, mn, codes, row(), full, d_, s_.bits, q, q_stride, n_q, scores, sc_stride);
      if (nq > full * 32) {  // only when asked for fewer keys than are quantized: score the whole group aside
        float part[32];
        for (int i = 0; i < n_q; ++i) {
          k.kivi_keys(scale + full * row(), mn + full * row(), codes + full * row() * code_bytes_, row(), 1, d_,
                      s_.bits, q + i * q_stride, 0, 1, part, 0);
          std::copy(part, part + (nq - full * 32), scores + i * sc_stride + full * 32);
        }
      }
    } else {
      for (int i = 0; i < n_q; ++i) {
        const float* qi = q + i * q_stride;
        for (int64_t j = 0; j < nq; ++j) {
          const int64_t g = j / s_.group, e0 = g * row();
          float acc = 0.0f, beta = 0.0f;
          for (int c = 0; c < d_; ++c) {
            acc += qi[c] * fp16_to_fp32(scale[e0 + c]) *
                   static_cast<float>(code_at(codes + (e0 + c) * code_bytes_, static_cast<int>(j % s_.group), s_.bits));
            beta += qi[c] * fp16_to_fp32(mn[e0 + c]);
          }
          scores[i * sc_stride + j] = acc + beta;
        }
      }
    }
    score_fp16(fp_, head, q, q_stride, n_q, n - nq, scores + nq, sc_stride);
  }
  void accumulate(int, const float*, int64_t, float*) const override {
    fail(ErrorCode::kInternal, "kivi key store holds keys");
  }
};

// KIVI values: per token, groups of G channels; the R most recent tokens stay fp16 (sliding window).
// `clip` is for keys only: on SmolLM2 clipped value groups measured worse (KL 0.0125 vs 0.0065).
class KiviValueStore : public KiviStore {
 public:
  KiviValueStore(const KvSpec& s, int n_heads, int head_dim) : KiviStore(s, n_heads, head_dim) {
    if (head_dim % s.group != 0) {
      fail(ErrorCode::kUnsupported,
           "kivi values need a head dimension that is a multiple of G=" + std::to_string(s.group));
    }
  }
  void finish_step() override {
    const int64_t over = fp_size() - s_.residual;
    if (over <= 0) return;
    reserve_groups(over * (row() / s_.group));
    std::vector<float> tmp(static_cast<size_t>(row()));
    for (int64_t t = 0; t < over; ++t) {
      for (int64_t i = 0; i < row(); ++i) tmp[i] = fp16_to_fp32(fp_[t * row() + i]);
      for (int64_t g0 = 0; g0 < row(); g0 += s_.group) push_group(&tmp[g0], s_.group, 1, false);
    }
    n_quant_ += over;
    pop_window(over, s_.residual + 1);
  }
  void dot_keys(int, const float*, int64_t, float*) const override {
    fail(ErrorCode::kInternal, "kivi value store holds values");
  }
  KiviView kivi_view() const override {
    KiviView v = KiviStore::kivi_view();
    v.keys = false;
    return v;
  }
  void accumulate(int head, const float* p, int64_t n, float* out) const override {
    accumulate_multi(head, p, 0, 1, n, out, 0);
  }
  bool shares_across_queries() const override { return true; }
  void accumulate_multi(int head, const float* p, int64_t p_stride, int n_q, int64_t n, float* out,
                        int64_t out_stride) const override {
    const int64_t ns = std::min(n, sink_size());
    accumulate_fp16(sink_, head, p, p_stride, n_q, ns, out, out_stride);
    n -= ns;
    p += ns;
    const cpu::KernelTable& k = cpu::kernels();
    const int64_t groups_per_row = row() / s_.group, gph = d_ / s_.group;
    const int64_t nq = std::min(n, n_quant_);
    // Token t, channel group j of this head is entry t * groups_per_row + head * gph + j.
    const uint16_t* scale = scale_.data() + head * gph;
    const uint16_t* mn = min_.data() + head * gph;
    const uint8_t* codes = codes_.data() + static_cast<size_t>(head * gph) * code_bytes_;
    if (s_.group == 32) {
      k.kivi_values(scale, mn, codes, groups_per_row, nq, d_, s_.bits, p, p_stride, n_q, out, out_stride);
    } else {
      for (int i = 0; i < n_q; ++i)
        for (int64_t t = 0; t < nq; ++t)
          for (int64_t j = 0; j < gph; ++j) {
            const int64_t e = t * groups_per_row + j;
            const float pt = p[i * p_stride + t], ps = pt * fp16_to_fp32(scale[e]), pm = pt * fp16_to_fp32(mn[e]);
            for (int c = 0; c < s_.group; ++c)
              out[i * out_stride + j * s_.group + c] +=
                  ps * static_cast<float>(code_at(codes + e * code_bytes_, c, s_.bits)) + pm;
          }
    }
    accumulate_fp16(fp_, head, p + nq, p_stride, n_q, n - nq, out, out_stride);
  }
};

GgmlType row_type(const KvSpec& s) {
  switch (s.kind) {
    case KvSpec::Kind::kF32: return GgmlType::F32;
    case KvSpec::Kind::kF16: return GgmlType::F16;
    case KvSpec::Kind::kQ8_0: return GgmlType::Q8_0;
    case KvSpec::Kind::kQ4_0: return GgmlType::Q4_0;
    default: fail(ErrorCode::kInternal, "not a row format");
  }
}

}  // namespace

std::unique_ptr<KvStore> make_key_store(const KvSpec& s, int n_heads, int head_dim) {
  if (s.kind == KvSpec::Kind::kKivi) return std::make_unique<KiviKeyStore>(s, n_heads, head_dim);
  return std::make_unique<RowStore>(row_type(s), n_heads, head_dim);
}

std::unique_ptr<KvStore> make_value_store(const KvSpec& s, int n_heads, int head_dim) {
  if (s.kind == KvSpec::Kind::kKivi) return std::make_unique<KiviValueStore>(s, n_heads, head_dim);
  return std::make_unique<RowStore>(row_type(s), n_heads, head_dim);
}

}  // namespace pyrt
