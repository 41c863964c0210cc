// The GPU's KvMemory: a sequence's self-attention cache is reserved for its whole context up front, per
// layer [Hkv, n_ctx, row] in a row format the kernels read (f16, q8_0, q4_0) or as KIVI stores; cross-
// attention K/V are fp16 [Hkv, n, D]. Attention: one Flash-Decoding launch for a pass of single-token
// steps (any number of sequences), FlashAttention-2 per sequence otherwise (prompts, encoders,
// cross-attention, T5's relative bias).
#include "memory/cuda/cuda_memory.h"

#include <cmath>

#include "memory/cuda/kivi_store.h"
#include "pyrt/error.h"

namespace pyrt::cuda {

namespace {

KvFormat format_of(const KvSpec& s, const std::string& device) {
  switch (s.kind) {
    case KvSpec::Kind::kF16: return KvFormat::kF16;
    case KvSpec::Kind::kQ8_0: return KvFormat::kQ8_0;
    case KvSpec::Kind::kQ4_0: return KvFormat::kQ4_0;
    case KvSpec::Kind::kKivi: return KvFormat::kKivi;
    default: break;
  }
  fail(ErrorCode::kUnsupported, "device '" + device + "': KV cache format '" + s.name() +
                                    "' has no CUDA kernel (one of f16, q8_0, q4_0, kivi2, kivi4)");
}

struct LayerCache {
  DeviceBuffer k, v;  // row formats
  std::unique_ptr<KiviGpuStore> kivi_k, kivi_v;
};

class CudaSequence : public SequenceCache {
 public:
  CudaSequence(const CacheLayout& self, const CacheLayout& cross, KvFormat fmt, const KvSpec& k, const KvSpec& v,
               int64_t n_ctx)
      : self_(self), cross_(cross), fmt_(fmt), cap_(n_ctx), row_bytes_(size_t(kv_row_bytes(fmt, self.head_dim))) {
    if (n_ctx <= 0 || n_ctx > (int64_t(1) << 30))
      fail(ErrorCode::kInvalidArgument, "context size " + std::to_string(n_ctx) + " is out of range");
    layers_.resize(size_t(self.n_layers));
    for (LayerCache& l : layers_) {
      if (fmt == KvFormat::kKivi) {
        l.kivi_k = std::make_unique<KiviGpuStore>(k, true, self.n_kv_heads, self.head_dim, n_ctx);
        l.kivi_v = std::make_unique<KiviGpuStore>(v, false, self.n_kv_heads, self.head_dim, n_ctx);
      } else {
        l.k.reserve(size_t(self.n_kv_heads) * size_t(n_ctx) * row_bytes_);
        l.v.reserve(size_t(self.n_kv_heads) * size_t(n_ctx) * row_bytes_);
      }
    }
    cross_k_.resize(size_t(cross.n_layers)), cross_v_.resize(size_t(cross.n_layers));
  }
  size_t bytes() const override {
    size_t b = size_t(size_) * size_t(self_.n_layers) * 2 * size_t(self_.n_kv_heads) * row_bytes_;
    for (const LayerCache& l : layers_)
      if (l.kivi_k) b += l.kivi_k->bytes() + l.kivi_v->bytes();
    if (cross_length_ > 0)
      b +=
          size_t(cross_length_) * size_t(cross_.n_layers) * 2 * size_t(cross_.n_kv_heads) * size_t(cross_.head_dim) * 2;
    return b;
  }
  void clear() override {
    size_ = 0;
    for (LayerCache& l : layers_) {
      if (l.kivi_k) l.kivi_k->clear(), l.kivi_v->clear();
    }
  }
  int64_t cross_length() const override { return cross_length_; }
  bool one_pass_prompts() const override { return fmt_ == KvFormat::kKivi; }
  void add_stats(std::map<std::string, double>& out) const override {
    out["kv_reserved_bytes"] = double(2 * layers_.size() * (layers_.empty() ? 0 : layers_[0].k.bytes()));
    if (cross_length_ >= 0) {
      const size_t cross = cross_length_ > 0 ? size_t(cross_length_) * size_t(cross_.n_layers) * 4 *
                                                   size_t(cross_.n_kv_heads) * size_t(cross_.head_dim)
                                             : 0;
      out["kv_cross_bytes"] = double(cross), out["kv_self_bytes"] = double(bytes() - cross);
    }
  }

