#include "sched/npu_plan.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "pyrt/error.h"

namespace pyrt {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

float scalar_tensor(const GgufFile& f, const std::string& name) {
  const GgufTensorInfo* t = f.find_tensor(name);
  if (!t)
    fail(ErrorCode::kFormat,
         f.path() + ": tensor '" + name + "' is missing (calibrate the model: pyrt-convert --calibrate TEXT)");
  if (t->type != GgmlType::F32 || t->n_elements() != 1)
    fail(ErrorCode::kFormat, f.path() + ": tensor '" + name + "' must be one F32 value");
  const float v = *reinterpret_cast<const float*>(t->data);
  if (!std::isfinite(v)) fail(ErrorCode::kFormat, f.path() + ": tensor '" + name + "' is not finite");
  return v;
}

}  // namespace

W8A8Calibration read_calibration(const GgufFile& f, const std::string& base) {
  W8A8Calibration c;
  c.input_scale = scalar_tensor(f, base + ".input_scale");
  c.output_scale = scalar_tensor(f, base + ".output_scale");
  c.clip_input = scalar_tensor(f, base + ".clip_input") != 0.0f;
  c.clip_output = scalar_tensor(f, base + ".clip_output") != 0.0f;
  if (const GgufTensorInfo* h = f.find_tensor(base + ".hot_channels")) {
    if (h->type != GgmlType::I32 || h->ne.size() != 1)
      fail(ErrorCode::kFormat, f.path() + ": tensor '" + h->name + "' must be 1-D I32");
    const auto* p = reinterpret_cast<const int32_t*>(h->data);
    c.hot_channels.assign(p, p + h->ne[0]);
  }
  return c;
}

void PlacementCounters::add_to(std::map<std::string, double>& out, const std::string& d) const {
  const std::string dp = "placement." + d + ".";
  if (d.empty()) {  // CPU only
    out["placement.cpu.linear_calls"] = double(cpu_linear_calls);
    out["placement.cpu.linear_macs"] = cpu_linear_macs;
    out["placement.chunks"] = double(chunks);
    out["placement.pad_tokens"] = double(pad_tokens);
    return;
  }
  out["placement.chunks"] = double(chunks);
  out["placement.pad_tokens"] = double(pad_tokens);
  out[dp + "linear_calls"] = double(delegate_calls);
  out[dp + "linear_macs"] = delegate_macs;
  out[dp + "busy_s"] = delegate_s;
  out["placement.cpu.linear_calls"] = double(cpu_linear_calls);
  out["placement.cpu.linear_macs"] = cpu_linear_macs;
  out["placement.cpu.attention_s"] = cpu_attention_s;
  out["placement.cpu.shadow_s"] = shadow_s;
  out["placement.cpu.shadow_input_outliers"] = double(shadow.input_outliers);
  out["placement.cpu.shadow_cold_channels"] = double(shadow.cold_channels);
  out["placement.cpu.shadow_output_outliers"] = double(shadow.output_outliers);
}

NpuPlan::NpuPlan(const GgufFile& f, const std::vector<const Weight*>& linears, const PrefillOptions& opts,
                 ThreadPool& pool)
    : opts_(opts),
      cpu_pool_(&pool),
      delegate_pool_(std::make_unique<ThreadPool>(opts.delegate_threads > 0 ? opts.delegate_threads : pool.size())),
      delegate_(create_delegate(opts.delegate, *delegate_pool_)) {
  if (opts_.chunk < 1 || opts_.chunk > 4096)
    fail(ErrorCode::kInvalidArgument, "chunk must be in 1..4096, got " + std::to_string(opts_.chunk));
  delegate_name_ = delegate_->name();
  std::string why;
  if (!delegate_->is_available(&why))
    fail(ErrorCode::kUnsupported, "delegate '" + delegate_name_ + "' is not available: " + why);
  for (const Weight* w : linears) {
    std::string base = w->name;
    if (base.size() > 7 && base.compare(base.size() - 7, 7, ".weight") == 0) base.resize(base.size() - 7);
    index_[w] = linears_.size();
    linears_.push_back(std::make_unique<W8A8Linear>(*w, base, read_calibration(f, base), opts_.per_channel_weights));
    handles_.push_back(delegate_->prepare(linears_.back()->graph(opts_.chunk)));
  }
}

