// What every model on the GPU shares: device memory, linear weights uploaded from the mapped file,
// and a linear layer's dispatch (GEMV for a few rows, tensor-core GEMM for more).
#pragma once
#include <cuda_runtime_api.h>

#include <chrono>
#include <cstdint>
#include <string>

#include "backends/cpu/ops.h"
#include "pyrt_cuda.h"

namespace pyrt::cuda {

// Fails with kInternal naming `what` and CUDA's message.
void check(cudaError_t err, const std::string& what);
// Fails with kUnsupported naming the file when the attention kernels have no instance for head_dim.
void check_head_dim(const std::string& path, int head_dim);
double seconds_since(std::chrono::steady_clock::time_point t0);
// Rows per pass of a prompt: bounds the scratch (activations of 512 tokens) like the CPU's micro-batches.
constexpr int64_t kMaxPassRows = 512;

// Device memory, freed on destruction.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) { o.ptr_ = nullptr, o.bytes_ = 0; }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  // Grows (contents lost) to at least `bytes`.
  void reserve(size_t bytes);
  void upload(const void* host, size_t bytes);
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// A linear layer's weight on the device: Q8_0/Q4_0/Q4_1 blocks as stored (the decode GEMV reads
// them; the prefill GEMM dequantizes its tiles as it loads them), F16 as stored, F32 rounded to F16
// (stats say how many).
struct DeviceWeight {
  int type = 1;  // ggml type id: 1 F16, 8 Q8_0, 2 Q4_0, 3 Q4_1
  int64_t rows = 0, cols = 0;
  DeviceBuffer data;
};

// Uploads a model's weights, counting device bytes and what had to become fp16.
struct WeightUploader {
  std::string path;  // for errors
  size_t device_bytes = 0;
  int64_t converted_to_f16 = 0;  // weight elements of types without a GPU kernel (F32, K-quants...)
  DeviceWeight weight(const Weight& w);
  // n floats times `scale` (norm weights; a logit scale folds into the final norm).
  DeviceBuffer floats(const float* x, int64_t n, float scale = 1.0f);
};

// y[T, w.rows] = x[T, w.cols] w^T: the dequantizing GEMV for up to kLinearGemvRows rows (fp32 activations;
// at most two reads of the weights), else x in fp16 through the tensor-core GEMM (quantized tiles
// dequantized in shared memory).
constexpr int64_t kLinearGemvRows = 2 * kGemvMaxRows;
class Linear {
 public:
  Linear() = default;
  void run(const DeviceWeight& w, const float* x, int64_t T, float* y);

 private:
  DeviceBuffer half_in_;
};

}  // namespace pyrt::cuda
