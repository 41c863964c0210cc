#include "pyrt/sampler.h"

#include <algorithm>
#include <cmath>

#include "pyrt/error.h"

namespace pyrt {

Sampler::Sampler(const SamplerParams& p) : p_(p), rng_(p.seed) {
  if (p.top_p <= 0.0f || p.top_p > 1.0f)
    fail(ErrorCode::kInvalidArgument, "top_p must be in (0, 1], got " + std::to_string(p.top_p));
  if (p.min_p < 0.0f || p.min_p > 1.0f)
    fail(ErrorCode::kInvalidArgument, "min_p must be in [0, 1], got " + std::to_string(p.min_p));
  if (p.top_k < 0) fail(ErrorCode::kInvalidArgument, "top_k must be >= 0, got " + std::to_string(p.top_k));
  if (p.repeat_penalty <= 0.0f) fail(ErrorCode::kInvalidArgument, "repeat_penalty must be > 0");
  if (!std::isfinite(p.temperature)) fail(ErrorCode::kInvalidArgument, "temperature must be finite");
}

void Sampler::reset() {
  recent_.clear();
  rng_.seed(p_.seed);
}

void Sampler::accept(int32_t token) {
  if (p_.repeat_last_n <= 0) return;
  recent_.push_back(token);
  while (static_cast<int>(recent_.size()) > p_.repeat_last_n) recent_.pop_front();
}

int32_t Sampler::sample(const float* logits, int64_t n) {
  cand_.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) cand_[i] = {logits[i], static_cast<int32_t>(i)};
  if (p_.repeat_penalty != 1.0f) {
    std::vector<int32_t> seen(recent_.begin(), recent_.end());
    std::sort(seen.begin(), seen.end());
    seen.erase(std::unique(seen.begin(), seen.end()), seen.end());
    for (int32_t id : seen) {
      if (id < 0 || id >= n) continue;
      float& l = cand_[id].first;  // as in llama.cpp / CTRL: shrink positive logits, grow negative ones
      l = l > 0 ? l / p_.repeat_penalty : l * p_.repeat_penalty;
    }
  }
  auto by_logit = [](const std::pair<float, int32_t>& a, const std::pair<float, int32_t>& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  };
  if (p_.temperature <= 0.0f) return std::min_element(cand_.begin(), cand_.end(), by_logit)->second;

  size_t keep = cand_.size();
  if (p_.top_k > 0 && static_cast<size_t>(p_.top_k) < keep) {
    keep = static_cast<size_t>(p_.top_k);
    std::partial_sort(cand_.begin(), cand_.begin() + keep, cand_.end(), by_logit);
  } else {
    std::sort(cand_.begin(), cand_.end(), by_logit);
  }
  cand_.resize(keep);
  // Probabilities at temperature 1 decide the top-p / min-p cut (llama.cpp's order), then temperature.
  std::vector<double> prob(keep);
  const double mx = cand_[0].first;
  double sum = 0;
  for (size_t i = 0; i < keep; ++i) sum += prob[i] = std::exp(cand_[i].first - mx);
  if (p_.top_p < 1.0f) {
    double cum = 0;
    size_t k = 0;
    while (k < keep) {
      cum += prob[k++] / sum;
      if (cum >= p_.top_p) break;
    }
    keep = std::max<size_t>(k, 1);
  }
  if (p_.min_p > 0.0f) {
    size_t k = 1;
    while (k < keep && prob[k] >= p_.min_p * prob[0]) ++k;
    keep = k;
  }
  // Own draw instead of std::discrete_distribution so a seed gives the same tokens on every
  // standard library (desktop libstdc++, Android libc++).
  std::vector<double> w(keep);
  double total = 0;
  for (size_t i = 0; i < keep; ++i) total += w[i] = std::exp((cand_[i].first - mx) / p_.temperature);
  const double u = static_cast<double>(rng_() >> 11) * 0x1.0p-53 * total;
  double cum = 0;
  for (size_t i = 0; i < keep; ++i) {
    cum += w[i];
    if (u < cum) return cand_[i].second;
  }
  return cand_[keep - 1].second;
}

}  // namespace pyrt
