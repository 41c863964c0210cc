#pragma once
#include <memory>

#include "pyrt/model.h"

namespace pyrt {
using ModelFactory = std::shared_ptr<Model> (*)(std::shared_ptr<GgufFile>, const ModelOptions&);
// One line per architecture family, defined in that family's file.
std::shared_ptr<Model> create_llama(std::shared_ptr<GgufFile> file, const ModelOptions& opts);
std::shared_ptr<Model> create_t5(std::shared_ptr<GgufFile> file, const ModelOptions& opts);
std::shared_ptr<Model> create_whisper(std::shared_ptr<GgufFile> file, const ModelOptions& opts);
std::shared_ptr<Model> create_mu(std::shared_ptr<GgufFile> file, const ModelOptions& opts);
}  // namespace pyrt
