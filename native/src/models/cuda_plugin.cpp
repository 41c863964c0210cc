// The device plugin (models/devices.h): libpyrt_backend_cuda.so registers "cuda" (the CUDA runtime),
// libpyrt_backend_cuda_sim.so registers "cuda-sim" (the same kernels on the CPU simulator).
#include "backends/cuda/cuda_backend.h"
#include "memory/cuda/cuda_memory.h"
#include "models/devices.h"

#ifndef PYRT_CUDA_DEVICE_NAME
#define PYRT_CUDA_DEVICE_NAME "cuda"
#endif

extern "C" __attribute__((visibility("default"))) void pyrt_register_plugin_devices(pyrt::DeviceRegistrar add) {
  const std::string name = PYRT_CUDA_DEVICE_NAME;
  pyrt::DeviceFactory f;
  f.available = [name](std::string* why) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
      *why = "no CUDA GPU or driver was found on this machine";
      return false;
    }
    return true;
  };
  f.open = [name](pyrt::ThreadPool&, const pyrt::KvSpec& k, const pyrt::KvSpec& v) {
    pyrt::DeviceRuntime rt;
    rt.memory = pyrt::cuda::make_cuda_memory(k, v, name);  // first: an unreadable format fails before any upload
    rt.backend = pyrt::cuda::make_cuda_backend(name);
    return rt;
  };
  add(name, std::move(f));
}
