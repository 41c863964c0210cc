#include "sched/w8a8.h"

#include <algorithm>
#include <cmath>

#include "backends/cpu/kernels.h"
#include "pyrt/error.h"

namespace pyrt {

void quantize_activations(const float* x, int64_t n, float scale, int8_t* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = saturate_i8(std::nearbyint(x[i] / scale));
}

void requantize(const int32_t* acc, int64_t rows, int64_t cols, float input_scale, const float* weight_scales,
                float output_scale, int8_t* out) {
  std::vector<float> sxw(static_cast<size_t>(cols));
  for (int64_t n = 0; n < cols; ++n) sxw[n] = input_scale * weight_scales[n];
  for (int64_t t = 0; t < rows; ++t) {
    for (int64_t n = 0; n < cols; ++n) {
      out[t * cols + n] = saturate_i8(std::nearbyint(static_cast<float>(acc[t * cols + n]) * sxw[n] / output_scale));
    }
  }
}

bool W8A8Graph::per_tensor() const {
  for (float s : weight_scales) {
    if (s != weight_scales.front()) return false;
  }
  return true;
}

W8A8Linear::W8A8Linear(const Weight& w, std::string name, W8A8Calibration cal, bool per_channel)
    : name_(std::move(name)),
      in_(w.cols),
      out_(w.rows),
      w_(static_cast<size_t>(w.rows * w.cols)),
      cal_(std::move(cal)) {
  if (!(cal_.input_scale > 0) || !(cal_.output_scale > 0) || !std::isfinite(cal_.input_scale) ||
      !std::isfinite(cal_.output_scale)) {
    fail(ErrorCode::kFormat, name_ + ": calibrated scales must be positive and finite (input_scale " +
                                 std::to_string(cal_.input_scale) + ", output_scale " +
                                 std::to_string(cal_.output_scale) + ")");
  }
  std::vector<float> all(w_.size());
  for (int64_t r = 0; r < out_; ++r) dequantize_row(w.type, w.data + r * w.row_stride, &all[r * in_], in_);
  std::vector<float> max_abs(static_cast<size_t>(out_), 0.0f);
  for (int64_t r = 0; r < out_; ++r)
    for (int64_t k = 0; k < in_; ++k) max_abs[r] = std::max(max_abs[r], std::fabs(all[r * in_ + k]));
  if (!per_channel) std::fill(max_abs.begin(), max_abs.end(), *std::max_element(max_abs.begin(), max_abs.end()));
  s_w_.resize(static_cast<size_t>(out_));
  for (int64_t r = 0; r < out_; ++r) {
    s_w_[r] = std::max(max_abs[r], 1e-5f) / 127.0f;
    for (int64_t k = 0; k < in_; ++k) w_[r * in_ + k] = saturate_i8(std::nearbyint(all[r * in_ + k] / s_w_[r]));
  }

  hot_slot_.assign(static_cast<size_t>(in_), -1);
  for (int32_t k : cal_.hot_channels) {
    if (k < 0 || k >= in_)
      fail(ErrorCode::kFormat,
           name_ + ": hot channel " + std::to_string(k) + " is outside 0.." + std::to_string(in_ - 1));
    if (hot_slot_[k] >= 0) continue;
    hot_slot_[k] = static_cast<int32_t>(hot_rows_.size() / out_);
    for (int64_t n = 0; n < out_; ++n) hot_rows_.push_back(w_[n * in_ + k]);
  }
}

W8A8Graph W8A8Linear::graph(int64_t rows) const {
  W8A8Graph g;
  g.name = name_;
  g.rows = rows;
  g.in_features = in_;
  g.out_features = out_;
  g.weight = w_.data();
  g.weight_scales = s_w_;
  g.input_scale = cal_.input_scale;
  g.output_scale = cal_.output_scale;
  return g;
}

void W8A8Linear::shadow_correct(const float* x, const int8_t* y_q, int64_t T, float* y, ShadowCounts* counts) const {
  std::vector<float> delta(static_cast<size_t>(T * out_));
  std::vector<uint8_t> rows(static_cast<size_t>(T));
  input_corrections(x, T, delta.data(), rows.data(), counts);
  merge(x, y_q, T, delta.data(), rows.data(), y, counts);
}

void W8A8Linear::input_corrections(const float* x, int64_t T, float* delta, uint8_t* rows, ShadowCounts* counts) const {
  std::fill(rows, rows + T, uint8_t{0});
  if (cal_.clip_input) return;
  const float s_x = cal_.input_scale;
  // |x| below this rounds inside [-127, 127] for sure: skip the exact division for it.
  const float surely_inside = 126.5f * s_x;
  std::vector<float> column(static_cast<size_t>(out_));
  for (int64_t t = 0; t < T; ++t) {
    const float* xt = x + t * in_;
    float* dt = delta + t * out_;
    // Step 1: each activation beyond the input range adds (r - clamp(r)) * s_x * s_w * W~[k, :].
    for (int64_t k = 0; k < in_; ++k) {
      if (std::fabs(xt[k]) < surely_inside) continue;
      const float r = std::nearbyint(xt[k] / s_x);
      if (r >= -128.f && r <= 127.f) continue;
      if (!rows[t]) std::fill(dt, dt + out_, 0.0f);
      rows[t] = 1;
      ++counts->input_outliers;
      if (hot_slot_[k] >= 0) {
        const int8_t* hot = &hot_rows_[static_cast<size_t>(hot_slot_[k]) * out_];
        for (int64_t n = 0; n < out_; ++n) column[n] = hot[n] * s_w_[n];
      } else {  // not resident: gather channel k of W~ (on a phone, a read from the delegate's buffer)
        ++counts->cold_channels;
        for (int64_t n = 0; n < out_; ++n) column[n] = w_[n * in_ + k] * s_w_[n];
      }
      cpu::kernels().axpy_f32((r - (r < 0 ? -128.f : 127.f)) * s_x, column.data(), dt, out_);
    }
  }
}

void W8A8Linear::merge(const float* x, const int8_t* y_q, int64_t T, const float* delta, const uint8_t* rows, float* y,
                       ShadowCounts* counts) const {
  const float s_x = cal_.input_scale, s_y = cal_.output_scale;
  std::vector<float> r_row(static_cast<size_t>(in_));
  for (int64_t t = 0; t < T; ++t) {
    const float* xt = x + t * in_;
    float* yt = y + t * out_;
    // Step 2: a saturated output is replaced by the value recomputed from the unclipped input and
    // requantized to s_y (which already includes step 1's contribution, so that one is not added).
    bool have_r = false;
    for (int64_t n = 0; n < out_; ++n) {
      const int8_t q = y_q[t * out_ + n];
      if (!cal_.clip_output && (q == 127 || q == -128)) {
        ++counts->output_outliers;
        if (!have_r) {  // the row's unclipped codes, once per row
          for (int64_t k = 0; k < in_; ++k) {
            const float r = std::nearbyint(xt[k] / s_x);
            r_row[k] = cal_.clip_input ? std::clamp(r, -128.f, 127.f) : r;
          }
          have_r = true;
        }
        double acc = 0;
        const int8_t* wn = &w_[n * in_];
        for (int64_t k = 0; k < in_; ++k) acc += static_cast<double>(r_row[k]) * wn[k];
        const float z = static_cast<float>(acc * s_x * s_w_[n]);
        yt[n] += (std::nearbyint(z / s_y) - q) * s_y;
      } else if (rows[t]) {
        yt[n] += delta[t * out_ + n];
      }
    }
  }
}

}  // namespace pyrt
