// The reference delegate: SPEC 5.1 W8A8 on CPU threads. Integer GEMM (exact in any order), division
// for quantization and a float multiplier for requantization, as ONNX QuantizeLinear/QLinearMatMul do,
// so accelerators can be checked against it element for element.
#include <algorithm>
#include <map>

#include "backends/cpu/kernels.h"
#include "pyrt/delegate.h"
#include "pyrt/error.h"
#include "sched/w8a8.h"

namespace pyrt {

namespace {

class ReferenceDelegate : public Delegate {
 public:
  explicit ReferenceDelegate(ThreadPool& pool) : pool_(pool) {}
  std::string name() const override { return "reference"; }
  bool is_available(std::string*) const override { return true; }

  int prepare(const W8A8Graph& g) override {
    if (g.rows <= 0 || g.in_features <= 0 || g.out_features <= 0 || !g.weight) {
      fail(ErrorCode::kInvalidArgument, "reference delegate: graph '" + g.name + "' has an empty shape or no weight");
    }
    if (!(g.input_scale > 0) || !(g.weight_scale > 0) || !(g.output_scale > 0)) {
      fail(ErrorCode::kInvalidArgument, "reference delegate: graph '" + g.name + "' has a non-positive scale");
    }
    graphs_[next_] = g;
    return next_++;
  }

  void execute(int handle, const float* x, int8_t* y_q) override {
    const auto it = graphs_.find(handle);
    if (it == graphs_.end()) fail(ErrorCode::kInvalidArgument, "reference delegate: unknown graph handle " + std::to_string(handle));
    const W8A8Graph& g = it->second;
    const int64_t C = g.rows, K = g.in_features, N = g.out_features;
    xq_.resize(static_cast<size_t>(C * K));
    acc_.resize(static_cast<size_t>(C * N));
    quantize_activations(x, C * K, g.input_scale, xq_.data());
    const cpu::KernelTable& kt = cpu::kernels();
    const int64_t per = 16, n_tasks = (N + per - 1) / per;
    pool_.run(n_tasks, [&](int64_t i) {
      const int64_t r0 = i * per, nr = std::min<int64_t>(per, N - r0);
      kt.gemm_s8(g.weight + r0 * K, nr, xq_.data(), C, K, acc_.data() + r0, N);
    });
    requantize(acc_.data(), C * N, g.input_scale * g.weight_scale / g.output_scale, y_q);
  }

  void release(int handle) override { graphs_.erase(handle); }

 private:
  ThreadPool& pool_;
  std::map<int, W8A8Graph> graphs_;
  int next_ = 1;
  std::vector<int8_t> xq_;
  std::vector<int32_t> acc_;
};

}  // namespace

std::vector<std::string> builtin_delegates() { return {"reference"}; }

std::unique_ptr<Delegate> create_delegate(const std::string& name, ThreadPool& pool) {
  if (name == "reference") return std::make_unique<ReferenceDelegate>(pool);
  std::string known;
  for (const auto& n : builtin_delegates()) known += (known.empty() ? "" : ", ") + n;
  fail(ErrorCode::kUnsupported, "unknown delegate '" + name + "' (built in: " + known + ")");
}

}  // namespace pyrt
