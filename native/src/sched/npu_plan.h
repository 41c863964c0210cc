// Chunked prefill on a delegate: every linear of the model becomes a W8A8 graph of static shape
// [chunk, in] prepared once at load; per chunk the delegate returns the int8 result and the CPU adds
// the shadow outlier correction. Attention, RoPE, norms and the KV cache stay on the CPU (the model
// file decides that by calling NpuPlan::run only for linears).
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "backends/cpu/ops.h"
#include "pyrt/delegate.h"
#include "pyrt/gguf.h"
#include "pyrt/model.h"
#include "sched/w8a8.h"

namespace pyrt {

// Per-session counters of what ran where (Session::stats "placement.*").
struct PlacementCounters {
  int64_t chunks = 0, pad_tokens = 0, delegate_calls = 0, cpu_linear_calls = 0;
  double delegate_macs = 0, cpu_linear_macs = 0, delegate_s = 0, shadow_s = 0, cpu_attention_s = 0;
  W8A8Linear::ShadowCounts shadow;
  void add_to(std::map<std::string, double>& out, const std::string& delegate) const;
};

class NpuPlan {
 public:
  // `linears`: every weight the model multiplies during prefill except the output head. Their
  // calibration (<name>.input_scale, .output_scale, .clip_input, .clip_output, .hot_channels) must be
  // in `file` (pyrt-convert --calibrate).
  NpuPlan(const GgufFile& file, const std::vector<const Weight*>& linears, const PrefillOptions& opts,
          ThreadPool& pool);
  ~NpuPlan();
  NpuPlan(const NpuPlan&) = delete;
  NpuPlan& operator=(const NpuPlan&) = delete;

  const PrefillOptions& options() const { return opts_; }
  const std::string& delegate_name() const { return delegate_name_; }
  std::string runs_on() const { return delegate_->runs_on(); }
  bool handles(const Weight& w) const { return index_.count(&w) != 0; }
  // A linear on one chunk in three parts, for the scheduler: input_corrections() on the CPU (needs only
  // x, so it runs while the delegate works) fills `s` with the input outliers' contributions;
  // execute() on the delegate writes the int8 result; finish() on the CPU writes y = y_q * s_y plus
  // the corrections (SPEC 5.2).
  struct Scratch {
    std::vector<int8_t> y_q;
    std::vector<float> delta;
    std::vector<uint8_t> rows;
  };
  void input_corrections(const Weight& w, const float* x, Scratch& s, PlacementCounters& c) const;
  void execute(const Weight& w, const float* x, Scratch& s, PlacementCounters& c) const;
  void finish(const Weight& w, const float* x, const Scratch& s, float* y, PlacementCounters& c) const;
  int64_t out_features(const Weight& w) const { return linears_[index_.at(&w)]->out_features(); }
  size_t cpu_resident_bytes() const;  // hot weight rows kept for shadow work
  std::vector<W8A8Graph> graphs() const;
  size_t delegate_weight_bytes() const;
  const W8A8Linear& linear(const Weight& w) const { return *linears_[index_.at(&w)]; }

 private:
  PrefillOptions opts_;
  std::string delegate_name_;
  ThreadPool* cpu_pool_;                       // the model's threads: shadow corrections run on them
  std::unique_ptr<ThreadPool> delegate_pool_;  // the reference delegate's own threads (it may overlap the CPU)
  std::unique_ptr<Delegate> delegate_;
  std::vector<std::unique_ptr<W8A8Linear>> linears_;
  std::vector<int> handles_;
  std::unordered_map<const Weight*, size_t> index_;
  mutable std::mutex mu_;  // one graph at a time on the delegate (sessions share it)
};

// Reads a linear's calibration; fails with kFormat naming the file and tensor when absent or malformed.
W8A8Calibration read_calibration(const GgufFile& file, const std::string& linear_name);

}  // namespace pyrt
