#include "models/runner.h"

#include <algorithm>
#include <chrono>

#include "pyrt/error.h"

namespace pyrt {

Runner::Pass::~Pass() {
  for (size_t i = 0; i < slots_.size(); ++i) {
    if (slots_[i] && slots_[i] != bound_out_) be_->release(slots_[i]);
  }
}

void Runner::set_positions(Pass& p) const {
  p.positions_.assign(size_t(p.rows_), kPaddingPosition);
  for (const SeqRows& s : p.req_.seqs)
    for (int64_t r = 0; r < s.n; ++r) p.positions_[size_t(s.row0 + r)] = s.pos0 + r;
  p.pos_.pos = p.positions_.data();
  p.pos_.n_rows = p.rows_;
  p.pos_.contiguous = p.req_.seqs.size() == 1 && p.req_.seqs[0].row0 == 0 && p.req_.seqs[0].n == p.rows_;
  p.pos_.first_pos = p.pos_.contiguous ? p.req_.seqs[0].pos0 : 0;
}

std::unique_ptr<Runner::Pass> Runner::begin(const PassRequest& r) const {
  auto p = std::make_unique<Pass>();
  p->g_ = &g_;
  p->be_ = &be_;
  p->req_ = r;
  p->rows_ = r.rows;
  int64_t next = 0;
  for (const SeqRows& s : r.seqs) {
    if (s.row0 != next || s.n <= 0) fail(ErrorCode::kInternal, "a pass's sequences must cover its first rows in order");
    next += s.n;
  }
  if (next > r.rows) fail(ErrorCode::kInternal, "a pass's sequences cover more rows than it has");
  p->valid_ = next;
  for (size_t i = 1; i < r.out_rows.size(); ++i) {
    if (r.out_rows[i] <= r.out_rows[i - 1]) fail(ErrorCode::kInternal, "output rows must increase");
  }
  if (!r.out_rows.empty() && (r.out_rows.front() < 0 || r.out_rows.back() >= next)) {
    fail(ErrorCode::kInternal, "output rows must be valid rows of the pass");
  }
  if (r.observer && !be_.host_memory()) {
    fail(ErrorCode::kUnsupported, "linear observers need a backend in host memory (the CPU)");
  }
  set_positions(*p);
  const bool has_output = g_.output().id >= 0;  // graphs that only write caches (cross K/V) have none
  if (!has_output && (r.out || !r.out_rows.empty())) fail(ErrorCode::kInternal, "this graph has no output rows");
  p->out_slot_ = has_output ? g_.slot(g_.output().id) : -1;
  if (!has_output)
    p->pick_at_ = SIZE_MAX;  // every row runs to the end
  else
    p->pick_at_ = r.pick_rows_early && !r.observer ? g_.rows_independent_from() : g_.head_begin();
  p->slots_.assign(g_.slot_widths().size(), nullptr);
  const int64_t n_out = int64_t(r.out_rows.size());
  // The caller's buffer can be the output's slot when the output is written after rows were picked.
  const bool bind = has_output && r.out && be_.host_memory() && n_out > 0 &&
                    (p->pick_at_ <= g_.first_def(g_.output()) || n_out == r.rows);
  for (size_t i = 0; i < p->slots_.size(); ++i) {
    if (int(i) == p->out_slot_ && bind) {
      p->bound_out_ = r.out;  // the output linear writes the caller's buffer: no copy of the logits
      p->slots_[i] = r.out;
      continue;
    }
    p->slots_[i] = be_.alloc(std::max<int64_t>(1, r.rows) * g_.slot_widths()[i]);
  }
  p->scratch_ = be_.begin_pass(p->pos_);
  return p;
}

void Runner::pick_rows(Pass& p) const {
  p.picked_ = true;
  const std::vector<int64_t>& keep = p.req_.out_rows;
  bool identity = int64_t(keep.size()) == p.rows_;
  for (size_t i = 0; identity && i < keep.size(); ++i) identity = keep[i] == int64_t(i);
  if (identity) return;
  if (keep.empty()) {
    p.done_ = true;
    return;
  }
  bool prefix = true;  // rows 0..n-1: nothing moves
  for (size_t i = 0; prefix && i < keep.size(); ++i) prefix = keep[i] == int64_t(i);
  if (!prefix) {
    for (int v : g_.live_across(p.pick_at_)) be_.gather_rows(p.ptr(v), keep, g_.width(Val{v}), p.ptr(v));
  }
  std::vector<int64_t> pos;
  for (int64_t r : keep) pos.push_back(p.positions_[size_t(r)]);
  p.positions_ = pos;
  p.rows_ = p.valid_ = int64_t(keep.size());
  p.pos_.pos = p.positions_.data();
  p.pos_.n_rows = p.rows_;
  p.pos_.contiguous = false;
}

void Runner::observe(const Pass& p, const Node& n) const {
  if (!p.req_.observer) return;
  const int64_t valid = std::min(p.valid_, p.rows_);
  for (size_t i = 0; i < n.weights.size(); ++i)
    (*p.req_.observer)(*n.weights[i], p.ptr(n.in[0]), valid, p.ptr(n.out[i]));
}

void Runner::run_node(Pass& p, size_t i) const {
  if (!p.picked_ && i == p.pick_at_) pick_rows(p);
  if (p.done_) return;
  const Node& n = g_.nodes()[i];
  const int64_t T = p.rows_;
  auto ptr = [&](int k) { return p.ptr(n.in[size_t(k)]); };
  auto out = [&](int k) { return p.ptr(n.out[size_t(k)]); };
  auto width = [&](int value) { return g_.width(Val{value}); };
  switch (n.op) {
    case OpKind::kEmbed: be_.embed(*n.table, p.req_.ids, T, n.scale, out(0)); break;
    case OpKind::kInput:
      if (!p.req_.input) fail(ErrorCode::kInternal, "this graph takes input rows");
      be_.upload(p.req_.input, T * width(n.out[0]), out(0));
      break;
    case OpKind::kNorm: be_.norm(n.norm, ptr(0), out(0), T * (width(n.in[0]) / n.norm.width)); break;
    case OpKind::kLinear: {
      std::vector<float*> ys;
      for (size_t k = 0; k < n.out.size(); ++k) ys.push_back(out(int(k)));
      be_.linear(n.weights.data(), n.biases.data(), ys.data(), int(n.weights.size()), ptr(0), T);
      if (i >= g_.head_begin()) break;  // placement, stats and calibration cover the layers; the head is not placed
      for (const Weight* w : n.weights) {
        ++p.counters.linear_calls;
        p.counters.linear_macs += double(T) * double(w->rows) * double(w->cols);
      }
      observe(p, n);
      break;
    }
    case OpKind::kRope:
      be_.rope(*n.rope, ptr(0), n.rope_heads[0], p.pos_, *p.scratch_);
      be_.rope(*n.rope, ptr(1), n.rope_heads[1], p.pos_, *p.scratch_);
      break;
    case OpKind::kAttention: {
      const auto t0 = std::chrono::steady_clock::now();
      if (p.valid_ < T) be_.zero(out(0), T * width(n.out[0]));  // padding rows attend nowhere: they stay 0
      const bool cross = n.attn.source == AttentionSpec::Source::kCross;
      mem_.attend(n.attn, p.req_.seqs, ptr(0), cross ? nullptr : ptr(1), cross ? nullptr : ptr(2), out(0));
      p.counters.attention_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      break;
    }
    case OpKind::kAdd: be_.add(ptr(0), ptr(1), T * width(n.in[0])); break;
    case OpKind::kActivate: be_.activate(n.act, ptr(0), n.in.size() > 1 ? ptr(1) : nullptr, T * width(n.in[0])); break;
    case OpKind::kScale: be_.scale(ptr(0), n.scale, T * width(n.in[0])); break;
    case OpKind::kPositions:
      for (int64_t r = 0; r < T; ++r) {
        const int64_t pos = p.positions_[size_t(r)];
        if (pos != kPaddingPosition && (pos < 0 || pos >= n.n_positions)) {
          fail(ErrorCode::kOutOfRange, "position " + std::to_string(pos) + " is outside the model's positions 0.." +
                                           std::to_string(n.n_positions - 1));
        }
      }
      be_.add_positions(n.positions, width(n.in[0]), p.pos_, ptr(0));
      break;
    case OpKind::kStoreCross:
      for (const SeqRows& s : p.req_.seqs) {
        const int64_t w = width(n.in[0]);
        mem_.store_cross(*s.cache, n.layer, ptr(0) + s.row0 * w, ptr(1) + s.row0 * w, s.n);
      }
      break;
  }
}

void Runner::finish(Pass& p) const {
  if (!p.picked_ && p.pick_at_ >= g_.nodes().size()) pick_rows(p);
  if (p.done_ || !p.req_.out || p.req_.out_rows.empty() || p.bound_out_) return;
  const int64_t w = g_.width(g_.output());
  if (p.rows_ == int64_t(p.req_.out_rows.size())) {
    be_.download(p.ptr(g_.output().id), p.rows_ * w, p.req_.out);
  } else {  // rows were not picked before the output (a graph without a head): pick them now
    const float* src = p.ptr(g_.output().id);
    for (size_t i = 0; i < p.req_.out_rows.size(); ++i)
      be_.download(src + p.req_.out_rows[i] * w, w, p.req_.out + int64_t(i) * w);
  }
}

void Runner::run(const PassRequest& r, PassCounters* counters) const {
  auto p = begin(r);
  for (size_t i = 0; i < g_.nodes().size(); ++i) run_node(*p, i);
  finish(*p);
  if (counters) {
    counters->linear_calls += p->counters.linear_calls;
    counters->linear_macs += p->counters.linear_macs;
    counters->attention_s += p->counters.attention_s;
  }
}

}  // namespace pyrt
