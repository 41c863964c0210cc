// Token sampling: repetition penalty -> top-k -> top-p -> min-p -> temperature -> draw.
// temperature <= 0 means greedy. A fixed seed makes a run reproducible.
#pragma once
#include <cstdint>
#include <deque>
#include <random>
#include <vector>

namespace pyrt {

struct SamplerParams {
  float temperature = 0.0f;
  int top_k = 0;       // 0: off
  float top_p = 1.0f;  // 1: off
  float min_p = 0.0f;  // 0: off
  float repeat_penalty = 1.0f;
  int repeat_last_n = 64;
  uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(const SamplerParams& p);
  int32_t sample(const float* logits, int64_t n_vocab);
  void accept(int32_t token);  // remember for the repetition penalty
  void reset();
  const SamplerParams& params() const { return p_; }

 private:
  SamplerParams p_;
  std::mt19937_64 rng_;
  std::deque<int32_t> recent_;
  std::vector<std::pair<float, int32_t>> cand_;
};

}  // namespace pyrt
