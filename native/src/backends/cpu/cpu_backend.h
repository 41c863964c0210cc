// The CPU backend: activations in host memory, weights read in place from the mapped file, every
// operation from backends/cpu/ops.h on the model's thread pool.
#pragma once
#include <memory>

#include "backends/backend.h"
#include "pyrt/threadpool.h"

namespace pyrt {

std::unique_ptr<Backend> make_cpu_backend(ThreadPool& pool);

}  // namespace pyrt
