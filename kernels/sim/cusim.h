// The CUDA simulator: the project's kernels (kernels/*.cu) compiled as host C++ and run on the CPU,
// so their tests run on every machine, CI included. Each CUDA thread of a block is a fiber; fibers
// switch only at barriers (__syncthreads, __syncwarp, warp shuffles and votes, WMMA loads/stores),
// which is where block- and warp-level cooperation happens on a GPU.
//
// What it checks: index math, masking, tile edges, reductions, barrier placement (a thread runs
// alone to its next barrier, so a missing one usually shows as a wrong result), barrier divergence
// (threads of a warp or block waiting at different barriers is an error, not a hang) and launch
// limits (block size, grid size, dynamic shared memory over 48 KiB without the opt-in attribute).
// Dynamic shared memory starts as NaN bytes each block, as a GPU's starts undefined.
// What it does not: timing, coalescing, bank conflicts, register pressure, the exact rounding order
// of tensor cores (fp32 accumulation in k order here), races the fiber order happens to hide.
//
// Only the CUDA surface the kernels use is here; extend it when a kernel needs more.
#pragma once
#define PYRT_CUDA_SIM 1

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

#include "pyrt/ggml_types.h"  // fp16 <-> fp32 (round to nearest even)

// ---- CUDA C++ keywords as host C++ ----
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
// Shared memory: one instance per OS thread, and a block's fibers all run on one OS thread.
#define __shared__ static thread_local
#define __align__(n) __attribute__((aligned(n)))
#define __restrict__ __restrict

struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
};
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) {
  return {x, y, z, w};
}

// ---- fp16 ----
namespace cusim {
extern const float* const fp16_values;  // all 65536 fp16 values as fp32 (pyrt::fp16_to_fp32's)
}
struct __half {
  uint16_t bits;
  __half() = default;  // trivial, so __shared__ arrays of it need no constructor
  __half(float f) : bits(pyrt::fp32_to_fp16(f)) {}
  operator float() const { return cusim::fp16_values[bits]; }
};
using half = __half;
inline float __half2float(__half h) {
  return cusim::fp16_values[h.bits];
}
inline __half __float2half(float f) {
  return __half(f);
}
inline __half __float2half_rn(float f) {
  return __half(f);
}

// ---- device math the kernels call unqualified ----
inline float rsqrtf(float x) {
  return 1.0f / std::sqrt(x);
}
inline float __expf(float x) {
  return std::exp(x);
}
inline float __fdividef(float a, float b) {
  return a / b;
}
// Round-to-nearest arithmetic that nvcc never fuses; plain operations here (no FMA without -mfma).
inline float __fadd_rn(float a, float b) {
  return a + b;
}
inline float __fsub_rn(float a, float b) {
  return a - b;
}
inline float __fmul_rn(float a, float b) {
  return a * b;
}
inline float __fdiv_rn(float a, float b) {
  return a / b;
}
inline int __popc(unsigned x) {
  return __builtin_popcount(x);
}
inline int __ffs(int x) {
  return __builtin_ffs(x);
}
#define PYRT_SIM_MINMAX(T) \
  inline T min(T a, T b) { \
    return b < a ? b : a;  \
  }                        \
  inline T max(T a, T b) { \
    return a < b ? b : a;  \
  }
PYRT_SIM_MINMAX(int)
PYRT_SIM_MINMAX(unsigned)
PYRT_SIM_MINMAX(long)
PYRT_SIM_MINMAX(unsigned long)
PYRT_SIM_MINMAX(long long)
PYRT_SIM_MINMAX(unsigned long long)
PYRT_SIM_MINMAX(float)
PYRT_SIM_MINMAX(double)
#undef PYRT_SIM_MINMAX

// ---- the runtime API (memory is host memory: device pointers are plain pointers) ----
enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDeviceFunction = 98,
  cudaErrorNoDevice = 100,
  cudaErrorLaunchOutOfResources = 701,
  cudaErrorLaunchFailure = 719,
};
using cudaError = cudaError_t;
typedef struct CUstream_st* cudaStream_t;
typedef struct CUevent_st* cudaEvent_t;
enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4
};
enum cudaDeviceAttr {
  cudaDevAttrMaxThreadsPerBlock = 1,
  cudaDevAttrMaxSharedMemoryPerBlock = 8,
  cudaDevAttrMultiProcessorCount = 16,
  cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
};
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
struct cudaDeviceProp {
  char name[256];
  size_t totalGlobalMem;
  size_t sharedMemPerBlock;
  size_t sharedMemPerBlockOptin;
  int warpSize;
  int maxThreadsPerBlock;
  int multiProcessorCount;
  int major, minor;
};
constexpr int warpSize = 32;

