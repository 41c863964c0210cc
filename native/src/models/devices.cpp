#include "models/devices.h"

#include <dlfcn.h>

#include <map>
#include <mutex>

#include "backends/cpu/cpu_backend.h"
#include "memory/cpu_memory.h"
#include "pyrt/error.h"

namespace pyrt {

namespace {

// Recursive: a plugin's entry point registers its devices while the loader holds the lock.
std::recursive_mutex& registry_mutex() {
  static std::recursive_mutex mu;
  return mu;
}
std::map<std::string, DeviceFactory>& registry() {
  static std::map<std::string, DeviceFactory> r;
  return r;
}

struct Plugin {
  const char* device;
  const char* file;
  const char* missing;  // what the build lacked when the plugin is absent
};
const Plugin kPlugins[] = {
    {"cuda", "libpyrt_backend_cuda.so", "this build has no CUDA kernels (nvcc was not found when it was built)"},
    {"cuda-sim", "libpyrt_backend_cuda_sim.so", "this build has no CUDA simulator (PYRT_CUDA_SIM=OFF)"},
};

// The folder of this library: plugins are installed beside it.
std::string core_dir() {
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&register_device), &info) == 0 || !info.dli_fname) return ".";
  const std::string path = info.dli_fname;
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

// Loads the plugin for `name` once (the registry mutex is held).
void load_plugin(const std::string& name) {
  static std::map<std::string, std::string> failed;  // device -> why
  if (registry().count(name)) return;
  for (const Plugin& p : kPlugins) {
    if (name != p.device) continue;
    if (failed.count(name)) fail(ErrorCode::kUnsupported, "device '" + name + "': " + failed[name]);
    const std::string path = core_dir() + "/" + p.file;
    void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
      const char* err = dlerror();
      const std::string why =
          std::string(p.missing) +
          (err && std::string(err).find("No such file") == std::string::npos ? std::string(" (") + err + ")" : "");
      failed[name] = why;
      fail(ErrorCode::kUnsupported, "device '" + name + "': " + why);
    }
    auto entry = reinterpret_cast<void (*)(DeviceRegistrar)>(dlsym(handle, "pyrt_register_plugin_devices"));
    if (!entry) fail(ErrorCode::kInternal, path + " has no entry point pyrt_register_plugin_devices");
    entry(&register_device);
    if (!registry().count(name)) fail(ErrorCode::kInternal, path + " did not register device '" + name + "'");
    return;
  }
}

const DeviceFactory& factory(const std::string& name) {
  std::lock_guard<std::recursive_mutex> lk(registry_mutex());
  if (name == "cpu" && !registry().count("cpu")) {
    registry()["cpu"] = DeviceFactory{[](std::string*) { return true; },
                                      [](ThreadPool& pool, const KvSpec& k, const KvSpec& v) {
                                        return DeviceRuntime{make_cpu_backend(pool), make_cpu_memory(k, v, pool)};
                                      }};
  }
  load_plugin(name);
  auto it = registry().find(name);
  if (it == registry().end()) {
    std::string names;
    for (const char* d : {"cpu", "npu", "cuda", "cuda-sim"}) names += std::string(names.empty() ? "" : ", ") + d;
    fail(ErrorCode::kUnsupported, "device '" + name + "' is not available in this build (available: " + names + ")");
  }
  return it->second;
}

}  // namespace

void register_device(const std::string& name, DeviceFactory f) {
  std::lock_guard<std::recursive_mutex> lk(registry_mutex());
  registry()[name] = std::move(f);
}

void require_device(const std::string& name) {
  const DeviceFactory& f = factory(name);
  std::string why;
  if (!f.available(&why)) fail(ErrorCode::kUnsupported, "device '" + name + "': " + why);
}

DeviceRuntime open_device(const std::string& name, ThreadPool& pool, const KvSpec& k, const KvSpec& v) {
  require_device(name);
  return factory(name).open(pool, k, v);
}

}  // namespace pyrt
