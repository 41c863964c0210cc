// The CUDA backend (backends/backend.h): the project's kernels on device-memory activations.
#pragma once
#include <memory>
#include <string>

#include "backends/backend.h"
#include "backends/cuda/device.h"

namespace pyrt::cuda {

std::unique_ptr<Backend> make_cuda_backend(const std::string& name);

}  // namespace pyrt::cuda