  CacheLayout self_, cross_;
  KvFormat fmt_;
  int64_t cap_, size_ = 0, cross_length_ = -1;
  size_t row_bytes_;
  std::vector<LayerCache> layers_;
  std::vector<DeviceBuffer> cross_k_, cross_v_;  // fp16 [Hkv, cross_length, D]
};

class CudaMemory : public KvMemory {
 public:
  CudaMemory(const KvSpec& k, const KvSpec& v, std::string device)
      : k_(k), v_(v), device_(std::move(device)), fmt_(format_of(k, device_)) {
    if (format_of(v, device_) != fmt_ || (fmt_ == KvFormat::kKivi && k.name() != v.name())) {
      fail(ErrorCode::kUnsupported, "device '" + device_ + "': keys and values need the same KV cache format (" +
                                        k.name() + " vs " + v.name() + ")");
    }
  }
  const KvSpec& key_spec() const override { return k_; }
  const KvSpec& value_spec() const override { return v_; }
  std::unique_ptr<SequenceCache> new_sequence(const CacheLayout& self, const CacheLayout& cross,
                                              int64_t n_ctx) override {
    if (self.n_layers > 0) check_head_dim("device '" + device_ + "'", self.head_dim);
    return std::make_unique<CudaSequence>(self, cross, fmt_, k_, v_, n_ctx);
  }

  void store_cross(SequenceCache& c, int layer, const float* k, const float* v, int64_t n) override {
    auto& s = static_cast<CudaSequence&>(c);
    const int H = s.cross_.n_kv_heads, D = s.cross_.head_dim;
    check_head_dim("device '" + device_ + "'", D);
    for (int kv = 0; kv < 2; ++kv) {
      DeviceBuffer& dst = kv ? s.cross_v_[size_t(layer)] : s.cross_k_[size_t(layer)];
      dst.reserve(size_t(H) * size_t(n) * size_t(D) * 2);
      check(kv_append(KvFormat::kF16, kv ? v : k, int(n), H, D, dst.as<void>(), int(n), 0, nullptr), "cross K/V");
    }
  }
  void set_cross_length(SequenceCache& c, int64_t n) override { static_cast<CudaSequence&>(c).cross_length_ = n; }

  void attend(const AttentionSpec& s, const std::vector<SeqRows>& seqs, const float* q, const float* k, const float* v,
              float* out) override {
    // Tiled and grouped KV heads agree when every query head has its own KV head.
    if (s.head_map == KvHeadMap::kTiled && s.shape.n_kv_heads != s.shape.n_heads) {
      fail(ErrorCode::kUnsupported,
           "device '" + device_ +
               "': tiled KV heads (query head h reads KV head h % n_kv) have no CUDA attention "
               "kernel; run this model on the CPU");
    }
    const AttentionShape& sh = s.shape;
    check_head_dim("device '" + device_ + "'", sh.head_dim);
    const int64_t qd = int64_t(sh.n_heads) * sh.head_dim, kvd = int64_t(sh.n_kv_heads) * sh.head_dim;
    const int64_t rows = seqs.back().row0 + seqs.back().n;
    half_q_.reserve(size_t(rows * qd) * 2);
    check(f32_to_f16(q, half_q_.as<half>(), rows * qd, nullptr), "q to fp16");
    const float scale = s.scale != 0.0f ? s.scale : 1.0f / std::sqrt(float(sh.head_dim));
    switch (s.source) {
      case AttentionSpec::Source::kCached: {
        bool steps = !s.bias;
        for (const SeqRows& r : seqs) {
          append(*static_cast<CudaSequence*>(r.cache), s.layer, r, k + r.row0 * kvd, v + r.row0 * kvd);
          steps = steps && r.n == 1;
        }
        if (steps) {
          decode_steps(s, seqs, scale, out);
        } else {
          for (const SeqRows& r : seqs) {
            auto& c = *static_cast<CudaSequence*>(r.cache);
            const int Sk = int(r.pos0 + r.n);
            const half *kh = nullptr, *vh = nullptr;
            int capacity = Sk;
            LayerCache& l = c.layers_[size_t(s.layer)];
            if (c.fmt_ == KvFormat::kF16) {
              kh = l.k.as<half>(), vh = l.v.as<half>(), capacity = int(c.cap_);
            } else {
              const size_t bytes = size_t(sh.n_kv_heads) * size_t(Sk) * size_t(sh.head_dim) * 2;
              k_f16_.reserve(bytes), v_f16_.reserve(bytes);
              if (c.fmt_ == KvFormat::kKivi) {
                DecodeParams p{};
                p.format = KvFormat::kKivi, p.B = 1, p.Hkv = sh.n_kv_heads, p.D = sh.head_dim;
                p.kivi_k = l.kivi_k->device_view(), p.kivi_v = l.kivi_v->device_view();
                check(kivi_to_f16(p, Sk, k_f16_.as<half>(), v_f16_.as<half>(), nullptr), "kivi_to_f16");
              } else {
                check(kv_to_f16(c.fmt_, l.k.as<void>(), sh.n_kv_heads, int(c.cap_), Sk, sh.head_dim, k_f16_.as<half>(),
                                nullptr),
                      "kv_to_f16 k");
                check(kv_to_f16(c.fmt_, l.v.as<void>(), sh.n_kv_heads, int(c.cap_), Sk, sh.head_dim, v_f16_.as<half>(),
                                nullptr),
                      "kv_to_f16 v");
              }
              kh = k_f16_.as<half>(), vh = v_f16_.as<half>();
            }
            flash(s, r, kh, vh, Sk, capacity, scale, out);
          }
        }
        for (const SeqRows& r : seqs) {  // after the step's attention, as on the CPU: KIVI windows move
          LayerCache& l = static_cast<CudaSequence*>(r.cache)->layers_[size_t(s.layer)];
          if (l.kivi_k) l.kivi_k->finish_step(), l.kivi_v->finish_step();
        }
        break;
      }
      case AttentionSpec::Source::kCross:
        for (const SeqRows& r : seqs) {
          auto& c = *static_cast<CudaSequence*>(r.cache);
          const int Sk = int(c.cross_length_);
          flash(s, r, c.cross_k_[size_t(s.layer)].as<half>(), c.cross_v_[size_t(s.layer)].as<half>(), Sk, Sk, scale,
                out);
        }
        break;
      case AttentionSpec::Source::kDense:
        for (const SeqRows& r : seqs) {  // keys / values of the pass's rows, as fp16 [Hkv, n, D]
          const size_t bytes = size_t(r.n * kvd) * 2;
          k_f16_.reserve(bytes), v_f16_.reserve(bytes);
          check(kv_append(KvFormat::kF16, k + r.row0 * kvd, int(r.n), sh.n_kv_heads, sh.head_dim, k_f16_.as<void>(),
                          int(r.n), 0, nullptr),
                "dense k");
          check(kv_append(KvFormat::kF16, v + r.row0 * kvd, int(r.n), sh.n_kv_heads, sh.head_dim, v_f16_.as<void>(),
                          int(r.n), 0, nullptr),
                "dense v");
          flash(s, r, k_f16_.as<half>(), v_f16_.as<half>(), int(r.n), int(r.n), scale, out);
        }
        break;
    }
  }

