// W8A8 per-tensor static quantization (SPEC 5.1) and the CPU's shadow outlier correction (5.2):
// the delegate returns the int8 result of a clipped input range; the CPU adds back, in float, what
// the activations beyond that range contribute ("dense int8 + sparse float correction").
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "backends/cpu/ops.h"
#include "pyrt/delegate.h"

namespace pyrt {

// Calibrated activation ranges of one linear (the converter writes them, SPEC 5.3).
struct W8A8Calibration {
  float input_scale = 0, output_scale = 0;     // a_in / 127, a_out / 127
  bool clip_input = true, clip_output = true;  // true: values beyond the range are clipped, no shadow work
  std::vector<int32_t> hot_channels;           // input channels that exceeded the range during calibration
};

class W8A8Linear {
 public:
  // Quantizes `w`: s_w = max|W| / 127 (at least 1e-5 / 127) over the whole tensor (SPEC 5.1) or over
  // each output channel's row (per_channel: NPUs take per-axis weight scales too), W~ = round(W / s_w).
  W8A8Linear(const Weight& w, std::string name, W8A8Calibration cal, bool per_channel = false);

  W8A8Graph graph(int64_t rows) const;
  const std::string& name() const { return name_; }
  int64_t in_features() const { return in_; }
  int64_t out_features() const { return out_; }
  const std::vector<float>& weight_scales() const { return s_w_; }
  const W8A8Calibration& calibration() const { return cal_; }
  const int8_t* weight() const { return w_.data(); }
  // Bytes the CPU keeps for shadow work: the hot channels' weight rows (int8, contiguous).
  size_t cpu_resident_bytes() const { return hot_rows_.size(); }

  struct ShadowCounts {
    int64_t input_outliers = 0;   // activations beyond the input range
    int64_t cold_channels = 0;    // ... in channels calibration did not mark hot (row fetched from W~)
    int64_t output_outliers = 0;  // saturated outputs recomputed in float
  };
  // y: [T, out] holds y_q * s_y (plus anything already added); applies SPEC 5.2 steps 1 and 2.
  void shadow_correct(const float* x, const int8_t* y_q, int64_t T, float* y, ShadowCounts* counts) const;
  // The same in two halves, so step 1 can run on the CPU while the delegate computes y_q:
  // input_corrections needs only x: delta [T, out] gets each row's outlier contributions and
  // rows[t] = 1 marks the rows that have any (delta of unmarked rows is left untouched).
  void input_corrections(const float* x, int64_t T, float* delta, uint8_t* rows, ShadowCounts* counts) const;
  // Then: y += delta on marked rows, except saturated outputs, which step 2 recomputes.
  void merge(const float* x, const int8_t* y_q, int64_t T, const float* delta, const uint8_t* rows, float* y,
             ShadowCounts* counts) const;

 private:
  std::string name_;
  int64_t in_ = 0, out_ = 0;
  std::vector<int8_t> w_;   // [out][in]
  std::vector<float> s_w_;  // per output channel (all equal for per-tensor)
  W8A8Calibration cal_;
  std::vector<int8_t> hot_rows_;   // [n_hot][out]: W~[k, :] for hot input channel k
  std::vector<int32_t> hot_slot_;  // input channel -> row of hot_rows_, or -1
};

// SPEC 5.1 arithmetic, shared by the reference delegate and the tests.
inline int8_t saturate_i8(float r) {
  return static_cast<int8_t>(r < -128.f ? -128.f : (r > 127.f ? 127.f : r));
}
// x~ = clamp(round-half-even(x / s), -128, 127) for n values (division, like ONNX QuantizeLinear).
void quantize_activations(const float* x, int64_t n, float scale, int8_t* out);
// y_q[t, n] = clamp(round-half-even(acc[t, n] * (s_x * s_w[n]) / s_y), -128, 127), evaluated left to
// right in float (what ONNX Runtime's integer graph computes, so both agree bit for bit).
void requantize(const int32_t* acc, int64_t rows, int64_t cols, float input_scale, const float* weight_scales,
                float output_scale, int8_t* out);

}  // namespace pyrt
