// KIVI keys or values on the GPU (see kivi_store.h).
#include "memory/cuda/kivi_store.h"

#include <algorithm>

#include "pyrt/error.h"

namespace pyrt::cuda {

KiviGpuStore::KiviGpuStore(const KvSpec& spec, bool keys, int n_heads, int head_dim, int64_t capacity)
    : s_(spec), keys_(keys), row_(int64_t(n_heads) * head_dim), code_bytes_(size_t(spec.group * spec.bits / 8)) {
  if (!keys && head_dim % spec.group != 0) {
    fail(ErrorCode::kUnsupported,
         "kivi values need a head dimension that is a multiple of G=" + std::to_string(spec.group));
  }
  const size_t rows = size_t(std::max<int64_t>(capacity, 1)), r = size_t(row_);
  const size_t entries = keys ? rows / size_t(spec.group) * r + r : rows * (r / size_t(spec.group));
  sink_.reserve(size_t(std::max(spec.sink, 1)) * r * 2);
  window_.reserve(rows * r * 2);                  // a whole prompt may wait in the window until its step ends
  shift_.reserve(size_t(spec.residual) * r * 2);  // finish_step keeps at most R tokens in the window
  scale_.reserve(entries * 2), min_.reserve(entries * 2), codes_.reserve(entries * code_bytes_);
  view_.reserve(sizeof(KiviCache));
}

size_t KiviGpuStore::bytes() const {
  const int64_t entries = keys_ ? n_quant_ / s_.group * row_ : n_quant_ * (row_ / s_.group);
  return size_t(n_sink_ + n_window_) * size_t(row_) * 2 + size_t(entries) * (4 + code_bytes_);
}

void KiviGpuStore::append(const float* rows, int64_t T) {
  const int64_t to_sink = std::min<int64_t>(T, s_.sink - n_sink_);
  if (to_sink > 0) {
    check(f32_to_f16(rows, sink_.as<half>() + n_sink_ * row_, to_sink * row_, nullptr), "kivi sink");
    n_sink_ += to_sink, rows += to_sink * row_, T -= to_sink;
  }
  if (T <= 0) return;
  check(f32_to_f16(rows, window_.as<half>() + n_window_ * row_, T * row_, nullptr), "kivi window");
  n_window_ += T;
}

void KiviGpuStore::finish_step() {
  // Keys leave the window R at a time; values once more than R are waiting (the CPU's schedule).
  const int64_t move = keys_ ? n_window_ / s_.residual * s_.residual : std::max<int64_t>(0, n_window_ - s_.residual);
  if (move == 0) return;
  const int64_t entry0 = keys_ ? n_quant_ / s_.group * row_ : n_quant_ * (row_ / s_.group);
  check(kivi_quantize(keys_, window_.as<half>(), int(move), int(row_), s_.group, s_.bits, keys_ && s_.clip,
                      scale_.as<half>() + entry0, min_.as<half>() + entry0, codes_.as<uint8_t>() + entry0 * code_bytes_,
                      nullptr),
        "kivi_quantize");
  n_quant_ += move, n_window_ -= move;
  if (n_window_ > 0) {  // the rest moves to the front (through a copy: the ranges may overlap)
    const size_t bytes = size_t(n_window_ * row_) * 2;
    check(cudaMemcpy(shift_.as<void>(), window_.as<half>() + move * row_, bytes, cudaMemcpyDeviceToDevice),
          "kivi window");
    check(cudaMemcpy(window_.as<void>(), shift_.as<void>(), bytes, cudaMemcpyDeviceToDevice), "kivi window");
  }
}

KiviCache KiviGpuStore::view() const {
  KiviCache c{};
  c.sink = sink_.as<half>(), c.scale = scale_.as<half>(), c.min = min_.as<half>(), c.codes = codes_.as<uint8_t>();
  c.window = window_.as<half>();
  c.n_sink = int(n_sink_), c.n_quant = int(n_quant_), c.n_window = int(n_window_), c.bits = s_.bits, c.group = s_.group;
  return c;
}

KiviCache* KiviGpuStore::device_view() {
  const KiviCache c = view();
  check(cudaMemcpy(view_.as<void>(), &c, sizeof(c), cudaMemcpyHostToDevice), "kivi view");
  return view_.as<KiviCache>();
}

}  // namespace pyrt::cuda