NpuPlan::~NpuPlan() {
  for (int h : handles_) delegate_->release(h);
}

void NpuPlan::input_corrections(const Weight& w, const float* x, Scratch& s, PlacementCounters& c) const {
  const W8A8Linear& L = *linears_[index_.at(&w)];
  const int64_t C = opts_.chunk, K = L.in_features(), N = L.out_features();
  s.delta.resize(static_cast<size_t>(C * N));
  s.rows.assign(static_cast<size_t>(C), 0);
  if (!opts_.outliers || L.calibration().clip_input) return;
  const auto t0 = std::chrono::steady_clock::now();
  // Rows are independent: split them over the CPU threads.
  const int64_t parts = std::min<int64_t>(C, cpu_pool_->size() * 2), per = (C + parts - 1) / parts;
  std::vector<W8A8Linear::ShadowCounts> counts(static_cast<size_t>(parts));
  cpu_pool_->run(parts, [&](int64_t p) {
    const int64_t r0 = p * per, nr = std::min(per, C - r0);
    if (nr > 0) L.input_corrections(x + r0 * K, nr, s.delta.data() + r0 * N, s.rows.data() + r0, &counts[p]);
  });
  for (const auto& k : counts) {
    c.shadow.input_outliers += k.input_outliers;
    c.shadow.cold_channels += k.cold_channels;
  }
  c.shadow_s += seconds_since(t0);
}

void NpuPlan::execute(const Weight& w, const float* x, Scratch& s, PlacementCounters& c) const {
  const size_t i = index_.at(&w);
  const W8A8Linear& L = *linears_[i];
  s.y_q.resize(static_cast<size_t>(opts_.chunk * L.out_features()));
  const auto t0 = std::chrono::steady_clock::now();
  {
    std::lock_guard<std::mutex> lock(mu_);
    delegate_->execute(handles_[i], x, s.y_q.data());
  }
  c.delegate_s += seconds_since(t0);
  ++c.delegate_calls;
  c.delegate_macs += double(opts_.chunk) * double(L.in_features()) * double(L.out_features());
}

void NpuPlan::finish(const Weight& w, const float* x, const Scratch& s, float* y, PlacementCounters& c) const {
  const W8A8Linear& L = *linears_[index_.at(&w)];
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t C = opts_.chunk, K = L.in_features(), N = L.out_features();
  const float s_y = L.calibration().output_scale;
  for (int64_t j = 0; j < C * N; ++j) y[j] = s.y_q[j] * s_y;
  if (opts_.outliers) {
    const int64_t parts = std::min<int64_t>(C, cpu_pool_->size() * 2), per = (C + parts - 1) / parts;
    std::vector<W8A8Linear::ShadowCounts> counts(static_cast<size_t>(parts));
    cpu_pool_->run(parts, [&](int64_t p) {
      const int64_t r0 = p * per, nr = std::min(per, C - r0);
      if (nr > 0)
        L.merge(x + r0 * K, s.y_q.data() + r0 * N, nr, s.delta.data() + r0 * N, s.rows.data() + r0, y + r0 * N,
                &counts[p]);
    });
    for (const auto& k : counts) c.shadow.output_outliers += k.output_outliers;
  }
  c.shadow_s += seconds_since(t0);
}

std::vector<W8A8Graph> NpuPlan::graphs() const {
  std::vector<W8A8Graph> out;
  for (const auto& l : linears_) out.push_back(l->graph(opts_.chunk));
  return out;
}

size_t NpuPlan::cpu_resident_bytes() const {
  size_t n = 0;
  for (const auto& l : linears_) n += l->cpu_resident_bytes();
  return n;
}

size_t NpuPlan::delegate_weight_bytes() const {
  size_t n = 0;
  for (const auto& l : linears_) n += static_cast<size_t>(l->in_features() * l->out_features());
  return n;
}

}  // namespace pyrt