 private:
  void append(CudaSequence& c, int layer, const SeqRows& r, const float* k, const float* v) {
    if (r.pos0 + r.n > c.cap_) {
      fail(ErrorCode::kContextOverflow, "the device cache holds " + std::to_string(c.cap_) + " positions");
    }
    LayerCache& l = c.layers_[size_t(layer)];
    const int H = c.self_.n_kv_heads, D = c.self_.head_dim;
    if (l.kivi_k) {
      l.kivi_k->append(k, r.n);
      l.kivi_v->append(v, r.n);
    } else {
      check(kv_append(c.fmt_, k, int(r.n), H, D, l.k.as<void>(), int(c.cap_), int(r.pos0), nullptr), "kv append k");
      check(kv_append(c.fmt_, v, int(r.n), H, D, l.v.as<void>(), int(c.cap_), int(r.pos0), nullptr), "kv append v");
    }
    if (layer == 0) c.size_ = r.pos0 + r.n;
  }

  // FlashAttention over keys [Hkv, capacity, D] (the first Sk read) for one sequence's rows.
  void flash(const AttentionSpec& s, const SeqRows& r, const half* kh, const half* vh, int Sk, int capacity,
             float scale, float* out) {
    const AttentionShape& sh = s.shape;
    const int64_t qd = int64_t(sh.n_heads) * sh.head_dim;
    lse_.reserve(size_t(sh.n_heads) * size_t(r.n) * 4);
    FlashParams p{};
    p.q = half_q_.as<half>() + r.row0 * qd, p.k = kh, p.v = vh;
    p.out = out + r.row0 * qd, p.lse = lse_.as<float>();
    p.B = 1, p.Hq = sh.n_heads, p.Hkv = sh.n_kv_heads, p.Sq = int(r.n), p.Sk = Sk, p.D = sh.head_dim;
    p.scale = scale, p.causal = s.causal, p.q_token_major = true;
    p.kv_capacity = capacity;
    if (s.bias) {  // [Hq, Sq + Sk - 1]: entry m is the bias of relative position m - (Sk - 1)
      const int64_t n = r.n + Sk - 1;
      std::vector<float> b(size_t(sh.n_heads * n));
      for (int h = 0; h < sh.n_heads; ++h)
        for (int64_t m = 0; m < n; ++m) b[size_t(h * n + m)] = s.bias->at(h, m - (Sk - 1));
      bias_.upload(b.data(), b.size() * sizeof(float));
      p.rel_bias = bias_.as<float>();
    }
    check(flash_attn_fwd(p, nullptr), "flash_attn_fwd");
  }

