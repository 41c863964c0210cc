// The GPU's KvMemory (memory/sequence_cache.h): caches in device memory in the formats the CUDA
// kernels read, attention by FlashAttention-2 and Flash-Decoding (kernels/pyrt_cuda.h).
#pragma once
#include <memory>
#include <string>

#include "memory/kv_store.h"
#include "memory/sequence_cache.h"

namespace pyrt::cuda {

// kUnsupported naming `device` for key / value formats the kernels cannot read (f32).
std::unique_ptr<KvMemory> make_cuda_memory(const KvSpec& k, const KvSpec& v, const std::string& device);

}  // namespace pyrt::cuda