cudaError_t cudaMalloc(void** ptr, size_t bytes);
cudaError_t cudaMallocAsync(void** ptr, size_t bytes, cudaStream_t stream);
template <typename T>
cudaError_t cudaMalloc(T** ptr, size_t bytes) {
  return cudaMalloc(reinterpret_cast<void**>(ptr), bytes);
}
template <typename T>
cudaError_t cudaMallocAsync(T** ptr, size_t bytes, cudaStream_t stream) {
  return cudaMallocAsync(reinterpret_cast<void**>(ptr), bytes, stream);
}
cudaError_t cudaFree(void* ptr);
cudaError_t cudaFreeAsync(void* ptr, cudaStream_t stream);
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream = nullptr);
cudaError_t cudaMemset(void* dst, int value, size_t bytes);
cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t stream = nullptr);
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
const char* cudaGetErrorString(cudaError_t err);
const char* cudaGetErrorName(cudaError_t err);
cudaError_t cudaDeviceSynchronize();
// Clears a failed kernel's sticky error and the function attributes (allocations stay).
cudaError_t cudaDeviceReset();
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaGetDeviceCount(int* n);
cudaError_t cudaGetDevice(int* dev);
cudaError_t cudaSetDevice(int dev);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int dev);
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int dev);
cudaError_t cudaEventCreate(cudaEvent_t* event);
cudaError_t cudaEventDestroy(cudaEvent_t event);
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream = nullptr);
cudaError_t cudaEventSynchronize(cudaEvent_t event);
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end);

namespace cusim {

// ---- what the scheduler exposes to the kernels ----
extern thread_local uint3 thread_idx;
extern thread_local uint3 block_idx;
extern thread_local dim3 block_dim;
extern thread_local dim3 grid_dim;

// Warp-level collectives, told apart so that lanes meeting at different ones is an error.
enum class Collective : int { kSyncWarp, kShuffle, kVote, kWmma };
void sync_block();
void sync_warp(Collective what, unsigned mask);
int lane_id();
// Publishes this lane's value, waits for the warp, returns the 32 values of this collective.
const uint64_t* exchange(uint64_t value, Collective what, unsigned mask);
void* dynamic_shared();

cudaError_t set_function_attribute(std::uintptr_t fn, cudaFuncAttribute attr, int value);
int occupancy(int block_threads, size_t dynamic_smem);

struct LaunchConfig {
  dim3 grid, block;
  size_t dynamic_smem;
  std::uintptr_t function;
};
// Runs body as every thread of every block (blocks in order); errors become the launch error.
void launch(const LaunchConfig& config, const std::function<void()>& body);
// The message of the last launch failure (divergent barriers, bad configuration), "" if none.
const char* last_error_message();

template <typename... P>
struct Launcher {
  LaunchConfig config;
  void (*kernel)(P...);
  template <typename... A>
  void operator()(A&&... args) const {
    // Converted to the kernel's parameter types once, as a launch copies its arguments; each thread
    // then gets its own copy, as each GPU thread reads the parameters unchanged.
    const std::tuple<std::decay_t<P>...> params(std::forward<A>(args)...);
    launch(config, [&] { std::apply(kernel, params); });
  }
};
template <typename... P>
Launcher<P...> make_launcher(dim3 grid, dim3 block, size_t smem, cudaStream_t, void (*kernel)(P...)) {
  return Launcher<P...>{{grid, block, smem, reinterpret_cast<std::uintptr_t>(kernel)}, kernel};
}

}  // namespace cusim

#define threadIdx (::cusim::thread_idx)
#define blockIdx (::cusim::block_idx)
#define blockDim (::cusim::block_dim)
#define gridDim (::cusim::grid_dim)
#define PYRT_LAUNCH(grid, block, smem, stream, ...) ::cusim::make_launcher(grid, block, smem, stream, __VA_ARGS__)
#define PYRT_DYNAMIC_SHARED(T, name) T* name = static_cast<T*>(::cusim::dynamic_shared())

template <typename F>
cudaError_t cudaFuncSetAttribute(F* fn, cudaFuncAttribute attr, int value) {
  return cusim::set_function_attribute(reinterpret_cast<std::uintptr_t>(fn), attr, value);
}
template <typename F>
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* n, F*, int block_threads, size_t dynamic_smem) {
  *n = cusim::occupancy(block_threads, dynamic_smem);
  return cudaSuccess;
}

// ---- barriers and warp collectives ----
inline void __syncthreads() {
  cusim::sync_block();
}
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  cusim::sync_warp(cusim::Collective::kSyncWarp, mask);
}

namespace cusim {
template <typename T>
T shuffle(unsigned mask, T value, int src_lane, int width) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "shuffles move up to 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof(T));
  const uint64_t* lanes = exchange(bits, Collective::kShuffle, mask);
  const int lane = lane_id(), base = lane & ~(width - 1);
  // A source outside this lane's width-segment returns the lane's own value (as the hardware does).
  const int from = (src_lane < base || src_lane >= base + width) ? lane : src_lane;
  T out;
  std::memcpy(&out, &lanes[from], sizeof(T));
  return out;
}
}  // namespace cusim

