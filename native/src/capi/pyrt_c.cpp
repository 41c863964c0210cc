#include <cstring>
#include <memory>
#include <string>

#include "pyrt/error.h"
#include "pyrt/model.h"
#include "pyrt/pyrt.h"
#include "pyrt/sampler.h"

struct pyrt_model {
  std::shared_ptr<pyrt::Model> model;
};
struct pyrt_session {
  std::shared_ptr<pyrt::Model> model;  // keeps the weights alive
  std::unique_ptr<pyrt::Session> session;
};

namespace {
thread_local std::string g_last_error;

template <typename F>
pyrt_status guarded(F&& f) {
  try {
    f();
    return PYRT_OK;
  } catch (const pyrt::Error& e) {
    g_last_error = e.what();
    return static_cast<pyrt_status>(e.code());
  } catch (const std::exception& e) {
    g_last_error = e.what();
    return PYRT_ERR_INTERNAL;
  } catch (...) {
    g_last_error = "unknown error";
    return PYRT_ERR_INTERNAL;
  }
}

void require(bool ok, const char* what) {
  if (!ok) throw pyrt::Error(pyrt::ErrorCode::kInvalidArgument, what);
}
}  // namespace

extern "C" {

const char* pyrt_last_error(void) {
  return g_last_error.c_str();
}

pyrt_status pyrt_model_load_on(const char* path, int n_threads, const char* kv_type, const char* device,
                               pyrt_model** out) {
  return guarded([&] {
    require(path && out, "path and out must not be NULL");
    pyrt::ModelOptions o;
    o.n_threads = n_threads;
    if (kv_type) o.kv_k = o.kv_v = kv_type;
    if (device) o.device = device;
    *out = new pyrt_model{pyrt::Model::load(path, o)};
  });
}

pyrt_status pyrt_model_load(const char* path, int n_threads, const char* kv_type, pyrt_model** out) {
  return pyrt_model_load_on(path, n_threads, kv_type, nullptr, out);
}

void pyrt_model_free(pyrt_model* model) {
  delete model;
}

int64_t pyrt_model_vocab_size(const pyrt_model* model) {
  return model ? model->model->vocab_size() : -1;
}

pyrt_status pyrt_tokenize(const pyrt_model* model, const char* text, int add_special, int32_t* ids, size_t cap,
                          size_t* n_out) {
  return guarded([&] {
    require(model && text && n_out, "model, text and n_out must not be NULL");
    const pyrt::Tokenizer* tok = model->model->tokenizer();
    require(tok != nullptr, "this model has no tokenizer");
    auto v = tok->encode(text, add_special != 0, add_special != 0);
    *n_out = v.size();
    if (ids) std::memcpy(ids, v.data(), std::min(cap, v.size()) * sizeof(int32_t));
  });
}

pyrt_status pyrt_detokenize(const pyrt_model* model, const int32_t* ids, size_t n, char* buf, size_t cap,
                            size_t* n_out) {
  return guarded([&] {
    require(model && (ids || n == 0) && n_out, "model, ids and n_out must not be NULL");
    const pyrt::Tokenizer* tok = model->model->tokenizer();
    require(tok != nullptr, "this model has no tokenizer");
    std::string s = tok->decode(std::vector<int32_t>(ids, ids + n));
    *n_out = s.size();
    if (buf) std::memcpy(buf, s.data(), std::min(cap, s.size()));
  });
}

pyrt_status pyrt_session_new(pyrt_model* model, int64_t n_ctx, pyrt_session** out) {
  return guarded([&] {
    require(model && out, "model and out must not be NULL");
    *out = new pyrt_session{model->model, model->model->new_session(n_ctx)};
  });
}

void pyrt_session_free(pyrt_session* session) {
  delete session;
}

pyrt_status pyrt_session_feed(pyrt_session* session, const int32_t* ids, size_t n, float* logits) {
  return guarded([&] {
    require(session && ids && logits, "session, ids and logits must not be NULL");
    session->session->feed(ids, static_cast<int64_t>(n), logits, false);
  });
}

pyrt_status pyrt_sample(const float* logits, int64_t n_vocab, float temperature, int top_k, float top_p, uint64_t seed,
                        int32_t* out) {
  return guarded([&] {
    require(logits && out && n_vocab > 0, "logits and out must not be NULL");
    pyrt::SamplerParams p;
    p.temperature = temperature;
    p.top_k = top_k;
    p.top_p = top_p;
    p.seed = seed;
    pyrt::Sampler s(p);
    *out = s.sample(logits, n_vocab);
  });
}

}  // extern "C"
