// The CPU's KvMemory: a sequence's caches are KvCaches (kv_cache.h) in the model's K and V formats,
// attention reads them in place with the model's thread pool.
#pragma once
#include <memory>

#include "memory/kv_cache.h"
#include "memory/sequence_cache.h"
#include "pyrt/threadpool.h"

namespace pyrt {

std::unique_ptr<KvMemory> make_cpu_memory(const KvSpec& k, const KvSpec& v, ThreadPool& pool);

}  // namespace pyrt