template <typename T>
T __shfl_sync(unsigned mask, T value, int src_lane, int width = 32) {
  const int base = cusim::lane_id() & ~(width - 1);
  return cusim::shuffle(mask, value, base + (src_lane & (width - 1)), width);
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T value, int lane_mask, int width = 32) {
  return cusim::shuffle(mask, value, cusim::lane_id() ^ lane_mask, width);
}
template <typename T>
T __shfl_down_sync(unsigned mask, T value, unsigned delta, int width = 32) {
  return cusim::shuffle(mask, value, cusim::lane_id() + int(delta), width);
}
template <typename T>
T __shfl_up_sync(unsigned mask, T value, unsigned delta, int width = 32) {
  return cusim::shuffle(mask, value, cusim::lane_id() - int(delta), width);
}
inline unsigned __ballot_sync(unsigned mask, int predicate) {
  const uint64_t* lanes = cusim::exchange(predicate != 0, cusim::Collective::kVote, mask);
  unsigned bits = 0;
  for (int l = 0; l < 32; ++l) bits |= unsigned(lanes[l] & 1) << l;
  return bits & mask;
}
inline int __any_sync(unsigned mask, int predicate) {
  return __ballot_sync(mask, predicate) != 0;
}
inline int __all_sync(unsigned mask, int predicate) {
  return __ballot_sync(mask, !predicate) == 0;
}

// ---- WMMA: every lane holds the whole tile (row-major), so element-wise loops over
// fragment.x work whatever the hardware's element-to-lane mapping is ----
namespace nvcuda::wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  static constexpr int kRows = std::is_same_v<Use, matrix_b> ? K : M;
  static constexpr int kCols = std::is_same_v<Use, matrix_a> ? K : N;
  static constexpr int num_elements = kRows * kCols;
  T x[num_elements];
};

template <typename Use, int M, int N, int K, typename T, typename L, typename V>
void fill_fragment(fragment<Use, M, N, K, T, L>& f, const V& value) {
  for (auto& e : f.x) e = T(value);
}

template <typename Use, int M, int N, int K, typename T, typename L>
void load_matrix_sync(fragment<Use, M, N, K, T, L>& f, const T* p, unsigned ldm) {
  static_assert(!std::is_same_v<Use, accumulator>, "accumulator loads name a memory layout");
  cusim::sync_warp(cusim::Collective::kWmma, 0xffffffffu);
  using F = fragment<Use, M, N, K, T, L>;
  for (int r = 0; r < F::kRows; ++r)
    for (int c = 0; c < F::kCols; ++c)
      f.x[r * F::kCols + c] = std::is_same_v<L, row_major> ? p[size_t(r) * ldm + c] : p[size_t(c) * ldm + r];
}

template <int M, int N, int K, typename T>
void load_matrix_sync(fragment<accumulator, M, N, K, T>& f, const T* p, unsigned ldm, layout_t layout) {
  cusim::sync_warp(cusim::Collective::kWmma, 0xffffffffu);
  for (int r = 0; r < M; ++r)
    for (int c = 0; c < N; ++c)
      f.x[r * N + c] = layout == mem_row_major ? p[size_t(r) * ldm + c] : p[size_t(c) * ldm + r];
}

template <int M, int N, int K, typename T>
void store_matrix_sync(T* p, const fragment<accumulator, M, N, K, T>& f, unsigned ldm, layout_t layout) {
  cusim::sync_warp(cusim::Collective::kWmma, 0xffffffffu);
  for (int r = 0; r < M; ++r)
    for (int c = 0; c < N; ++c)
      (layout == mem_row_major ? p[size_t(r) * ldm + c] : p[size_t(c) * ldm + r]) = f.x[r * N + c];
}

// d = a b + c with fp16 products (exact in fp32) accumulated in fp32 in k order.
template <int M, int N, int K, typename LA, typename LB>
void mma_sync(fragment<accumulator, M, N, K, float>& d, const fragment<matrix_a, M, N, K, half, LA>& a,
              const fragment<matrix_b, M, N, K, half, LB>& b, const fragment<accumulator, M, N, K, float>& c) {
  float af[M * K], bf[K * N], out[M * N];
  for (int i = 0; i < M * K; ++i) af[i] = __half2float(a.x[i]);
  for (int i = 0; i < K * N; ++i) bf[i] = __half2float(b.x[i]);
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) {
      float s = c.x[m * N + n];
      for (int k = 0; k < K; ++k) s += af[m * K + k] * bf[k * N + n];
      out[m * N + n] = s;
    }
  std::memcpy(d.x, out, sizeof(out));
}
}  // namespace nvcuda::wmma
