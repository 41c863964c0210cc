#include "sched/chunked_prefill.h"

#include <algorithm>
#include <map>

#include "pyrt/error.h"
#include "sched/npu_plan.h"
#include "sched/task_graph.h"

namespace pyrt {

namespace {

// A session's share of the plan: delegate counters, profiled task latencies, CPU busy time.
struct ChunkedState : PlanState {
  PlacementCounters placement;  // delegate and shadow counters (CPU linears are the session's)
  std::map<std::string, double> latency_s;
  double cpu_busy_s = 0, prefill_wall_s = 0;
};

ChunkedState& state_of(DecoderSession& s) {
  if (!s.plan_state) s.plan_state = std::make_unique<ChunkedState>();
  return static_cast<ChunkedState&>(*s.plan_state);
}

// The task that runs nodes [begin, end) of a chunk is named after what it does (traces, profiling).
std::string segment_name(const Graph& g, size_t begin, size_t end) {
  if (begin >= g.head_begin()) return "output";
  std::string name = "residual";
  bool norms_only = true;
  for (size_t i = begin; i < end; ++i) {
    const OpKind op = g.nodes()[i].op;
    if (op == OpKind::kAttention) return "attention";
    if (op == OpKind::kEmbed) name = "embed";
    if (op == OpKind::kActivate) name = "activation";
    norms_only = norms_only && op == OpKind::kNorm;
  }
  return norms_only && end > begin ? "norm" : name;
}

class ChunkedPrefill : public PrefillPlan, public DelegatedPrefill {
 public:
  explicit ChunkedPrefill(DecoderModel& m) : m_(m), po_(m.options().prefill) {
    if (po_.delegate.empty()) return;
    // The layers' linears (the head stays on the CPU): calibrated, converted and handed over once.
    const Graph& g = m.graph();
    std::vector<const Weight*> linears;
    for (size_t i = 0; i < g.head_begin(); ++i) {
      const Node& n = g.nodes()[i];
      if (n.op == OpKind::kLinear) linears.insert(linears.end(), n.weights.begin(), n.weights.end());
    }
    npu_ = std::make_unique<NpuPlan>(m.file(), linears, po_, m.pool());
  }

  const DelegatedPrefill* delegated() const override { return npu_ ? this : nullptr; }
  std::string runs_on() const override { return npu_->runs_on(); }
  std::vector<W8A8Graph> graphs() const override { return npu_->graphs(); }

  void prefill(DecoderSession& s, const int32_t* ids, int64_t T, float* logits, bool all_logits) override {
    if (npu_) return on_delegate(s, ids, T, logits, all_logits);
    const int64_t C = po_.chunk, V = m_.vocab_size();
    std::vector<int32_t> chunk(static_cast<size_t>(C));
    for (int64_t c0 = 0; c0 < T; c0 += C) {
      const int64_t n = std::min(C, T - c0);
      std::copy(ids + c0, ids + c0 + n, chunk.begin());
      std::fill(chunk.begin() + n, chunk.end(), po_.pad_token);
      const bool last = c0 + n == T;
      m_.runner().run(s.pass(chunk.data(), C, n, c0, out_rows(n, last, all_logits),
                             all_logits ? logits + c0 * V
                             : last     ? logits
                                        : nullptr),
                      &s.counters);
      ++s.chunks;
      s.pad_tokens += C - n;
    }
  }

  void add_stats(const DecoderSession& s, std::map<std::string, double>& out) const override {
    if (!npu_) return;
    const auto* st = static_cast<const ChunkedState*>(s.plan_state.get());
    PlacementCounters pc = st ? st->placement : PlacementCounters{};
    pc.chunks = s.chunks, pc.pad_tokens = s.pad_tokens;
    pc.cpu_linear_calls = s.counters.linear_calls, pc.cpu_linear_macs = s.counters.linear_macs;
    pc.cpu_attention_s = s.counters.attention_s;
    pc.add_to(out, npu_->delegate_name());
    out["placement.cpu.shadow_resident_bytes"] = double(npu_->cpu_resident_bytes());
    out["placement.cpu.busy_s"] = st ? st->cpu_busy_s : 0.0;
    out["placement.prefill_wall_s"] = st ? st->prefill_wall_s : 0.0;
    out["placement.overlap"] = po_.overlap ? 1.0 : 0.0;
  }

