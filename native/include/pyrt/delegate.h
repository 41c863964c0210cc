// Delegates: accelerators (NPUs, or the reference below) that run static-shape W8A8 linears for
// chunked prefill. One small interface, ExecuTorch-style: availability, prepare once per graph,
// execute per chunk, release. Everything else (attention, RoPE, norms, outlier corrections) stays on
// the CPU (sched/npu_plan.h).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "pyrt/threadpool.h"

namespace pyrt {

// One linear y = x W^T with W8A8 static quantization (SPEC 5.1; weights per tensor, or per output
// channel) and a static input shape [rows, in_features] (rows = the prefill chunk):
//   x~ = clamp(round(x / input_scale), -128, 127), acc[n] = x~ . W~[n] (int32),
//   y_q[n] = clamp(round(acc[n] * (input_scale * weight_scales[n]) / output_scale), -128, 127)
// (float, left to right). Per-tensor graphs have every weight_scales[n] equal.
// `weight` ([out_features][in_features] int8) stays owned by the caller for the graph's lifetime.
struct W8A8Graph {
  std::string name;  // e.g. "blk.3.attn_q"
  int64_t rows = 0, in_features = 0, out_features = 0;
  const int8_t* weight = nullptr;
  std::vector<float> weight_scales;  // [out_features]
  float input_scale = 0, output_scale = 0;
  bool per_tensor() const;  // all weight scales equal
};

class Delegate {
 public:
  virtual ~Delegate() = default;
  virtual std::string name() const = 0;
  // True when this machine can run the delegate; otherwise `why` says what is missing.
  virtual bool is_available(std::string* why) const = 0;
  // Compiles/uploads a graph; returns its handle. Throws pyrt::Error naming the graph on failure.
  virtual int prepare(const W8A8Graph& graph) = 0;
  // x: [rows, in_features] float, y_q: [rows, out_features] int8 (the requantized output).
  virtual void execute(int handle, const float* x, int8_t* y_q) = 0;
  virtual void release(int handle) = 0;
  // What executes the graphs, for placement stats: "cpu" when the "accelerator" is in fact the CPU
  // (the reference delegate, onnxruntime's CPU provider), so that is never silent.
  virtual std::string runs_on() const = 0;
};

// "reference": the built-in exact W8A8 executor (integer GEMM on CPU threads), the ground truth the
// other delegates are tested against; others come from register_delegate (the Python SDK registers
// "onnxruntime" and "litert"). Throws kUnsupported naming the known delegates for other names.
std::unique_ptr<Delegate> create_delegate(const std::string& name, ThreadPool& pool);
using DelegateFactory = std::function<std::unique_ptr<Delegate>(ThreadPool& pool)>;
void register_delegate(const std::string& name, DelegateFactory factory);
std::vector<std::string> builtin_delegates();  // "reference" plus every registered name

}  // namespace pyrt
