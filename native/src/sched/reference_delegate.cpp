// The reference delegate: SPEC 5.1 W8A8 on CPU threads. Integer GEMM (exact in any order), division
// for quantization and a float multiplier for requantization, as ONNX QuantizeLinear/QLinearMatMul do,
// so accelerators can be checked against it element for element.
#include <algorithm>
#include <map>
#include <mutex>

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
    bool scales_ok =
        g.input_scale > 0 && g.output_scale > 0 && static_cast<int64_t>(g.weight_scales.size()) == g.out_features;
    for (float s : g.weight_scales) scales_ok = scales_ok && s > 0;
    if (!scales_ok) {
      fail(ErrorCode::kInvalidArgument,
           "reference delegate: graph '" + g.name + "' has a non-positive scale or the wrong number of weight scales");
    }
    graphs_[next_] = g;
    return next_++;
  }

  void execute(int handle, const float* x, int8_t* y_q) override {
    const auto it = graphs_.find(handle);
    if (it == graphs_.end())
      fail(ErrorCode::kInvalidArgument, "reference delegate: unknown graph handle " + std::to_string(handle));
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
    requantize(acc_.data(), C, N, g.input_scale, g.weight_scales.data(), g.output_scale, y_q);
  }

  void release(int handle) override { graphs_.erase(handle); }
  std::string runs_on() const override { return "cpu"; }

 private:
  ThreadPool& pool_;
  std::map<int, W8A8Graph> graphs_;
  int next_ = 1;
  std::vector<int8_t> xq_;
  std::vector<int32_t> acc_;
};

std::mutex& registry_mutex() {
  static std::mutex mu;
  return mu;
}

std::map<std::string, DelegateFactory>& registry() {
  static std::map<std::string, DelegateFactory> r;
  return r;
}

}  // namespace

void register_delegate(const std::string& name, DelegateFactory factory) {
  if (name == "reference") fail(ErrorCode::kInvalidArgument, "the name 'reference' is taken by the built-in delegate");
  std::lock_guard<std::mutex> lock(registry_mutex());
  registry()[name] = std::move(factory);
}

std::vector<std::string> builtin_delegates() {
  std::vector<std::string> names{"reference"};
  std::lock_guard<std::mutex> lock(registry_mutex());
  for (const auto& e : registry()) names.push_back(e.first);
  return names;
}

std::unique_ptr<Delegate> create_delegate(const std::string& name, ThreadPool& pool) {
  if (name == "reference") return std::make_unique<ReferenceDelegate>(pool);
  DelegateFactory factory;
  {
    std::lock_guard<std::mutex> lock(registry_mutex());
    const auto it = registry().find(name);
    if (it != registry().end()) factory = it->second;
  }
  if (factory) return factory(pool);
  std::string known;
  for (const auto& n : builtin_delegates()) known += (known.empty() ? "" : ", ") + n;
  fail(ErrorCode::kUnsupported, "unknown delegate '" + name + "' (built in: " + known + ")");
}

}  // namespace pyrt
