/* pyruntime C ABI: what the JNI bridge, the desktop app and other hosts link against.
   Every call returns a status (0 = ok); no C++ exception crosses this boundary. On failure,
   pyrt_last_error() returns a message for the calling thread. */
#ifndef PYRT_H
#define PYRT_H
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define PYRT_API __declspec(dllexport)
#else
#define PYRT_API __attribute__((visibility("default")))
#endif

typedef enum {
  PYRT_OK = 0,
  PYRT_ERR_INVALID_ARGUMENT = 1,
  PYRT_ERR_IO = 2,
  PYRT_ERR_FORMAT = 3,
  PYRT_ERR_UNSUPPORTED = 4,
  PYRT_ERR_OUT_OF_RANGE = 5,
  PYRT_ERR_CONTEXT_OVERFLOW = 6,
  PYRT_ERR_INTERNAL = 7,
} pyrt_status;

typedef struct pyrt_model pyrt_model;
typedef struct pyrt_session pyrt_session;

PYRT_API const char* pyrt_last_error(void);
PYRT_API pyrt_status pyrt_model_load(const char* path, int n_threads, const char* kv_type, pyrt_model** out);
/* The same on a device: "cpu", "cuda" (an NVIDIA GPU), "cuda-sim" (its kernels on the CPU simulator).
   A device this build or machine lacks fails with PYRT_ERR_UNSUPPORTED saying what is missing. */
PYRT_API pyrt_status pyrt_model_load_on(const char* path, int n_threads, const char* kv_type, const char* device,
                                        pyrt_model** out);
PYRT_API void pyrt_model_free(pyrt_model* model);
PYRT_API int64_t pyrt_model_vocab_size(const pyrt_model* model);
/* Writes up to cap ids; *n_out receives the full count (call again with a larger buffer if needed). */
PYRT_API pyrt_status pyrt_tokenize(const pyrt_model* model, const char* text, int add_special, int32_t* ids, size_t cap,
                                   size_t* n_out);
/* Writes up to cap bytes (not NUL-terminated); *n_out receives the full length. */
PYRT_API pyrt_status pyrt_detokenize(const pyrt_model* model, const int32_t* ids, size_t n, char* buf, size_t cap,
                                     size_t* n_out);
PYRT_API pyrt_status pyrt_session_new(pyrt_model* model, int64_t n_ctx, pyrt_session** out);
PYRT_API void pyrt_session_free(pyrt_session* session);
/* Feeds n ids; writes the last position's logits (vocab floats) into logits. */
PYRT_API pyrt_status pyrt_session_feed(pyrt_session* session, const int32_t* ids, size_t n, float* logits);
/* Greedy/sampled next token from the last logits: temperature <= 0 is greedy. */
PYRT_API pyrt_status pyrt_sample(const float* logits, int64_t n_vocab, float temperature, int top_k, float top_p,
                                 uint64_t seed, int32_t* out);

#ifdef __cplusplus
}
#endif
#endif