 private:
  static std::vector<int64_t> out_rows(int64_t n, bool last, bool all_logits) {
    std::vector<int64_t> rows;
    if (all_logits) {
      for (int64_t t = 0; t < n; ++t) rows.push_back(t);
    } else if (last) {
      rows.push_back(n - 1);
    }
    return rows;
  }

  // One chunk in flight: its pass (activations) and the delegate's scratch of each linear node.
  struct InFlight {
    std::unique_ptr<Runner::Pass> pass;
    std::vector<std::vector<NpuPlan::Scratch>> scratch;  // linear group k -> one per weight
  };

  void on_delegate(DecoderSession& s, const int32_t* ids, int64_t T, float* logits, bool all_logits) {
    const Runner& run = m_.runner();
    const Graph& g = m_.graph();
    const NpuPlan& npu = *npu_;
    ChunkedState& st = state_of(s);
    PlacementCounters& pc = st.placement;
    const int64_t C = po_.chunk, n_chunks = (T + C - 1) / C, V = m_.vocab_size();
    // Chunks in flight share kWindow slots: chunk c starts once chunk c - kWindow is done.
    constexpr int64_t kWindow = 3;
    std::vector<InFlight> slots(size_t(std::min(n_chunks, kWindow)));
    std::vector<std::vector<int32_t>> chunk_ids(static_cast<size_t>(n_chunks));
    std::vector<PassRequest> requests(static_cast<size_t>(n_chunks));
    // Task boundaries: each linear group (a delegate task) and each layer's first node, then the head.
    std::vector<size_t> linears, cuts;
    for (size_t i = 0; i < g.head_begin(); ++i) {
      const Node& n = g.nodes()[i];
      if (n.op == OpKind::kLinear) linears.push_back(i);
      if (i > 0 && (n.op == OpKind::kLinear || n.layer != g.nodes()[i - 1].layer)) cuts.push_back(i);
    }
    cuts.push_back(g.head_begin());
    TaskGraph tg;
    std::vector<int> last_task(size_t(n_chunks), -1);
    std::map<int, int> attention_task;  // layer -> the previous chunk's attention (KV appends in order)
    PassCounters cpu;                   // attention time of the CPU tasks
    const Device kCpu = Device::kCpu, kDel = Device::kDelegate;
    for (int64_t c = 0; c < n_chunks; ++c) {
      InFlight* f = &slots[size_t(c % kWindow)];
      const int ci = int(c);
      const int64_t n = std::min(C, T - c * C);
      const bool last = c == n_chunks - 1;
      chunk_ids[size_t(c)].assign(ids + c * C, ids + c * C + n);
      chunk_ids[size_t(c)].resize(size_t(C), po_.pad_token);
      PassRequest& r = requests[size_t(c)];
      r = s.pass(chunk_ids[size_t(c)].data(), C, n, c * C, out_rows(n, last, all_logits),
                 all_logits ? logits + c * C * V
                 : last     ? logits
                            : nullptr);
      r.pick_rows_early = false;  // static shapes: every row goes through every linear
      // CPU nodes [b, e): the nodes after a linear group, which first finishes that group.
      // CPU nodes [b, e), after finishing linear group `k` (SIZE_MAX: none) whose node is linears[k].
      auto cpu_segment = [&run, &npu, &pc, &cpu, f, &g, &linears](size_t k, size_t b, size_t e) {
        return [&run, &npu, &pc, &cpu, f, &g, &linears, k, b, e] {
          Runner::Pass& p = *f->pass;
          if (k != SIZE_MAX) {
            const Node& ln = g.nodes()[linears[k]];
            for (size_t w = 0; w < ln.weights.size(); ++w)
              npu.finish(*ln.weights[w], p.ptr(ln.in[0]), f->scratch[k][w], p.ptr(ln.out[w]), pc);
            run.observe(p, ln);
          }
          const double att0 = p.counters.attention_s;
          for (size_t i = b; i < e; ++i) run.run_node(p, i);
          cpu.attention_s += p.counters.attention_s - att0;
          if (e == g.nodes().size()) {
            run.finish(p);
            f->pass.reset();  // the slot's buffers go back before the next chunk in it starts
          }
        };
      };
      std::vector<int> start_deps;
      if (c >= kWindow) start_deps.push_back(last_task[size_t(c - kWindow)]);
      int prev = tg.add(kCpu, segment_name(g, 0, cuts[0]), ci, -1, start_deps,
                        [&run, &r, f, &g, &linears, seg = cpu_segment(SIZE_MAX, 0, cuts[0])] {
                          f->pass = run.begin(r);
                          f->scratch.assign(linears.size(), {});
                          for (size_t k = 0; k < linears.size(); ++k)
                            f->scratch[k].resize(g.nodes()[linears[k]].weights.size());
                          seg();
                        });
      for (size_t j = 0, k = 0; j + 1 < cuts.size(); ++j) {
        const size_t at = cuts[j], end = cuts[j + 1];
        const Node& an = g.nodes()[at];
        if (an.op != OpKind::kLinear) {  // a layer's first CPU nodes (its input norm)
          prev = tg.add(kCpu, segment_name(g, at, end), ci, an.layer, {prev}, cpu_segment(SIZE_MAX, at, end));
          continue;
        }
        const size_t lk = k++;
        std::vector<int> deps;
        if (po_.outliers) {
          // The input outliers' corrections on the CPU while the delegate multiplies (both only read x).
          deps.push_back(tg.add(kCpu, "outliers_" + an.name, ci, an.layer, {prev}, [&npu, &pc, f, &an, lk] {
            for (size_t w = 0; w < an.weights.size(); ++w)
              npu.input_corrections(*an.weights[w], f->pass->ptr(an.in[0]), f->scratch[lk][w], pc);
          }));
        }
        deps.push_back(tg.add(kDel, an.name, ci, an.layer, {prev}, [&npu, &pc, f, &an, lk] {
          for (size_t w = 0; w < an.weights.size(); ++w)
            npu.execute(*an.weights[w], f->pass->ptr(an.in[0]), f->scratch[lk][w], pc);
        }));
        const std::string name = segment_name(g, at + 1, end);
        if (name == "attention") {
          auto it = attention_task.find(an.layer);
          if (it != attention_task.end()) deps.push_back(it->second);
        }
        prev = tg.add(kCpu, name, ci, an.layer, deps, cpu_segment(lk, at + 1, end));
        if (name == "attention") attention_task[an.layer] = prev;
      }
      last_task[size_t(c)] =
          tg.add(kCpu, "output", ci, -1, {prev}, cpu_segment(SIZE_MAX, g.head_begin(), g.nodes().size()));
      ++s.chunks;
      s.pad_tokens += C - n;
    }
    tg.run(po_.overlap, st.latency_s);
    s.counters.attention_s += cpu.attention_s;
    s.trace_json = chrome_trace_json(tg.trace());
    for (const TraceEvent& e : tg.trace()) {
      if (e.device == Device::kCpu) st.cpu_busy_s += e.end_s - e.start_s;
    }
    st.prefill_wall_s += tg.wall_s();
  }

  DecoderModel& m_;
  PrefillOptions po_;
  std::unique_ptr<NpuPlan> npu_;
};

}  // namespace

void install_prefill_plan(DecoderModel& m) {
  if (m.options().prefill.chunk > 0) m.set_prefill_plan(std::make_unique<ChunkedPrefill>(m));
}

}  // namespace pyrt
