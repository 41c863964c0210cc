// A 2-D tensor of a model file used in place (memory-mapped): what every backend multiplies.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "pyrt/ggml_types.h"
#include "pyrt/gguf.h"

namespace pyrt {

// `rows` output features of `cols` inputs each, row r at data + r * row_stride.
struct Weight {
  GgmlType type = GgmlType::F32;
  const uint8_t* data = nullptr;
  int64_t rows = 0, cols = 0;
  size_t row_stride = 0;
  bool q8_activations = false;  // multiply 8-bit quantized activations (types with an integer kernel)
  std::string name;
  bool valid() const { return data != nullptr; }
  // Rows [first, first + n) as a weight of their own (a fused tensor's parts: QKV, gate/up).
  Weight slice_rows(int64_t first, int64_t n, std::string part_name) const;
};
// Fails with kUnsupported naming the tensor and its type when no kernel computes that type.
Weight weight_from(const GgufTensorInfo& t);

}  // namespace pyrt
