// Device memory, weight upload and the linear dispatch shared by the GPU models (see device.h).
#include "backends/cuda/device.h"

#include <algorithm>
#include <vector>

#include "pyrt/error.h"
#include "pyrt/ggml_types.h"

namespace pyrt::cuda {

void check(cudaError_t err, const std::string& what) {
  if (err != cudaSuccess) fail(ErrorCode::kInternal, "CUDA: " + what + ": " + cudaGetErrorString(err));
}

void check_head_dim(const std::string& path, int d) {
  if (d != 64 && d != 80 && d != 96 && d != 128) {
    fail(ErrorCode::kUnsupported,
         path + ": head dimension " + std::to_string(d) + " has no CUDA attention kernel (64, 80, 96, 128)");
  }
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

DeviceBuffer::DeviceBuffer(size_t bytes) {
  reserve(bytes);
}
DeviceBuffer::~DeviceBuffer() {
  if (ptr_) cudaFree(ptr_);
}
DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    if (ptr_) cudaFree(ptr_);
    ptr_ = o.ptr_, bytes_ = o.bytes_;
    o.ptr_ = nullptr, o.bytes_ = 0;
  }
  return *this;
}
void DeviceBuffer::reserve(size_t bytes) {
  if (bytes <= bytes_ && ptr_) return;
  if (ptr_) cudaFree(ptr_);
  ptr_ = nullptr, bytes_ = 0;
  const cudaError_t err = cudaMalloc(&ptr_, std::max<size_t>(bytes, 16));
  if (err != cudaSuccess) {
    ptr_ = nullptr;
    fail(ErrorCode::kInternal,
         "CUDA: cannot allocate " + std::to_string(bytes) + " bytes of device memory: " + cudaGetErrorString(err));
  }
  bytes_ = bytes;
}
void DeviceBuffer::upload(const void* host, size_t bytes) {
  reserve(bytes);
  check(cudaMemcpy(ptr_, host, bytes, cudaMemcpyHostToDevice), "upload");
}

DeviceBuffer WeightUploader::floats(const float* x, int64_t n, float scale) {
  std::vector<float> v(x, x + n);
  for (float& f : v) f *= scale;
  DeviceBuffer b;
  b.upload(v.data(), size_t(n) * sizeof(float));
  device_bytes += b.bytes();
  return b;
}

DeviceWeight WeightUploader::weight(const Weight& w) {
  DeviceWeight d;
  d.rows = w.rows, d.cols = w.cols;
  if (w.cols % 32 != 0) {
    fail(ErrorCode::kUnsupported, path + ": tensor '" + w.name + "' has " + std::to_string(w.cols) +
                                      " columns; the CUDA linears need a multiple of 32");
  }
  const auto t = w.type;
  if (t == GgmlType::Q8_0 || t == GgmlType::Q4_0 || t == GgmlType::Q4_1 || t == GgmlType::F16) {
    d.type = int(t);
    d.data.upload(w.data, w.row_stride * size_t(w.rows));  // rows are contiguous in the file
  } else {
    // Other types (F32, K-quants, BF16...) become fp16 rows at load; stats() counts them.
    const TypeTraits* tt = type_traits(uint32_t(t));
    if (!tt || !tt->computable) {
      fail(ErrorCode::kUnsupported, path + ": tensor '" + w.name + "' has a type the runtime cannot dequantize");
    }
    std::vector<float> row(size_t(w.cols));
    std::vector<uint16_t> half_rows(size_t(w.rows * w.cols));
    for (int64_t r = 0; r < w.rows; ++r) {
      dequantize_row(t, w.data + r * w.row_stride, row.data(), w.cols);
      for (int64_t c = 0; c < w.cols; ++c) half_rows[size_t(r * w.cols + c)] = fp32_to_fp16(row[size_t(c)]);
    }
    d.type = int(GgmlType::F16);
    d.data.upload(half_rows.data(), half_rows.size() * 2);
    converted_to_f16 += w.rows * w.cols;
  }
  device_bytes += d.data.bytes();
  return d;
}

void Linear::run(const DeviceWeight& w, const float* x, int64_t T, float* y) {
  const int N = int(w.rows), K = int(w.cols);
  if (T <= kLinearGemvRows) {  // decode steps (one session's or a batch's) and short pieces
    check(gemv_quant_rows(w.type, w.data.as<void>(), x, int(T), y, N, K, nullptr), "gemv");
    return;
  }
  half_in_.reserve(size_t(T) * K * 2);
  check(f32_to_f16(x, half_in_.as<half>(), T * K, nullptr), "f32_to_f16");
  check(gemm_ggml_tc(w.type, half_in_.as<half>(), w.data.as<void>(), y, int(T), N, K, N, nullptr), "gemm_ggml_tc");
}

}  // namespace pyrt::cuda
