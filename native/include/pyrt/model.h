// Read-only Model (memory-mapped weights, shared by all conversations) and per-conversation
// Session (KV cache, position). Architectures register a factory in models/registry.cpp.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "pyrt/delegate.h"
#include "pyrt/gguf.h"
#include "pyrt/threadpool.h"
#include "pyrt/tokenizer.h"

namespace pyrt {

// Chunked prefill (SPEC 5.4) and where its linears run.
struct PrefillOptions {
  int chunk = 0;                    // > 0: prompts run in chunks of this many tokens, the last one padded
  std::string delegate;             // "": CPU; otherwise prefill linears run as W8A8 graphs on this delegate
  bool outliers = true;             // shadow correction of calibrated activation outliers on the CPU
  int32_t pad_token = 0;            // fills the last chunk; padded rows never reach the KV cache
  bool overlap = true;              // delegate and CPU work of different chunks run concurrently (out of order)
  int delegate_threads = 0;         // CPU threads of delegates that compute on the CPU (reference); 0: n_threads
  bool per_channel_weights = true;  // int8 weight scale per output channel; false: one per tensor (SPEC 5.1)
};

struct ModelOptions {
  int n_threads = 0;         // 0: default_thread_count()
  std::string kv_k = "f16";  // key cache format (see memory/kv_store.h: f32 f16 q8_0 q4_0 kivi4 kivi2)
  std::string kv_v = "f16";  // value cache format
  int64_t n_ctx = 0;         // 0: the model's trained context length
  // "q8": Q8_0/Q4_0/Q4_1 weights multiply activations quantized to 8 bits per block of 32 (integer
  // dots, llama.cpp's approach); "f32": float activations (slower; the exact reference path).
  std::string activations = "q8";
  PrefillOptions prefill;
};

struct Weight;
// Sees every linear a session runs (input rows x [T, cols], output y [T, rows]); calibration uses it.
using LinearObserver = std::function<void(const Weight& w, const float* x, int64_t T, const float* y)>;

class Session {
 public:
  virtual ~Session() = default;
  // Appends n tokens; writes logits for every fed position ([n, vocab]) or only the last ([vocab]).
  virtual void feed(const int32_t* ids, int64_t n, float* logits, bool all_logits) = 0;
  virtual void reset() = 0;
  virtual int64_t n_past() const = 0;
  virtual int64_t n_ctx() const = 0;
  virtual size_t kv_bytes() const = 0;
  virtual std::map<std::string, double> stats() const = 0;
  // Chrome trace JSON of the last delegated prefill ("" when none ran).
  virtual std::string prefill_trace_json() const { return ""; }
  // Layer `layer`'s cached keys or values as float rows [n_past, kv_width] (tests; kUnsupported where absent).
  virtual std::vector<float> cached_rows(int layer, bool keys) const;
  // Architectures that support it call `obs` for each linear of every later feed (kUnsupported otherwise).
  virtual void set_linear_observer(LinearObserver obs);

  // Encoder-decoder models only: run the encoder on `ids` (or take states from Model::encode), compute
  // every decoder layer's cross-attention K/V once, and start a fresh decoder sequence.
  virtual void set_encoder_input(const int32_t* ids, int64_t n);
  virtual void set_encoder_states(const float* states, int64_t n, int64_t width);
  virtual int64_t encoder_length() const { return 0; }
};

class Model {
 public:
  virtual ~Model() = default;
  static std::shared_ptr<Model> load(const std::string& path, const ModelOptions& opts);

  virtual std::unique_ptr<Session> new_session(int64_t n_ctx) = 0;
  virtual int64_t vocab_size() const = 0;
  virtual int64_t context_length() const = 0;
  virtual int64_t embedding_length() const = 0;

  // Encoder-decoder models: encode() writes [n, embedding_length()] final encoder states; the decoder
  // starts from decoder_start_token(). Decoder-only models raise kUnsupported / return -1.
  virtual bool is_encoder_decoder() const { return false; }
  // Whether PrefillOptions (chunks, delegates) apply to this architecture.
  virtual bool supports_chunked_prefill() const { return false; }
  // What executes the prefill delegate's graphs ("" without a delegate; "cpu" when no accelerator does).
  virtual std::string delegate_runs_on() const { return ""; }
  // The W8A8 graphs handed to the delegate (empty without one): what an exporter writes out.
  virtual std::vector<W8A8Graph> delegate_graphs() const { return {}; }
  virtual void encode(const int32_t* ids, int64_t n, float* out) const;
  // One decode step of several sessions of this model, one token each: logits [n, vocab_size()].
  // Architectures that batch it (Llama) run each linear once over the n rows, reading every weight once
  // for all of them; the default feeds the sessions one after the other. Checks (core/ops.h
  // check_decode_batch, and the same model) happen before any session is fed.
  virtual void decode_batch(const std::vector<Session*>& sessions, const int32_t* tokens, float* logits);
  virtual bool batches_decode() const { return false; }  // whether decode_batch is one batched step
  virtual int32_t decoder_start_token() const { return -1; }

  // Speech encoder-decoders (Whisper): input sample rate (0: not a speech model), features of mono PCM
  // at that rate ([n_mels, n_frames], row-major) and encoder states from features ([n, embedding_length]).
  virtual int audio_sample_rate() const { return 0; }
  virtual std::vector<float> audio_features(const float* pcm, int64_t n, int64_t* n_mels, int64_t* n_frames) const;
  virtual std::vector<float> encode_audio(const float* features, int64_t n_mels, int64_t n_frames,
                                          int64_t* n_states) const;

  const std::string& architecture() const { return arch_; }
  const GgufFile& file() const { return *file_; }
  const Tokenizer* tokenizer() const { return tokenizer_.get(); }
  std::shared_ptr<Tokenizer> shared_tokenizer() const { return tokenizer_; }
  int64_t n_params() const;
  std::map<std::string, int64_t> tensor_type_counts() const;
  const ModelOptions& options() const { return opts_; }
  ThreadPool& pool() const { return *pool_; }

 protected:
  Model(std::shared_ptr<GgufFile> file, const ModelOptions& opts);
  std::string arch_;
  std::shared_ptr<GgufFile> file_;
  std::shared_ptr<Tokenizer> tokenizer_;
  ModelOptions opts_;
  std::unique_ptr<ThreadPool> pool_;
};

// Architecture strings this build can run (the registry).
std::vector<std::string> supported_architectures();

}  // namespace pyrt
