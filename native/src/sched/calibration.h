// Activation statistics for W8A8 calibration (SPEC 5.3), gathered from the float CPU path through a
// session's linear observer. The converter turns them into scales, clip flags and hot channels.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "backends/cpu/ops.h"
#include "pyrt/model.h"

namespace pyrt {

// One activation tensor's statistics over |x|: the largest value, the k-th largest with k = 0.1% of
// the values (the 99.9th percentile), and each channel's largest value. Streaming: only candidates for
// the top k are kept, so k must be known up front from the number of rows expected.
class ActivationStats {
 public:
  ActivationStats(int64_t width, int64_t expected_rows);
  void add(const float* x, int64_t rows);
  int64_t count() const { return count_; }
  float max_abs() const { return max_; }
  float top_0_1() const;
  const std::vector<float>& channel_max() const { return channel_max_; }

 private:
  void prune();
  int64_t width_, k_, count_ = 0;
  float max_ = 0, floor_ = 0;
  std::vector<float> top_, channel_max_;
};

struct LinearCalibration {
  std::string name;  // weight name without ".weight"
  ActivationStats input, output;
};

// Runs each sample through a fresh session of `model` (use activations="f32": the float reference)
// and records every linear's input and output statistics, in the order the linears first ran.
std::vector<LinearCalibration> calibrate_linears(Model& model, const std::vector<std::vector<int32_t>>& samples);

// Second pass: for each linear named in `thresholds`, how many times each input channel's |x| went
// beyond that linear's threshold (the converter keeps the channels holding most outliers resident).
std::map<std::string, std::vector<int64_t>> count_input_outliers(Model& model,
                                                                 const std::vector<std::vector<int32_t>>& samples,
                                                                 const std::map<std::string, float>& thresholds);

}  // namespace pyrt
