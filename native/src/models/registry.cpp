#include "models/registry.h"

#include <utility>

#include "pyrt/error.h"

namespace pyrt {

namespace {
// Architecture strings never change once shipped (they are written into converted files).
const std::pair<const char*, ModelFactory> kRegistry[] = {
    {"llama", create_llama},
    {"t5", create_t5},
    {"mu", create_mu},
    {"whisper", create_whisper},
};
}  // namespace

std::vector<std::string> supported_architectures() {
  std::vector<std::string> out;
  for (const auto& e : kRegistry) out.emplace_back(e.first);
  return out;
}

ModelFactory find_architecture(const std::string& arch, const std::string& path) {
  if (arch.empty()) fail(ErrorCode::kFormat, path + ": metadata 'general.architecture' is missing");
  for (const auto& e : kRegistry) {
    if (arch == e.first) return e.second;
  }
  std::string names;
  for (const auto& e : kRegistry) names += std::string(names.empty() ? "" : ", ") + e.first;
  fail(ErrorCode::kUnsupported, path + ": unsupported architecture '" + arch + "' (supported: " + names + ")");
}

}  // namespace pyrt
