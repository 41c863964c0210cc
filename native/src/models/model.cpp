// The Model / Session base (pyrt/model.h): options, the file, the thread pool and the tokenizer every
// architecture shares, and the defaults of the optional operations.
#include "pyrt/model.h"

#include "memory/kv_store.h"
#include "models/checks.h"
#include "pyrt/error.h"

namespace pyrt {

void ModelOptions::validate() {
  const char* devices[] = {"cpu", "npu", "cuda", "cuda-sim"};
  bool known = false;
  for (const char* d : devices) known = known || device == d;
  if (!known) {
    fail(ErrorCode::kUnsupported,
         "device '" + device + "' is not available in this build (available: cpu, npu, cuda, cuda-sim)");
  }
  if (n_threads < 0)
    fail(ErrorCode::kInvalidArgument, "threads must be >= 1 (0: default), got " + std::to_string(n_threads));
  if (n_threads == 0) n_threads = default_thread_count();
  if (n_ctx < 0)
    fail(ErrorCode::kInvalidArgument, "context must be >= 1 (0: the model's), got " + std::to_string(n_ctx));
  parse_kv_spec(kv_k);  // kInvalidArgument naming the value
  parse_kv_spec(kv_v);
  if (activations != "q8" && activations != "f32") {
    fail(ErrorCode::kInvalidArgument, "activations must be 'q8' or 'f32', got '" + activations + "'");
  }
  if (prefill.chunk < 0 || prefill.chunk > 4096) {
    fail(ErrorCode::kInvalidArgument, "prefill chunk must be in 0..4096, got " + std::to_string(prefill.chunk));
  }
  if (prefill.delegate_threads < 0) {
    fail(ErrorCode::kInvalidArgument,
         "delegate threads must be >= 1 (0: threads), got " + std::to_string(prefill.delegate_threads));
  }
  if (device == "npu" && prefill.delegate.empty()) prefill.delegate = "reference";
  if (device == "npu" && prefill.chunk == 0) prefill.chunk = 128;
  if (!prefill.delegate.empty() && prefill.chunk == 0) {
    fail(ErrorCode::kInvalidArgument,
         "delegate '" + prefill.delegate + "' needs a prefill chunk size (static graph shapes)");
  }
}

Model::Model(std::shared_ptr<GgufFile> file, const ModelOptions& opts) : file_(std::move(file)), opts_(opts) {
  arch_ = file_->get_string("general.architecture");
  if (opts_.n_threads <= 0) opts_.n_threads = default_thread_count();
  pool_ = std::make_unique<ThreadPool>(opts_.n_threads);
  if (file_->find("tokenizer.ggml.model")) tokenizer_ = Tokenizer::from_gguf(*file_);
}

void Model::check_prefill_batch(const std::vector<Session*>& sessions,
                                const std::vector<std::vector<int32_t>>& prompts) const {
  if (sessions.size() != prompts.size()) {
    fail(ErrorCode::kInvalidArgument, "prefill_batch needs one prompt per session (" + std::to_string(sessions.size()) +
                                          " sessions, " + std::to_string(prompts.size()) + " prompts)");
  }
  for (size_t b = 0; b < sessions.size(); ++b) {
    const std::string who = "prefill_batch: session " + std::to_string(b);
    if (!sessions[b]) fail(ErrorCode::kInvalidArgument, who + " is null");
    if (&sessions[b]->model() != this) fail(ErrorCode::kInvalidArgument, who + " comes from another model");
    for (size_t a = 0; a < b; ++a) {
      if (sessions[a] == sessions[b])
        fail(ErrorCode::kInvalidArgument, who + " is session " + std::to_string(a) + " again");
    }
    check_feed(sessions[b]->n_past(), sessions[b]->n_ctx(), prompts[b].data(), int64_t(prompts[b].size()), vocab_size(),
               who + ": ");
  }
}

void Model::prefill_batch(const std::vector<Session*>& sessions, const std::vector<std::vector<int32_t>>& prompts,
                          float* logits) {
  check_prefill_batch(sessions, prompts);
  for (size_t b = 0; b < sessions.size(); ++b) {
    sessions[b]->feed(prompts[b].data(), int64_t(prompts[b].size()), logits + int64_t(b) * vocab_size(), false);
  }
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

std::vector<float> Session::cached_rows(int, bool) const {
  fail(ErrorCode::kUnsupported, "this architecture does not expose its cache rows");
}

void Session::set_linear_observer(LinearObserver) {
  fail(ErrorCode::kUnsupported, "this architecture does not report its linears (calibration supports decoders)");
}

}  // namespace pyrt
