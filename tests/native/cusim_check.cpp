// Self-check of the CUDA simulator (kernels/sim): the semantics the project's kernels lean on, and
// the mistakes it must catch rather than hide. Built with -DPYRT_KERNEL_CHECK=ON and run by
// tests/unit/test_native_kernels.py. Prints one line per check; exits 1 on the first failure.
#include <cuda_runtime.h>  // the simulator's (kernels/sim/include)

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace {

[[noreturn]] void fail(const std::string& what) {
  std::printf("FAIL %s\n", what.c_str());
  std::exit(1);
}
void expect(bool ok, const std::string& what) {
  if (!ok) fail(what);
  std::printf("ok %s\n", what.c_str());
}

template <typename T>
struct Buf {
  T* p = nullptr;
  size_t n;
  explicit Buf(size_t count) : n(count) {
    if (cudaMalloc(&p, n * sizeof(T)) != cudaSuccess) fail("cudaMalloc");
  }
  ~Buf() { cudaFree(p); }
  std::vector<T> host() const {
    std::vector<T> v(n);
    cudaMemcpy(v.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost);
    return v;
  }
};

// Every thread publishes a value, then reads its neighbour's: right only with the barrier between
// (the values differ per block and launch, so what an earlier block left in shared memory is wrong).
int neighbour_value(int block, int thread, int salt) {
  return salt + block * 1000 + thread * 3;
}
template <bool kBarrier>
__global__ void neighbour_kernel(int* out, int salt) {
  __shared__ int s[128];
  s[threadIdx.x] = neighbour_value(blockIdx.x, threadIdx.x, salt);
  if (kBarrier) __syncthreads();
  out[blockIdx.x * blockDim.x + threadIdx.x] = s[(threadIdx.x + 1) % blockDim.x];
  __syncthreads();  // s is reused by the next block only after everyone read it
}

__global__ void shuffle_kernel(int* out, int width) {
  const int lane = threadIdx.x % 32, v = 100 + int(threadIdx.x);
  int* o = out + threadIdx.x * 6;
  o[0] = __shfl_xor_sync(0xffffffffu, v, 5, width);
  o[1] = __shfl_down_sync(0xffffffffu, v, 3, width);
  o[2] = __shfl_up_sync(0xffffffffu, v, 2, width);
  o[3] = __shfl_sync(0xffffffffu, v, 7, width);
  o[4] = int(__ballot_sync(0xffffffffu, lane % 3 == 0));
  float f = float(lane);
  for (int off = 16; off > 0; off >>= 1) f += __shfl_xor_sync(0xffffffffu, f, off);
  o[5] = int(f);
}

__global__ void divergent_kernel(int* out) {
  if (threadIdx.x % 32 == 0)
    __syncwarp();  // lane 0 waits at a warp barrier ...
  else
    __syncthreads();  // ... the rest of its warp at the block's
  out[threadIdx.x] = 1;
}

__global__ void dynamic_smem_kernel(float* out) {
  PYRT_DYNAMIC_SHARED(float, s);
  out[threadIdx.x] = s[threadIdx.x];  // never written: shared memory starts undefined (NaN here)
}

__global__ void early_exit_kernel(int* out, int n) {
  if (int(threadIdx.x) >= n) return;  // exited threads do not hold a barrier up
  __syncthreads();
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, int(threadIdx.x), 1);
}

}  // namespace

