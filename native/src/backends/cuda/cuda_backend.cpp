// The CUDA backend: activations in device memory, linear weights uploaded once (device.h), every
// operation one of the project's kernels (kernels/pyrt_cuda.h). Built twice from this file: against
// the CUDA runtime ("cuda") and against the CPU simulator ("cuda-sim", what CI runs).
#include "backends/cuda/cuda_backend.h"

#include <map>
#include <vector>

#include "pyrt/error.h"

namespace pyrt::cuda {

namespace {

// The pass's positions on the device (padding rows: -1).
class CudaScratch : public PassScratch {
 public:
  DeviceBuffer positions;
};

class CudaBackend : public Backend {
 public:
  CudaBackend(std::string name, std::string path) : name_(std::move(name)) { up_.path = std::move(path); }
  ~CudaBackend() override {
    for (auto& [n, ptrs] : free_)
      for (float* p : ptrs) cudaFree(p);
  }
  const std::string& name() const override { return name_; }
  bool host_memory() const override { return false; }

  void prepare(const std::vector<const Weight*>& weights, const std::vector<const Weight*>&,
               const std::vector<std::pair<const float*, int64_t>>& vectors) override {
    // Embedding rows are gathered on the host (tables stay in the mapped file).
    for (const Weight* w : weights) weights_.emplace(w, up_.weight(*w));
    for (const auto& [p, n] : vectors) vectors_.emplace(p, up_.floats(p, n));
  }
  size_t weight_bytes() const override { return up_.device_bytes; }
  int64_t converted_to_f16() const { return up_.converted_to_f16; }

  // Buffers of a size go back to a free list: a decode step allocates the same sizes every time.
  float* alloc(int64_t n) override {
    auto& list = free_[n];
    if (!list.empty()) {
      float* p = list.back();
      list.pop_back();
      sizes_[p] = n;
      return p;
    }
    void* p = nullptr;
    check(cudaMalloc(&p, size_t(std::max<int64_t>(n, 1)) * sizeof(float)), "allocate activations");
    sizes_[static_cast<float*>(p)] = n;
    return static_cast<float*>(p);
  }
  void release(float* p) override {
    auto it = sizes_.find(p);
    if (it == sizes_.end()) return;
    free_[it->second].push_back(p);
    sizes_.erase(it);
  }
  void upload(const float* host, int64_t n, float* dst) override {
    check(cudaMemcpy(dst, host, size_t(n) * sizeof(float), cudaMemcpyHostToDevice), "upload");
  }
  void download(const float* src, int64_t n, float* host) override {
    check(cudaMemcpy(host, src, size_t(n) * sizeof(float), cudaMemcpyDeviceToHost), "download");
  }
  void zero(float* x, int64_t n) override { check(cudaMemset(x, 0, size_t(n) * sizeof(float)), "zero"); }
  void gather_rows(const float* src, const std::vector<int64_t>& rows, int64_t width, float* dst) override {
    // Rows increase and move towards the front: in order, a row's source is never overwritten first.
    for (size_t i = 0; i < rows.size(); ++i) {
      if (src + rows[i] * width == dst + int64_t(i) * width) continue;
      check(cudaMemcpy(dst + int64_t(i) * width, src + rows[i] * width, size_t(width) * sizeof(float),
                       cudaMemcpyDeviceToDevice),
            "gather rows");
    }
  }

  std::unique_ptr<PassScratch> begin_pass(const RowPositions& pos) override {
    auto s = std::make_unique<CudaScratch>();
    std::vector<int> p(size_t(std::max<int64_t>(pos.n_rows, 1)), -1);
    for (int64_t r = 0; r < pos.n_rows; ++r) {
      if (pos.pos[r] != kPaddingPosition) p[size_t(r)] = int(pos.pos[r]);
    }
    s->positions.upload(p.data(), p.size() * sizeof(int));
    return s;
  }

  void embed(const Weight& table, const int32_t* ids, int64_t n, float s, float* out) override {
    std::vector<float> rows(size_t(n * table.cols));
    embed_tokens(table, ids, n, rows.data());
    if (s != 1.0f)
      for (float& v : rows) v *= s;
    upload(rows.data(), int64_t(rows.size()), out);
  }
  void norm(const NormSpec& s, const float* x, float* out, int64_t n_groups) override {
    const float* w = vec(s.w);
    if (s.layer_norm) {
      check(layer_norm(x, w, s.b ? vec(s.b) : nullptr, out, int(n_groups), int(s.width), s.eps, nullptr), "layer_norm");
    } else {
      check(rms_norm(x, w, out, int(n_groups), int(s.width), s.eps, nullptr), "rms_norm");
    }
  }
  void linear(const Weight* const* ws, const float* const* biases, float* const* ys, int n, const float* x,
              int64_t rows) override {
    for (int i = 0; i < n; ++i) {
      lin_.run(weights_.at(ws[i]), x, rows, ys[i]);
      if (biases[i]) check(add_bias(ys[i], vec(biases[i]), rows, int(ws[i]->rows), nullptr), "bias");
    }
  }
  void rope(const RopeSpec& s, float* x, int n_heads, const RowPositions& pos, PassScratch& scratch) override {
    auto it = inv_freq_.find(&s);
    if (it == inv_freq_.end()) {
      std::vector<float> f = s.inv_freq;
      for (float& v : f) v *= s.pos_scale;  // linear RoPE scaling folded into the frequencies
      it = inv_freq_.emplace(&s, DeviceBuffer{}).first;
      it->second.upload(f.data(), f.size() * sizeof(float));
    }
    check(rope_positions(x, int(pos.n_rows), n_heads, s.head_dim, s.n_rot,
                         static_cast<CudaScratch&>(scratch).positions.as<int>(), it->second.as<float>(),
                         s.mode == RopeMode::kNeox, nullptr),
          "rope");
  }
  void add(float* x, const float* y, int64_t n) override { check(add_inplace(x, y, n, nullptr), "add"); }
  void activate(Activation a, float* gate, const float* up, int64_t n) override {
    check(act_mul(static_cast<Act>(int(a)), gate, up, n, nullptr), "activation");
  }
  void scale(float* x, float s, int64_t n) override { check(cuda::scale(x, s, n, nullptr), "scale"); }
  void add_positions(const float* table, int64_t width, const RowPositions& pos, float* x) override {
    std::vector<int> p(size_t(pos.n_rows), -1);
    for (int64_t r = 0; r < pos.n_rows; ++r) {
      if (pos.pos[r] != kPaddingPosition) p[size_t(r)] = int(pos.pos[r]);
    }
    DeviceBuffer dp;
    dp.upload(p.data(), p.size() * sizeof(int));
    check(cuda::add_positions(x, vec(table), dp.as<int>(), int(pos.n_rows), int(width), nullptr), "positions");
  }

 private:
  const float* vec(const float* host) const {
    auto it = vectors_.find(host);
    if (it == vectors_.end()) fail(ErrorCode::kInternal, "a float vector was not prepared for the device");
    return it->second.as<float>();
  }
  std::string name_;
  WeightUploader up_;
  std::map<const Weight*, DeviceWeight> weights_;
  std::map<const float*, DeviceBuffer> vectors_;  // norms, biases, position tables
  std::map<const RopeSpec*, DeviceBuffer> inv_freq_;
  std::map<int64_t, std::vector<float*>> free_;
  std::map<float*, int64_t> sizes_;
  Linear lin_;
};

}  // namespace

std::unique_ptr<Backend> make_cuda_backend(const std::string& name) {
  return std::make_unique<CudaBackend>(name, "");
}

}  // namespace pyrt::cuda
