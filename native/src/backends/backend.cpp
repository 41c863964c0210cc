#include "backends/backend.h"

#include "pyrt/error.h"

namespace pyrt {

Activation activation_from_name(const std::string& name, const std::string& where) {
  if (name == "relu") return Activation::kRelu;
  if (name == "gelu_tanh" || name == "gelu_new" || name == "gelu_pytorch_tanh") return Activation::kGeluTanh;
  if (name == "gelu") return Activation::kGeluErf;
  if (name == "silu") return Activation::kSilu;
  fail(ErrorCode::kUnsupported, where + ": activation '" + name + "' is not supported (relu, gelu_tanh, gelu, silu)");
}

}  // namespace pyrt