int main() {
  {
    Buf<int> out(4 * 128);
    auto want = [](int i, int salt) { return neighbour_value(i / 128, (i % 128 + 1) % 128, salt); };
    PYRT_LAUNCH(4, 128, 0, nullptr, neighbour_kernel<true>)(out.p, 1);
    expect(cudaGetLastError() == cudaSuccess, "barrier launch");
    auto v = out.host();
    bool ok = true;
    for (int i = 0; i < 4 * 128; ++i) ok &= v[i] == want(i, 1);
    expect(ok, "__syncthreads orders shared-memory writes before reads");
    PYRT_LAUNCH(4, 128, 0, nullptr, neighbour_kernel<false>)(out.p, 2);
    v = out.host();
    int wrong = 0;
    for (int i = 0; i < 4 * 128; ++i) wrong += v[i] != want(i, 2);
    expect(wrong > 0, "a missing __syncthreads shows as wrong results (" + std::to_string(wrong) + " of 512)");
  }
  for (int width : {32, 8}) {
    Buf<int> out(64 * 6);
    PYRT_LAUNCH(1, 64, 0, nullptr, shuffle_kernel)(out.p, width);
    auto v = out.host();
    bool ok = true;
    for (int t = 0; t < 64; ++t) {
      const int lane = t % 32, warp0 = t - lane, seg = lane & ~(width - 1);
      auto val = [&](int l) { return 100 + warp0 + l; };
      const int x = lane ^ 5, d = lane + 3, u = lane - 2;
      ok &= v[t * 6 + 0] == (x >= seg && x < seg + width ? val(x) : val(lane));
      ok &= v[t * 6 + 1] == (d < seg + width ? val(d) : val(lane));
      ok &= v[t * 6 + 2] == (u >= seg ? val(u) : val(lane));
      ok &= v[t * 6 + 3] == val(seg + 7 % width);
      ok &= unsigned(v[t * 6 + 4]) == 0x49249249u;  // lanes 0, 3, 6, ... 30
      ok &= v[t * 6 + 5] == 496;                    // 0 + 1 + ... + 31
    }
    expect(ok, "shuffles (xor, down, up, idx), ballot and a butterfly sum at width " + std::to_string(width));
  }
  {
    Buf<int> out(64);
    cudaMemset(out.p, 0, 64 * sizeof(int));
    PYRT_LAUNCH(1, 64, 0, nullptr, early_exit_kernel)(out.p, 40);
    expect(cudaGetLastError() == cudaSuccess && out.host()[33] == 32, "exited threads count as arrived");
  }
  {
    Buf<float> out(256);
    PYRT_LAUNCH(1, 256, 64 * 1024, nullptr, dynamic_smem_kernel)(out.p);
    expect(cudaGetLastError() == cudaErrorInvalidValue, "64 KiB of dynamic shared memory without the opt-in fails");
    expect(cudaFuncSetAttribute(dynamic_smem_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 * 1024) ==
               cudaSuccess,
           "opt-in to 64 KiB");
    PYRT_LAUNCH(1, 256, 64 * 1024, nullptr, dynamic_smem_kernel)(out.p);
    auto v = out.host();
    expect(cudaGetLastError() == cudaSuccess && std::isnan(v[0]) && std::isnan(v[255]),
           "with the opt-in it runs; unwritten shared memory reads as NaN");
    expect(cudaFuncSetAttribute(dynamic_smem_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 300 * 1024) ==
               cudaErrorInvalidValue,
           "no opt-in past the device's 227 KiB");
  }
  {
    Buf<int> out(2048);
    PYRT_LAUNCH(1, 1025, 0, nullptr, neighbour_kernel<true>)(out.p, 0);
    expect(cudaGetLastError() == cudaErrorInvalidConfiguration, "1025 threads per block is an invalid configuration");
    PYRT_LAUNCH(dim3(1, 70000), 32, 0, nullptr, neighbour_kernel<true>)(out.p, 0);
    expect(cudaGetLastError() == cudaErrorInvalidConfiguration, "grid.y over 65535 is an invalid configuration");
    expect(cudaGetLastError() == cudaSuccess, "configuration errors are not sticky");
  }
  {
    Buf<int> out(64);
    PYRT_LAUNCH(1, 64, 0, nullptr, divergent_kernel)(out.p);
    expect(cudaDeviceSynchronize() == cudaErrorLaunchFailure, "divergent barriers fail the launch instead of hanging");
    const std::string msg = cusim::last_error_message();
    expect(msg.find("__syncwarp") != std::string::npos, "the failure names the barrier: " + msg);
    expect(cudaMemset(out.p, 0, 4) == cudaErrorLaunchFailure, "a failed kernel's error is sticky, as on a GPU");
    expect(cudaDeviceReset() == cudaSuccess && cudaMemset(out.p, 0, 4) == cudaSuccess, "cudaDeviceReset clears it");
  }
  std::printf("OK cusim\n");
  return 0;
}
