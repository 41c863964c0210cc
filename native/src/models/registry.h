// Architecture name -> factory. Adding an architecture is one file (models/<arch>.cpp) and one line here.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "pyrt/model.h"

namespace pyrt {
using ModelFactory = std::shared_ptr<Model> (*)(std::shared_ptr<GgufFile>, const ModelOptions&);
// One line per architecture family, defined in that family's file.
std::shared_ptr<Model> create_llama(std::shared_ptr<GgufFile> file, const ModelOptions& opts);
std::shared_ptr<Model> create_t5(std::shared_ptr<GgufFile> file, const ModelOptions& opts);
std::shared_ptr<Model> create_whisper(std::shared_ptr<GgufFile> file, const ModelOptions& opts);
std::shared_ptr<Model> create_mu(std::shared_ptr<GgufFile> file, const ModelOptions& opts);

// The factory of `arch`; kUnsupported naming the file and the supported architectures otherwise.
ModelFactory find_architecture(const std::string& arch, const std::string& path);
}  // namespace pyrt
