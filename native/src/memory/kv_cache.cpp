#include "memory/kv_cache.h"

#include <algorithm>
#include <cmath>

#include "backends/cpu/kernels.h"
#include "pyrt/error.h"

namespace pyrt {

KvCache::KvCache(int n_layers, int n_kv_heads, int head_dim, const KvSpec& k_spec, const KvSpec& v_spec)
    : k_spec_(k_spec), v_spec_(v_spec) {
  for (int i = 0; i < n_layers; ++i) {
    k_.push_back(make_key_store(k_spec, n_kv_heads, head_dim));
    v_.push_back(make_value_store(v_spec, n_kv_heads, head_dim));
  }
}

void KvCache::store(int layer, int64_t pos, int64_t T, const float* k, const float* v) {
  if (k_[layer]->size() != pos || v_[layer]->size() != pos) {
    fail(ErrorCode::kInternal, "kv cache of layer " + std::to_string(layer) + " holds " +
                                   std::to_string(k_[layer]->size()) + " tokens, expected " + std::to_string(pos));
  }
  k_[layer]->append(k, T);
  v_[layer]->append(v, T);
}

std::vector<float> KvCache::rows(int layer, bool keys, int n_kv_heads, int head_dim) const {
  const KvStore& st = keys ? *k_[layer] : *v_[layer];
  const int64_t n = st.size(), width = int64_t(n_kv_heads) * head_dim;
  std::vector<float> out(static_cast<size_t>(n * width)),
      unit(static_cast<size_t>(std::max<int64_t>(n, head_dim)), 0.0f);
  std::vector<float> col(static_cast<size_t>(std::max<int64_t>(n, head_dim)));
  for (int h = 0; h < n_kv_heads; ++h) {
    if (keys) {  // q = e_c gives every key's channel c
      for (int c = 0; c < head_dim; ++c) {
        unit[c] = 1.0f;
        st.dot_keys(h, unit.data(), n, col.data());
        unit[c] = 0.0f;
        for (int64_t j = 0; j < n; ++j) out[j * width + int64_t(h) * head_dim + c] = col[j];
      }
    } else {  // p = e_j gives value row j
      for (int64_t j = 0; j < n; ++j) {
        unit[j] = 1.0f;
        std::fill(col.begin(), col.begin() + head_dim, 0.0f);
        st.accumulate(h, unit.data(), n, col.data());
        unit[j] = 0.0f;
        std::copy(col.begin(), col.begin() + head_dim, out.begin() + j * width + int64_t(h) * head_dim);
      }
    }
  }
  return out;
}

void KvCache::finish_step(int layer) {
  k_[layer]->finish_step();
  v_[layer]->finish_step();
}

size_t KvCache::bytes() const {
  size_t total = 0;
  for (size_t i = 0; i < k_.size(); ++i) total += k_[i]->bytes() + v_[i]->bytes();
  return total;
}

void KvCache::clear_layer(int layer) {
  k_[layer]->clear();
  v_[layer]->clear();
}

void KvCache::clear() {
  for (size_t i = 0; i < k_.size(); ++i) {
    k_[i]->clear();
    v_[i]->clear();
  }
}

// Queries per task of prefill's blocked attention: enough rows to share each key and value load
// several ways, few enough that a long prompt still makes many tasks.
constexpr int64_t kBlockQueries = 24;
// Past this many keys a block's score rows (24 x n floats) outgrow L2 and are taken in tiles: the
// tile's rows stay in L1/L2 from the key scores through the value sums.
constexpr int64_t kOnlineFromKeys = 2048, kKeyTile = 1024;

namespace {

// One query head's block of nq rows (row r over keys 0 .. n_of[r] - 1) through the keys `tile` at a
// time: per row a running maximum m and sum l of exp(score - m); when a tile raises m, the output so
// far and l are rescaled by exp(m_old - m_new); at the end the output is divided by l. `sc` holds
// nq x tile floats.
void online_softmax_tiles(const KvStore& K, const KvStore& V, int kv_head, const float* q, int64_t q_stride, int64_t nq,
                          const int64_t* n_of, int64_t tile, float scale, const cpu::KernelTable& kt, float* sc,
                          float* out, int64_t d) {
  float m[kBlockQueries], l[kBlockQueries];
  int64_t n = 0;
  for (int64_t r = 0; r < nq; ++r) {
    m[r] = -INFINITY, l[r] = 0.0f, n = std::max(n, n_of[r]);
    std::fill_n(out + r * q_stride, d, 0.0f);
  }
  int64_t in_tile[kBlockQueries];
  for (int64_t j0 = 0; j0 < n; j0 += tile) {
    const int64_t tn = std::min(tile, n - j0);
    for (int64_t r = 0; r < nq; ++r) in_tile[r] = std::clamp<int64_t>(n_of[r] - j0, 0, tn);
    K.dot_keys_rows(kv_head, q, q_stride, nq, in_tile, sc, tn, j0);
    for (int64_t r = 0; r < nq; ++r) {
      float* row = sc + r * tn;
      const int64_t k = in_tile[r];
      if (k > 0) {
        float mx = m[r];
        for (int64_t j = 0; j < k; ++j) mx = std::max(mx, row[j] *= scale);
        const float rescale = std::exp(m[r] - mx);  // 0 on the first tile (m = -inf), 1 if m held
        l[r] = l[r] * rescale + kt.exp_shift_sum(row, k, mx);
        m[r] = mx;
        if (rescale != 1.0f)
          for (int64_t c = 0; c < d; ++c) out[r * q_stride + c] *= rescale;
      }
      std::fill(row + k, row + tn, 0.0f);
    }
    V.accumulate_rows(kv_head, sc, tn, nq, in_tile, out, q_stride, j0);
  }
  for (int64_t r = 0; r < nq; ++r) {
    if (l[r] <= 0.0f) continue;  // no keys: the row stays 0
    const float inv = 1.0f / l[r];
    for (int64_t c = 0; c < d; ++c) out[r * q_stride + c] *= inv;
  }
}

}  // namespace

void attend(const KvStore& K, const KvStore& V, const float* q, int64_t q_pos0, int64_t T, int64_t n_keys,
            const AttentionShape& s, const AttentionOptions& opt, float* out, ThreadPool& pool) {
  if (K.size() < n_keys || V.size() < n_keys) {
    fail(ErrorCode::kInternal, "attention over " + std::to_string(n_keys) + " keys but the stores hold " +
                                   std::to_string(K.size()) + "/" + std::to_string(V.size()));
  }
  const int group = s.n_heads / s.n_kv_heads;
  const int64_t d = s.head_dim, q_stride = static_cast<int64_t>(s.n_heads) * d;
  const float scale = opt.scale != 0.0f ? opt.scale : 1.0f / std::sqrt(static_cast<float>(d));
  const cpu::KernelTable& kt = cpu::kernels();
  // Softmax of one query row's n scores in place, as probabilities.
  auto softmax = [&](int h, int64_t t, int64_t n, float* sc) {
    for (int64_t j = 0; j < n; ++j) sc[j] *= scale;
    if (opt.add_bias) opt.add_bias(h, q_pos0 + t, n, sc);
    float mx = -INFINITY;
    for (int64_t j = 0; j < n; ++j) mx = std::max(mx, sc[j]);
    const float inv = 1.0f / kt.exp_shift_sum(sc, n, mx);
    for (int64_t j = 0; j < n; ++j) sc[j] *= inv;
  };
  if (T > 1 && K.has_blocked_reads() && V.has_blocked_reads()) {
    // Prefill: blocks of queries per head read the keys and values once for the whole block (the
    // stores' blocked kernels, each row's numbers what the per-row path below gives). Tasks are (block,
    // KV head) with the group's query heads in turn, so the block's keys stay in cache between them.
    const int64_t n_blocks = (T + kBlockQueries - 1) / kBlockQueries;
    pool.run(n_blocks * s.n_kv_heads, [&](int64_t task) {
      thread_local std::vector<float> sc;
      // Last blocks first: with a causal mask they read the most keys, and the pool hands tasks out in
      // order, so the long ones start early and the short ones fill the gaps at the end.
      const int64_t block = opt.causal ? n_blocks - 1 - task / s.n_kv_heads : task / s.n_kv_heads;
      const int64_t t0 = block * kBlockQueries, nt = std::min(kBlockQueries, T - t0);
      const int g = static_cast<int>(task % s.n_kv_heads);
      int64_t n_of[kBlockQueries];
      for (int64_t r = 0; r < nt; ++r)
        n_of[r] = std::max<int64_t>(0, opt.causal ? std::min(n_keys, q_pos0 + t0 + r + 1) : n_keys);
      // Each row's path follows from its own key count (n_of never decreases along the block), so any
      // chunking of a prompt gives every row the same bits: rows up to online_from keys take the exact
      // pass, longer ones the online tiles.
      const int64_t online_from = opt.online_from > 0 ? opt.online_from : kOnlineFromKeys;
      const int64_t tile = opt.key_tile > 0 ? opt.key_tile : kKeyTile;
      int64_t n_exact = 0;
      while (n_exact < nt && (opt.add_bias || n_of[n_exact] <= online_from)) ++n_exact;
      const int64_t n_short = n_exact > 0 ? n_of[n_exact - 1] : 0;  // the exact rows' longest
      sc.resize(static_cast<size_t>(std::max(n_exact * std::max<int64_t>(n_short, 1), (nt - n_exact) * tile)));
      for (int i = 0; i < group; ++i) {
        const int h = opt.head_map == KvHeadMap::kTiled ? g + i * s.n_kv_heads : g * group + i;
        const float* qh = q + t0 * q_stride + h * d;
        float* oh = out + t0 * q_stride + h * d;
        if (n_exact < nt) {
          online_softmax_tiles(K, V, g, qh + n_exact * q_stride, q_stride, nt - n_exact, n_of + n_exact, tile, scale,
                               kt, sc.data(), oh + n_exact * q_stride, d);
        }
        for (int64_t r = 0; r < n_exact; ++r) std::fill_n(oh + r * q_stride, d, 0.0f);
        if (n_short == 0) continue;
        K.dot_keys_rows(g, qh, q_stride, n_exact, n_of, sc.data(), n_short);
        for (int64_t r = 0; r < n_exact; ++r) {
          float* row = sc.data() + r * n_short;
          if (n_of[r] > 0) softmax(h, t0 + r, n_of[r], row);
          std::fill(row + n_of[r], row + n_short, 0.0f);
        }
        V.accumulate_rows(g, sc.data(), n_short, n_exact, n_of, oh, q_stride);
      }
    });
    return;
  }
  if (group > 1 && K.shares_across_queries() && V.shares_across_queries()) {
    // One task per (token, KV head) with all the query heads that read it: the stores unpack each
    // block of codes once for the whole group. Every query's numbers are the per-head path's.
    const int64_t head_step = opt.head_map == KvHeadMap::kTiled ? s.n_kv_heads : 1;  // between a group's heads
    pool.run(T * s.n_kv_heads, [&](int64_t task) {
      thread_local std::vector<float> scores;
      const int64_t t = task / s.n_kv_heads;
      const int g = static_cast<int>(task % s.n_kv_heads);
      const int h0 = opt.head_map == KvHeadMap::kTiled ? g : g * group;
      const int64_t n = opt.causal ? std::min(n_keys, q_pos0 + t + 1) : n_keys;
      const float* qg = q + t * q_stride + h0 * d;
      float* og = out + t * q_stride + h0 * d;
      for (int i = 0; i < group; ++i) std::fill(og + i * head_step * d, og + i * head_step * d + d, 0.0f);
      if (n <= 0) return;
      scores.resize(static_cast<size_t>(group * n));
      K.dot_keys_multi(g, qg, head_step * d, group, n, scores.data(), n);
      for (int i = 0; i < group; ++i) softmax(static_cast<int>(h0 + i * head_step), t, n, scores.data() + i * n);
      V.accumulate_multi(g, scores.data(), n, group, n, og, head_step * d);
    });
    return;
  }
  pool.run(T * s.n_heads, [&](int64_t task) {
    thread_local std::vector<float> scores;
    const int64_t t = task / s.n_heads;
    const int h = static_cast<int>(task % s.n_heads);
    const int kvh = opt.head_map == KvHeadMap::kTiled ? h % s.n_kv_heads : h / group;
    const int64_t n = opt.causal ? std::min(n_keys, q_pos0 + t + 1) : n_keys;
    const float* qh = q + t * q_stride + h * d;
    float* o = out + t * q_stride + h * d;
    std::fill(o, o + d, 0.0f);
    if (n <= 0) return;
    scores.resize(static_cast<size_t>(n));
    K.dot_keys(kvh, qh, n, scores.data());
    softmax(h, t, n, scores.data());
    V.accumulate(kvh, scores.data(), n, o);
  });
}

void attend_dense(const float* q, const float* k, const float* v, int64_t T, int64_t n_keys, const AttentionShape& s,
                  const AttentionOptions& opt, float* out, ThreadPool& pool) {
  KvSpec f32;
  f32.kind = KvSpec::Kind::kF32;
  auto K = make_key_store(f32, s.n_kv_heads, s.head_dim);
  auto V = make_value_store(f32, s.n_kv_heads, s.head_dim);
  K->append(k, n_keys);
  V->append(v, n_keys);
  attend(*K, *V, q, 0, T, n_keys, s, opt, out, pool);
}

void attend_causal(const KvCache& cache, int layer, const float* q, int64_t n_past, int64_t T, const AttentionShape& s,
                   float* out, ThreadPool& pool) {
  attend(cache.keys(layer), cache.values(layer), q, n_past, T, n_past + T, s, AttentionOptions{}, out, pool);
}

}  // namespace pyrt
