// Model::load (pyrt/model.h): options checked once, the device asked for before the file is opened,
// the file opened once, the architecture built on the device, and the prefill plan the options ask for.
#include "models/decoder.h"
#include "models/devices.h"
#include "models/registry.h"
#include "pyrt/error.h"
#include "sched/chunked_prefill.h"

namespace pyrt {

std::shared_ptr<Model> Model::load(const std::string& path, const ModelOptions& options) {
  ModelOptions opts = options;
  opts.validate();
  require_device(opts.device == "npu" ? "cpu" : opts.device);
  auto file = GgufFile::open(path);
  const std::string arch = file->get_string("general.architecture");
  const ModelFactory create = find_architecture(arch, path);
  std::shared_ptr<Model> model = create(std::move(file), opts);
  if (opts.prefill.chunk > 0 || !opts.prefill.delegate.empty()) {
    auto* decoder = dynamic_cast<DecoderModel*>(model.get());
    if (!decoder) {
      fail(ErrorCode::kUnsupported, path + ": architecture '" + arch +
                                        "' has no chunked/delegated prefill yet (decoder-only architectures have)");
    }
    install_prefill_plan(*decoder);
  }
  return model;
}

}  // namespace pyrt
