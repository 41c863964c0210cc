#include "models/graph.h"

#include <algorithm>
#include <map>
#include <set>

#include "pyrt/error.h"

namespace pyrt {

Val GraphBuilder::value(int64_t width) {
  if (width <= 0) fail(ErrorCode::kInternal, "a graph value needs a positive width");
  widths_.push_back(width);
  return Val{int(widths_.size()) - 1};
}

Node& GraphBuilder::add(OpKind op, std::vector<int> in, std::vector<int> out) {
  for (int v : in) {
    if (v < 0 || v >= int(widths_.size())) fail(ErrorCode::kInternal, "a graph node reads an undefined value");
  }
  Node n;
  n.op = op;
  n.in = std::move(in);
  n.out = std::move(out);
  n.layer = layer_;
  nodes_.push_back(std::move(n));
  return nodes_.back();
}

Val GraphBuilder::input(int64_t width) {
  const Val v = value(width);
  add(OpKind::kInput, {}, {v.id});
  return v;
}

Val GraphBuilder::embed(const Weight& table, float scale) {
  const Val v = value(table.cols);
  Node& n = add(OpKind::kEmbed, {}, {v.id});
  n.table = &table;
  n.scale = scale;
  return v;
}

Val GraphBuilder::norm(Val x, const NormSpec& s) {
  if (s.width <= 0 || widths_[size_t(x.id)] % s.width) fail(ErrorCode::kInternal, "norm width does not divide the row");
  const Val v = value(widths_[size_t(x.id)]);
  add(OpKind::kNorm, {x.id}, {v.id}).norm = s;
  return v;
}

std::vector<Val> GraphBuilder::linear(Val x, const std::vector<const Weight*>& ws, const std::string& name,
                                      const std::vector<const float*>& biases) {
  std::vector<Val> outs;
  std::vector<int> ids;
  for (const Weight* w : ws) {
    if (w->cols != widths_[size_t(x.id)]) {
      fail(ErrorCode::kInternal, "weight '" + w->name + "' takes " + std::to_string(w->cols) +
                                     " inputs, the value has " + std::to_string(widths_[size_t(x.id)]));
    }
    outs.push_back(value(w->rows));
    ids.push_back(outs.back().id);
  }
  Node& n = add(OpKind::kLinear, {x.id}, ids);
  n.name = name;
  n.weights = ws;
  n.biases = biases;
  n.biases.resize(ws.size(), nullptr);
  return outs;
}

Val GraphBuilder::linear(Val x, const Weight& w, const std::string& name, const float* bias) {
  return linear(x, {&w}, name, {bias})[0];
}

void GraphBuilder::rope(Val q, int q_heads, Val k, int k_heads, const RopeSpec& s) {
  Node& n = add(OpKind::kRope, {q.id, k.id}, {});
  n.rope = &s;
  n.rope_heads[0] = q_heads, n.rope_heads[1] = k_heads;
}

Val GraphBuilder::attention(Val q, Val k, Val v, const AttentionSpec& s) {
  const Val out = value(widths_[size_t(q.id)]);
  std::vector<int> in{q.id};
  if (s.source != AttentionSpec::Source::kCross) in.insert(in.end(), {k.id, v.id});
  Node& n = add(OpKind::kAttention, in, {out.id});
  n.attn = s;
  n.layer = s.layer;
  return out;
}

void GraphBuilder::residual(Val x, Val y) {
  add(OpKind::kAdd, {x.id, y.id}, {});
}

void GraphBuilder::activate(Val x, Activation a, Val up) {
  std::vector<int> in{x.id};
  if (up.id >= 0) in.push_back(up.id);
  add(OpKind::kActivate, in, {}).act = a;
}

void GraphBuilder::scale(Val x, float s) {
  add(OpKind::kScale, {x.id}, {}).scale = s;
}

void GraphBuilder::positions(Val x, const float* table, int64_t n_positions) {
  Node& n = add(OpKind::kPositions, {x.id}, {});
  n.positions = table;
  n.n_positions = n_positions;
}

void GraphBuilder::store_cross(int layer, Val k, Val v) {
  add(OpKind::kStoreCross, {k.id, v.id}, {}).layer = layer;
}

Val GraphBuilder::ffn(Val x, const Ffn& f) {
  if (f.gate) {
    const std::vector<Val> gu = linear(x, {f.gate, f.up}, "gate_up", {f.b_gate, f.b_up});
    activate(gu[0], f.act, gu[1]);
    return linear(gu[0], *f.down, "ffn_down", f.b_down);
  }
  const Val h = linear(x, *f.up, "ffn_up", f.b_up);
  activate(h, f.act);
  return linear(h, *f.down, "ffn_down", f.b_down);
}

Graph GraphBuilder::finish(Val output) {
  Graph g;
  g.nodes_ = std::move(nodes_);
  g.widths_ = std::move(widths_);
  g.output_ = output;
  const size_t n_nodes = g.nodes_.size(), n_vals = g.widths_.size();
  g.head_begin_ = std::min(head_begin_, n_nodes);
  g.rows_independent_from_ = 0;
  for (size_t i = 0; i < n_nodes; ++i) {
    if (g.nodes_[i].op == OpKind::kAttention) g.rows_independent_from_ = i + 1;
  }
  g.rows_independent_from_ = std::min(g.rows_independent_from_, g.head_begin_);
  // Lifetimes: a value is written by its first node and dies after its last reader (the output lives to
  // the end). Values whose lifetimes do not overlap share a buffer slot, so a 30-layer graph holds as
  // many buffers as one layer does.
  g.first_def_.assign(n_vals, SIZE_MAX);
  g.last_use_.assign(n_vals, 0);
  for (size_t i = 0; i < n_nodes; ++i) {
    for (int v : g.nodes_[i].out) g.first_def_[size_t(v)] = std::min(g.first_def_[size_t(v)], i);
    for (int v : g.nodes_[i].in) {
      if (g.first_def_[size_t(v)] == SIZE_MAX)
        fail(ErrorCode::kInternal, "a graph node reads a value before it is written");
      g.last_use_[size_t(v)] = std::max(g.last_use_[size_t(v)], i);
    }
    for (int v : g.nodes_[i].out) g.last_use_[size_t(v)] = std::max(g.last_use_[size_t(v)], i);
  }
  if (output.id >= 0) {  // Val{}: a graph that only writes caches
    if (size_t(output.id) >= n_vals || g.first_def_[size_t(output.id)] == SIZE_MAX)
      fail(ErrorCode::kInternal, "the graph's output is never written");
    g.last_use_[size_t(output.id)] = n_nodes;
  }
  g.slot_of_.assign(n_vals, -1);
  std::multimap<int64_t, int> free_slots;  // width -> slot
  std::vector<std::vector<int>> dying(n_nodes + 1);
  for (size_t v = 0; v < n_vals; ++v) {
    if (g.first_def_[v] != SIZE_MAX) dying[g.last_use_[v]].push_back(int(v));
  }
  for (size_t i = 0; i < n_nodes; ++i) {
    for (int v : g.nodes_[i].out) {
      if (g.slot_of_[size_t(v)] >= 0) continue;
      const int64_t w = g.widths_[size_t(v)];
      auto it = v == output.id ? free_slots.end() : free_slots.find(w);  // the output gets its own slot
      if (it != free_slots.end()) {
        g.slot_of_[size_t(v)] = it->second;
        free_slots.erase(it);
      } else {
        g.slot_of_[size_t(v)] = int(g.slot_widths_.size());
        g.slot_widths_.push_back(w);
      }
    }
    for (int v : dying[i]) {
      if (v != output.id) free_slots.emplace(g.widths_[size_t(v)], g.slot_of_[size_t(v)]);
    }
  }
  return g;
}

std::vector<int> Graph::live_across(size_t i) const {
  std::vector<int> out;
  for (size_t v = 0; v < widths_.size(); ++v) {
    if (first_def_[v] < i && last_use_[v] >= i && first_def_[v] != SIZE_MAX) out.push_back(int(v));
  }
  return out;
}

std::vector<const Weight*> Graph::linear_weights() const {
  std::vector<const Weight*> out;
  std::set<const Weight*> seen;
  for (const Node& n : nodes_)
    for (const Weight* w : n.weights)
      if (seen.insert(w).second) out.push_back(w);
  return out;
}

std::vector<const Weight*> Graph::tables() const {
  std::vector<const Weight*> out;
  for (const Node& n : nodes_)
    if (n.op == OpKind::kEmbed && std::find(out.begin(), out.end(), n.table) == out.end()) out.push_back(n.table);
  return out;
}

std::vector<std::pair<const float*, int64_t>> Graph::vectors() const {
  std::vector<std::pair<const float*, int64_t>> out;
  std::set<const float*> seen;
  auto add = [&](const float* p, int64_t n) {
    if (p && seen.insert(p).second) out.emplace_back(p, n);
  };
  for (const Node& n : nodes_) {
    if (n.op == OpKind::kNorm) add(n.norm.w, n.norm.width), add(n.norm.b, n.norm.width);
    for (size_t i = 0; i < n.biases.size(); ++i) add(n.biases[i], n.weights[i]->rows);
    if (n.op == OpKind::kPositions) add(n.positions, n.n_positions * widths_[size_t(n.in[0])]);
  }
  return out;
}

namespace {
CacheLayout layout_of(const std::vector<Node>& nodes, AttentionSpec::Source source) {
  CacheLayout l;
  for (const Node& n : nodes) {
    if (n.op != OpKind::kAttention || n.attn.source != source) continue;
    if (l.n_layers > 0 && (l.n_kv_heads != n.attn.shape.n_kv_heads || l.head_dim != n.attn.shape.head_dim)) {
      fail(ErrorCode::kInternal, "cached layers of one graph must share their KV shape");
    }
    l.n_layers = std::max(l.n_layers, n.attn.layer + 1);
    l.n_kv_heads = n.attn.shape.n_kv_heads, l.head_dim = n.attn.shape.head_dim;
  }
  return l;
}
}  // namespace

CacheLayout Graph::self_layout() const {
  return layout_of(nodes_, AttentionSpec::Source::kCached);
}
CacheLayout Graph::cross_layout() const {
  return layout_of(nodes_, AttentionSpec::Source::kCross);
}

}  // namespace pyrt
