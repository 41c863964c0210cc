#include "models/registry.h"

#include <utility>

#include "core/ops.h"
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

Model::Model(std::shared_ptr<GgufFile> file, const ModelOptions& opts) : file_(std::move(file)), opts_(opts) {
  arch_ = file_->get_string("general.architecture");
  if (opts_.n_threads <= 0) opts_.n_threads = default_thread_count();
  if (opts_.activations != "q8" && opts_.activations != "f32") {
    fail(ErrorCode::kInvalidArgument, "activations must be 'q8' or 'f32', got '" + opts_.activations + "'");
  }
  if (opts_.prefill.chunk < 0 || opts_.prefill.chunk > 4096) {
    fail(ErrorCode::kInvalidArgument, "prefill chunk must be in 0..4096, got " + std::to_string(opts_.prefill.chunk));
  }
  if (!opts_.prefill.delegate.empty() && opts_.prefill.chunk == 0) {
    fail(ErrorCode::kInvalidArgument,
         "delegate '" + opts_.prefill.delegate + "' needs a prefill chunk size (static graph shapes)");
  }
  pool_ = std::make_unique<ThreadPool>(opts_.n_threads);
  if (file_->find("tokenizer.ggml.model")) tokenizer_ = Tokenizer::from_gguf(*file_);
}

std::shared_ptr<Model> Model::load(const std::string& path, const ModelOptions& opts) {
  auto file = GgufFile::open(path);
  const std::string arch = file->get_string("general.architecture");
  if (arch.empty()) fail(ErrorCode::kFormat, path + ": metadata 'general.architecture' is missing");
  for (const auto& e : kRegistry) {
    if (arch != e.first) continue;
    auto model = e.second(std::move(file), opts);
    if ((opts.prefill.chunk > 0 || !opts.prefill.delegate.empty()) && !model->supports_chunked_prefill()) {
      fail(ErrorCode::kUnsupported,
           path + ": architecture '" + arch + "' has no chunked/delegated prefill yet (llama has)");
    }
    return model;
  }
  std::string names;
  for (const auto& e : kRegistry) names += std::string(names.empty() ? "" : ", ") + e.first;
  fail(ErrorCode::kUnsupported, path + ": unsupported architecture '" + arch + "' (supported: " + names + ")");
}

void Model::decode_batch(const std::vector<Session*>& sessions, const int32_t* tokens, float* logits) {
  check_decode_batch(sessions, tokens, vocab_size());
  for (size_t b = 0; b < sessions.size(); ++b) sessions[b]->feed(tokens + b, 1, logits + b * vocab_size(), false);
}

void Model::encode(const int32_t*, int64_t, float*) const {
  fail(ErrorCode::kUnsupported, "architecture '" + arch_ + "' has no encoder (encode() is for encoder-decoder models)");
}

std::vector<float> Model::audio_features(const float*, int64_t, int64_t*, int64_t*) const {
  fail(ErrorCode::kUnsupported, "architecture '" + arch_ + "' is not a speech model (no audio front end)");
}

std::vector<float> Model::encode_audio(const float*, int64_t, int64_t, int64_t*) const {
  fail(ErrorCode::kUnsupported, "architecture '" + arch_ + "' is not a speech model (no audio encoder)");
}

void Session::set_encoder_input(const int32_t*, int64_t) {
  fail(ErrorCode::kUnsupported, "this model has no encoder (encoder input is for encoder-decoder models)");
}

std::vector<float> Session::cached_rows(int, bool) const {
  fail(ErrorCode::kUnsupported, "this architecture does not expose its cache rows");
}

void Session::set_linear_observer(LinearObserver) {
  fail(ErrorCode::kUnsupported, "this architecture does not report its linears (calibration supports llama)");
}

void Session::set_encoder_states(const float*, int64_t, int64_t) {
  fail(ErrorCode::kUnsupported, "this model has no encoder (encoder states are for encoder-decoder models)");
}

int64_t Model::n_params() const {
  int64_t n = 0;
  for (const auto& t : file_->tensors()) n += t.n_elements();
  return n;
}

std::map<std::string, int64_t> Model::tensor_type_counts() const {
  std::map<std::string, int64_t> m;
  for (const auto& t : file_->tensors()) ++m[type_name(static_cast<uint32_t>(t.type))];
  return m;
}

}  // namespace pyrt