  // One token per sequence over its own cache: one Flash-Decoding launch for all of them.
  void decode_steps(const AttentionSpec& s, const std::vector<SeqRows>& seqs, float scale, float* out) {
    const AttentionShape& sh = s.shape;
    const int B = int(seqs.size());
    auto& c0 = *static_cast<CudaSequence*>(seqs[0].cache);
    std::vector<int> lens;
    int max_len = 0;
    std::vector<KvSeq> rows;
    std::vector<KiviCache> kk, kv;
    for (const SeqRows& r : seqs) {
      auto& c = *static_cast<CudaSequence*>(r.cache);
      lens.push_back(int(r.pos0 + 1));
      max_len = std::max(max_len, lens.back());
      LayerCache& l = c.layers_[size_t(s.layer)];
      if (l.kivi_k) {
        kk.push_back(l.kivi_k->view()), kv.push_back(l.kivi_v->view());
      } else {
        rows.push_back(KvSeq{l.k.as<void>(), l.v.as<void>(), int(c.cap_)});
      }
    }
    seqlens_.upload(lens.data(), lens.size() * sizeof(int));
    DecodeParams p{};
    p.q = half_q_.as<half>(), p.seqlens = seqlens_.as<int>(), p.format = c0.fmt_;
    p.B = B, p.Hq = sh.n_heads, p.Hkv = sh.n_kv_heads, p.S_max = max_len, p.D = sh.head_dim;
    p.scale = scale;
    p.out = out;
    if (!kk.empty()) {
      kk.insert(kk.end(), kv.begin(), kv.end());  // keys of every sequence, then values
      kivi_.upload(kk.data(), kk.size() * sizeof(KiviCache));
      p.kivi_k = kivi_.as<KiviCache>(), p.kivi_v = kivi_.as<KiviCache>() + B;
    } else {
      seqs_.upload(rows.data(), rows.size() * sizeof(KvSeq));
      p.seqs = seqs_.as<KvSeq>();
    }
    lse_.reserve(size_t(B) * sh.n_heads * 4);
    p.lse = lse_.as<float>();
    if (B == 1) {  // one sequence: split-K over its keys (Flash-Decoding)
      p.n_splits = decode_auto_splits(c0.fmt_, 1, sh.n_kv_heads, sh.head_dim, max_len);
      o_partial_.reserve(size_t(sh.n_heads) * p.n_splits * sh.head_dim * 4);
      lse_partial_.reserve(size_t(sh.n_heads) * p.n_splits * 4);
      p.o_partial = o_partial_.as<float>(), p.lse_partial = lse_partial_.as<float>();
      check(decode_attn(p, nullptr), "decode_attn");
      return;
    }
    // Several: Lean Attention, the ragged caches' 64-key tiles cut evenly over the resident CTAs.
    const std::vector<int> prefix = lean_tile_prefix(lens, sh.n_kv_heads);
    const int n_ctas = lean_auto_ctas(c0.fmt_, sh.head_dim);
    const size_t slots = size_t(lean_partial_slots(n_ctas, B, sh.n_kv_heads)) * (sh.n_heads / sh.n_kv_heads);
    o_partial_.reserve(slots * sh.head_dim * 4), lse_partial_.reserve(slots * 4);
    p.o_partial = o_partial_.as<float>(), p.lse_partial = lse_partial_.as<float>();
    prefix_.upload(prefix.data(), prefix.size() * sizeof(int));
    check(decode_attn_lean(p, prefix_.as<int>(), prefix.back(), n_ctas, nullptr), "decode_attn_lean");
  }

  KvSpec k_, v_;
  std::string device_;
  KvFormat fmt_;
  DeviceBuffer half_q_, lse_, k_f16_, v_f16_, bias_, seqlens_, o_partial_, lse_partial_, seqs_, kivi_, prefix_;
};

}  // namespace

std::unique_ptr<KvMemory> make_cuda_memory(const KvSpec& k, const KvSpec& v, const std::string& device) {
  return std::make_unique<CudaMemory>(k, v, device);
}

}  // namespace pyrt::cuda
