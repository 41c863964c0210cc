// One layer's KIVI keys or values on the GPU, kept in the layout the decode kernel reads (KiviCache)
// with the CPU store's schedule (memory/kv_store.cpp): the first S tokens stay fp16 (sink), new tokens
// enter an fp16 window, finish_step() quantizes keys R tokens at a time (per channel, groups of G
// tokens) and values once the window exceeds R (per token, groups of G channels).
#pragma once
#include <cstdint>

#include "backends/cuda/device.h"
#include "memory/kv_store.h"

namespace pyrt::cuda {

class KiviGpuStore {
 public:
  // capacity: the most tokens the store will hold (the session's context).
  KiviGpuStore(const KvSpec& spec, bool keys, int n_heads, int head_dim, int64_t capacity);
  // Appends T fp32 rows [T, n_heads * head_dim] (device memory).
  void append(const float* rows, int64_t T);
  void finish_step();
  void clear() { n_sink_ = n_quant_ = n_window_ = 0; }
  int64_t size() const { return n_sink_ + n_quant_ + n_window_; }
  size_t bytes() const;  // what the tokens held take (codes, scales, minima, fp16 rows)
  // The cache as the kernels read it: its current extents (host), or a device copy refreshed here.
  KiviCache view() const;
  KiviCache* device_view();

 private:
  KvSpec s_;
  bool keys_;
  int64_t row_, n_sink_ = 0, n_quant_ = 0, n_window_ = 0;
  size_t code_bytes_;  // per entry
  DeviceBuffer sink_, scale_, min_, codes_, window_, shift_, view_;
};

}  // namespace pyrt::cuda
