#include "core/weight.h"

#include "pyrt/error.h"

namespace pyrt {

Weight weight_from(const GgufTensorInfo& t) {
  Weight w;
  w.type = t.type;
  w.data = t.data;
  w.cols = t.ne[0];
  w.rows = t.n_elements() / t.ne[0];
  w.row_stride = row_bytes(t.type, w.cols);
  w.name = t.name;
  if (!type_traits(t.type).computable) {
    fail(ErrorCode::kUnsupported,
         "tensor '" + t.name + "' has type " + type_name(static_cast<uint32_t>(t.type)) +
             ", which this runtime does not compute yet (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1)");
  }
  return w;
}

Weight Weight::slice_rows(int64_t first, int64_t n, std::string part_name) const {
  if (first < 0 || n <= 0 || first + n > rows) {
    fail(ErrorCode::kInternal, "rows " + std::to_string(first) + ".." + std::to_string(first + n) + " of '" + name +
                                   "' (" + std::to_string(rows) + " rows)");
  }
  Weight w = *this;
  w.data = data + size_t(first) * row_stride;
  w.rows = n;
  w.name = std::move(part_name);
  return w;
}

}  // namespace pyrt
