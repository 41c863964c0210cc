#include "backends/cpu/cpu_backend.h"

#include <algorithm>
#include <cstring>
#include <map>

#include "backends/cpu/ops.h"
#include "pyrt/error.h"

namespace pyrt {

namespace {

// RoPE angles of the pass's positions, computed once per token and RoPE for every layer and for both
// queries and keys: [row][cos n_rot/2, sin n_rot/2].
struct CpuScratch : PassScratch {
  std::map<const RopeSpec*, std::vector<float>> angles;
};

class CpuBackend : public Backend {
 public:
  explicit CpuBackend(ThreadPool& pool) : pool_(pool) {}
  const std::string& name() const override { return name_; }
  bool host_memory() const override { return true; }
  void prepare(const std::vector<const Weight*>&, const std::vector<const Weight*>&,
               const std::vector<std::pair<const float*, int64_t>>&) override {}

  float* alloc(int64_t n) override { return new float[size_t(n)]; }
  void release(float* p) override { delete[] p; }
  void upload(const float* host, int64_t n, float* dst) override { std::copy_n(host, n, dst); }
  void download(const float* src, int64_t n, float* host) override { std::copy_n(src, n, host); }
  void zero(float* x, int64_t n) override { std::fill_n(x, n, 0.0f); }
  void gather_rows(const float* src, const std::vector<int64_t>& rows, int64_t width, float* dst) override {
    for (size_t i = 0; i < rows.size(); ++i) {
      if (src + rows[i] * width != dst + int64_t(i) * width)
        std::memmove(dst + int64_t(i) * width, src + rows[i] * width, size_t(width) * sizeof(float));
    }
  }
  std::unique_ptr<PassScratch> begin_pass(const RowPositions&) override { return std::make_unique<CpuScratch>(); }

  void embed(const Weight& table, const int32_t* ids, int64_t n, float scale, float* out) override {
    embed_tokens(table, ids, n, out);
    if (scale != 1.0f) this->scale(out, scale, n * table.cols);
  }
  void norm(const NormSpec& s, const float* x, float* out, int64_t n_groups) override {
    if (s.layer_norm) return layer_norm_rows(x, s.w, s.b, out, n_groups, s.width, s.eps);
    rms_norm_rows(x, s.w, out, n_groups, s.width, s.eps, &pool_);
  }
  void linear(const Weight* const* ws, const float* const* biases, float* const* ys, int n, const float* x,
              int64_t rows) override {
    matmul_shared_input(ws, ys, n, x, rows, pool_);
    for (int i = 0; i < n; ++i) {
      if (biases[i]) add_bias(ys[i], biases[i], rows, ws[i]->rows);
    }
  }
  void rope(const RopeSpec& s, float* x, int n_heads, const RowPositions& pos, PassScratch& scratch) override {
    const int64_t half = int64_t(s.inv_freq.size()), stride = int64_t(n_heads) * s.head_dim;
    std::vector<float>& cs = static_cast<CpuScratch&>(scratch).angles[&s];
    if (cs.empty()) {
      cs.resize(size_t(pos.n_rows * 2 * half));
      for (int64_t r = 0; r < pos.n_rows; ++r) {
        if (pos.pos[r] == kPaddingPosition) continue;
        float* a = &cs[size_t(r * 2 * half)];
        rope_angles(static_cast<float>(pos.pos[r]) * s.pos_scale, s.inv_freq, a, a + half);
      }
    }
    auto rotate = [&](int64_t r) {
      if (pos.pos[r] == kPaddingPosition) return;
      const float* a = &cs[size_t(r * 2 * half)];
      rope_with(x + r * stride, n_heads, s.head_dim, s.n_rot, a, a + half, s.mode);
    };
    constexpr int64_t kRowsPerTask = 32;
    if (pos.n_rows <= kRowsPerTask) {
      for (int64_t r = 0; r < pos.n_rows; ++r) rotate(r);
      return;
    }
    pool_.run((pos.n_rows + kRowsPerTask - 1) / kRowsPerTask, [&](int64_t task) {
      for (int64_t r = task * kRowsPerTask; r < std::min(pos.n_rows, (task + 1) * kRowsPerTask); ++r) rotate(r);
    });
  }
  void add(float* x, const float* y, int64_t n) override { add_inplace(x, y, n); }
  void activate(Activation a, float* gate, const float* up, int64_t n) override {
    if (up && a == Activation::kSilu) return silu_mul(gate, up, n, &pool_);
    pyrt::activate(a, gate, n);
    if (up) {
      for (int64_t i = 0; i < n; ++i) gate[i] *= up[i];
    }
  }
  void scale(float* x, float s, int64_t n) override {
    for (int64_t i = 0; i < n; ++i) x[i] *= s;
  }
  void add_positions(const float* table, int64_t width, const RowPositions& pos, float* x) override {
    for (int64_t r = 0; r < pos.n_rows; ++r) {
      if (pos.pos[r] != kPaddingPosition) add_inplace(x + r * width, table + pos.pos[r] * width, width);
    }
  }

 private:
  ThreadPool& pool_;
  const std::string name_ = "cpu";
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(ThreadPool& pool) {
  return std::make_unique<CpuBackend>(pool);
}

}  // namespace pyrt
