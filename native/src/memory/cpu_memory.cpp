#include "memory/cpu_memory.h"

#include "pyrt/error.h"

namespace pyrt {

std::vector<float> SequenceCache::rows(int, bool) const {
  fail(ErrorCode::kUnsupported, "this device does not expose its cache rows");
}

namespace {

class CpuSequence : public SequenceCache {
 public:
  CpuSequence(const CacheLayout& self, const CacheLayout& cross, const KvSpec& k, const KvSpec& v)
      : self_layout_(self),
        self_(self.n_layers, self.n_kv_heads, self.head_dim, k, v),
        cross_(cross.n_layers, cross.n_kv_heads, cross.head_dim, k, v) {}
  size_t bytes() const override { return self_.bytes() + cross_.bytes(); }
  void clear() override { self_.clear(); }
  int64_t cross_length() const override { return cross_length_; }
  bool one_pass_prompts() const override {
    return self_.k_spec().kind == KvSpec::Kind::kKivi || self_.v_spec().kind == KvSpec::Kind::kKivi;
  }
  void add_stats(std::map<std::string, double>& out) const override {
    if (self_layout_.n_layers == 0) return;
    const auto [kq, kf] = self_.keys(0).split_sizes();
    const auto [vq, vf] = self_.values(0).split_sizes();
    out["kv_k_quantized_tokens"] = double(kq), out["kv_k_full_precision_tokens"] = double(kf);
    out["kv_v_quantized_tokens"] = double(vq), out["kv_v_full_precision_tokens"] = double(vf);
    if (cross_length_ >= 0)
      out["kv_self_bytes"] = double(self_.bytes()), out["kv_cross_bytes"] = double(cross_.bytes());
  }
  std::vector<float> rows(int layer, bool keys) const override {
    if (layer < 0 || layer >= self_layout_.n_layers) {
      fail(ErrorCode::kOutOfRange,
           "layer " + std::to_string(layer) + " is outside 0.." + std::to_string(self_layout_.n_layers - 1));
    }
    return self_.rows(layer, keys, self_layout_.n_kv_heads, self_layout_.head_dim);
  }

  CacheLayout self_layout_;
  KvCache self_, cross_;
  int64_t cross_length_ = -1;
};

AttentionOptions options_of(const AttentionSpec& s) {
  AttentionOptions o;
  o.scale = s.scale;
  o.head_map = s.head_map;
  o.causal = s.causal;
  if (const RelativeBias* bias = s.bias) {
    o.add_bias = [bias](int head, int64_t q_pos, int64_t n_keys, float* scores) {
      for (int64_t j = 0; j < n_keys; ++j) scores[j] += bias->at(head, j - q_pos);
    };
  }
  return o;
}

class CpuMemory : public KvMemory {
 public:
  CpuMemory(const KvSpec& k, const KvSpec& v, ThreadPool& pool) : k_(k), v_(v), pool_(pool) {}
  std::unique_ptr<SequenceCache> new_sequence(const CacheLayout& self, const CacheLayout& cross, int64_t) override {
    return std::make_unique<CpuSequence>(self, cross, k_, v_);
  }
  const KvSpec& key_spec() const override { return k_; }
  const KvSpec& value_spec() const override { return v_; }

  void attend(const AttentionSpec& s, const std::vector<SeqRows>& seqs, const float* q, const float* k, const float* v,
              float* out) override {
    const AttentionOptions opt = options_of(s);
    const int64_t qd = int64_t(s.shape.n_heads) * s.shape.head_dim,
                  kvd = int64_t(s.shape.n_kv_heads) * s.shape.head_dim;
    auto one = [&](const SeqRows& r, ThreadPool& pool) {
      const float* qr = q + r.row0 * qd;
      float* o = out + r.row0 * qd;
      switch (s.source) {
        case AttentionSpec::Source::kCached: {
          KvCache& c = static_cast<CpuSequence*>(r.cache)->self_;
          c.store(s.layer, r.pos0, r.n, k + r.row0 * kvd, v + r.row0 * kvd);
          attend(c.keys(s.layer), c.values(s.layer), qr, r.pos0, r.n, r.pos0 + r.n, s.shape, opt, o, pool);
          c.finish_step(s.layer);
          break;
        }
        case AttentionSpec::Source::kCross: {
          const CpuSequence& c = *static_cast<const CpuSequence*>(r.cache);
          attend(c.cross_.keys(s.layer), c.cross_.values(s.layer), qr, 0, r.n, c.cross_length_, s.shape, opt, o, pool);
          break;
        }
        case AttentionSpec::Source::kDense:
          attend_dense(qr, k + r.row0 * kvd, v + r.row0 * kvd, r.n, r.n, s.shape, opt, o, pool);
          break;
      }
    };
    // Several sequences (a batch of decode steps): one pool job, a task per sequence with its heads
    // inline, not one handoff per sequence.
    if (seqs.size() == 1) return one(seqs[0], pool_);
    pool_.run(int64_t(seqs.size()), [&](int64_t b) { one(seqs[size_t(b)], ThreadPool::inline_pool()); });
  }

  void store_cross(SequenceCache& c, int layer, const float* k, const float* v, int64_t n) override {
    KvCache& cross = static_cast<CpuSequence&>(c).cross_;
    cross.clear_layer(layer);
    cross.store(layer, 0, n, k, v);
    cross.finish_step(layer);
  }
  void set_cross_length(SequenceCache& c, int64_t n) override { static_cast<CpuSequence&>(c).cross_length_ = n; }

 private:
  // The kv_cache.h free function, not this class's override.
  static void attend(const KvStore& K, const KvStore& V, const float* q, int64_t q_pos0, int64_t T, int64_t n_keys,
                     const AttentionShape& s, const AttentionOptions& opt, float* out, ThreadPool& pool) {
    pyrt::attend(K, V, q, q_pos0, T, n_keys, s, opt, out, pool);
  }
  KvSpec k_, v_;
  ThreadPool& pool_;
};

}  // namespace

std::unique_ptr<KvMemory> make_cpu_memory(const KvSpec& k, const KvSpec& v, ThreadPool& pool) {
  return std::make_unique<CpuMemory>(k, v, pool);
}

}  // namespace pyrt
