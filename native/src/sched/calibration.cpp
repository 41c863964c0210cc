#include "sched/calibration.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>

#include "pyrt/error.h"

namespace pyrt {

ActivationStats::ActivationStats(int64_t width, int64_t expected_rows)
    : width_(width),
      k_(std::max<int64_t>(1, width * expected_rows / 1000)),
      channel_max_(static_cast<size_t>(width), 0.0f) {}

void ActivationStats::add(const float* x, int64_t rows) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < width_; ++c) {
      const float v = std::fabs(x[r * width_ + c]);
      if (v > channel_max_[c]) channel_max_[c] = v;
      if (v > floor_ || static_cast<int64_t>(top_.size()) < k_) top_.push_back(v);
    }
    if (static_cast<int64_t>(top_.size()) > 4 * k_ + width_) prune();
  }
  count_ += rows * width_;
  for (float v : channel_max_) max_ = std::max(max_, v);
}

// Keeps the k largest candidates; anything below the k-th largest can never be in the final top k.
void ActivationStats::prune() {
  std::nth_element(top_.begin(), top_.begin() + (k_ - 1), top_.end(), std::greater<float>());
  top_.resize(static_cast<size_t>(k_));
  floor_ = *std::min_element(top_.begin(), top_.end());
}

float ActivationStats::top_0_1() const {
  if (top_.empty()) return 0.0f;
  std::vector<float> t = top_;
  const int64_t k = std::min<int64_t>(k_, static_cast<int64_t>(t.size()));
  std::nth_element(t.begin(), t.begin() + (k - 1), t.end(), std::greater<float>());
  return t[static_cast<size_t>(k - 1)];
}

namespace {

std::string linear_name(const Weight& w) {
  std::string base = w.name;
  if (base.size() > 7 && base.compare(base.size() - 7, 7, ".weight") == 0) base.resize(base.size() - 7);
  return base;
}

// Feeds every sample through a fresh session with `obs` watching the linears; returns the token count.
int64_t run_samples(Model& model, const std::vector<std::vector<int32_t>>& samples, LinearObserver obs) {
  if (samples.empty()) fail(ErrorCode::kInvalidArgument, "calibration needs at least one sample");
  int64_t rows = 0, longest = 0;
  for (const auto& s : samples) {
    if (s.empty()) fail(ErrorCode::kInvalidArgument, "calibration sample is empty");
    rows += static_cast<int64_t>(s.size());
    longest = std::max<int64_t>(longest, static_cast<int64_t>(s.size()));
  }
  if (!obs) return rows;
  auto session = model.new_session(longest);
  session->set_linear_observer(std::move(obs));
  std::vector<float> logits(static_cast<size_t>(model.vocab_size()));
  for (const auto& s : samples) {
    session->reset();
    session->feed(s.data(), static_cast<int64_t>(s.size()), logits.data(), false);
  }
  return rows;
}

}  // namespace

std::vector<LinearCalibration> calibrate_linears(Model& model, const std::vector<std::vector<int32_t>>& samples) {
  const int64_t rows = run_samples(model, samples, nullptr);
  std::vector<LinearCalibration> out;
  std::map<const Weight*, size_t> index;
  run_samples(model, samples, [&](const Weight& w, const float* x, int64_t T, const float* y) {
    auto it = index.find(&w);
    if (it == index.end()) {
      it = index.emplace(&w, out.size()).first;
      out.push_back({linear_name(w), ActivationStats(w.cols, rows), ActivationStats(w.rows, rows)});
    }
    out[it->second].input.add(x, T);
    out[it->second].output.add(y, T);
  });
  return out;
}

std::map<std::string, std::vector<int64_t>> count_input_outliers(Model& model,
                                                                 const std::vector<std::vector<int32_t>>& samples,
                                                                 const std::map<std::string, float>& thresholds) {
  std::map<std::string, std::vector<int64_t>> counts;
  run_samples(model, samples, [&](const Weight& w, const float* x, int64_t T, const float*) {
    const auto th = thresholds.find(linear_name(w));
    if (th == thresholds.end()) return;
    auto& c = counts[th->first];
    c.resize(static_cast<size_t>(w.cols), 0);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t k = 0; k < w.cols; ++k) c[k] += std::fabs(x[t * w.cols + k]) > th->second;
  });
  return counts;
}

}  // namespace pyrt
