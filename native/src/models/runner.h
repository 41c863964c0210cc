// Executes a graph (models/graph.h) for one pass on a backend and a device's memory. A pass is any set
// of rows: one sequence's prompt or token, several sessions' decode steps, several prompts packed
// without padding, or a static-shape chunk with padding rows; `seqs` say which rows belong to whom.
// Schedulers (sched/) run a pass node by node through begin() / run_node().
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "backends/backend.h"
#include "memory/sequence_cache.h"
#include "models/graph.h"
#include "pyrt/model.h"

namespace pyrt {

struct PassRequest {
  int64_t rows = 0;               // rows of the pass, padding included (padding rows come after every seq)
  std::vector<SeqRows> seqs;      // the valid rows, by sequence, in row order
  const int32_t* ids = nullptr;   // kEmbed: one id per row (host)
  const float* input = nullptr;   // kInput: [rows, width] host floats
  std::vector<int64_t> out_rows;  // rows whose output is wanted (increasing); empty: none
  float* out = nullptr;           // host [out_rows, output width]
  // Drop the other rows right after the last attention (a prompt's rows have left what later tokens
  // need in the cache); false keeps every row to the head (static shapes, calibration).
  bool pick_rows_early = true;
  const LinearObserver* observer = nullptr;
};

// What a pass did (a session's placement counters).
struct PassCounters {
  int64_t linear_calls = 0;
  double linear_macs = 0, attention_s = 0;
};

class Runner {
 public:
  Runner(const Graph& g, Backend& backend, KvMemory& memory) : g_(g), be_(backend), mem_(memory) {}
  const Graph& graph() const { return g_; }
  Backend& backend() const { return be_; }

  class Pass {
   public:
    ~Pass();
    float* ptr(int value) const { return slots_[size_t(g_->slot(value))]; }
    int64_t rows() const { return rows_; }
    int64_t valid_rows() const { return valid_; }
    PassCounters counters;

   private:
    friend class Runner;
    const Graph* g_ = nullptr;
    Backend* be_ = nullptr;
    PassRequest req_;
    std::vector<float*> slots_;
    std::vector<int64_t> positions_;
    RowPositions pos_;
    std::unique_ptr<PassScratch> scratch_;
    int64_t rows_ = 0, valid_ = 0;
    size_t pick_at_ = 0;
    bool picked_ = false, done_ = false;
    int out_slot_ = -1;
    float* bound_out_ = nullptr;  // the caller's buffer bound as the output's slot
  };

  void run(const PassRequest& r, PassCounters* counters = nullptr) const;
  std::unique_ptr<Pass> begin(const PassRequest& r) const;
  // Runs node i (nodes in order; picks rows when the pass reaches the pick point). Once every row is
  // dropped, later nodes do nothing.
  void run_node(Pass& p, size_t i) const;
  void finish(Pass& p) const;  // the output rows to the caller's buffer
  // The linear's observer call (schedulers that execute a linear themselves).
  void observe(const Pass& p, const Node& n) const;

 private:
  void pick_rows(Pass& p) const;
  void set_positions(Pass& p) const;
  const Graph& g_;
  Backend& be_;
  KvMemory& mem_;
};

}  // namespace pyrt
