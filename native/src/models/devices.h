// Devices by name: each is a compute backend (backends/) and the memory that holds its caches and
// attends over them (memory/). "cpu" is built in; "cuda" and "cuda-sim" come from plugins beside the
// core library (libpyrt_backend_cuda.so, libpyrt_backend_cuda_sim.so), loaded on first use, so CPU use
// never loads a CUDA runtime.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "backends/backend.h"
#include "memory/kv_store.h"
#include "memory/sequence_cache.h"
#include "pyrt/threadpool.h"

namespace pyrt {

struct DeviceRuntime {
  std::unique_ptr<Backend> backend;
  std::unique_ptr<KvMemory> memory;
};

struct DeviceFactory {
  std::function<bool(std::string* why)> available;  // false: *why says what is missing (no GPU, no driver)
  std::function<DeviceRuntime(ThreadPool& pool, const KvSpec& k, const KvSpec& v)> open;
};
void register_device(const std::string& name, DeviceFactory factory);
// A plugin's entry point, `extern "C" void pyrt_register_plugin_devices(DeviceRegistrar)`, registers its
// devices through the function it is given (the loading library's registry, not a copy in the plugin).
using DeviceRegistrar = void (*)(const std::string& name, DeviceFactory factory);
// kUnsupported saying why when this build or machine cannot run `name` (before any file is opened).
void require_device(const std::string& name);
DeviceRuntime open_device(const std::string& name, ThreadPool& pool, const KvSpec& k, const KvSpec& v);

}  // namespace pyrt
