// Read-only Model (weights, shared by all conversations) and per-conversation Session (caches,
// position). An architecture states its layers once (src/models/<arch>.cpp); the device that runs
// them is a backend chosen at load, so a CUDA model is a Model like any other. Capabilities only some
// models have (an encoder, a speech front end, delegated prefill) are separate interfaces that a
// model hands out, not virtuals every model carries.
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
  // "cpu"; "npu" (the CPU, with prefill linears on `prefill.delegate`); "cuda" (an NVIDIA GPU with the
  // project's kernels); "cuda-sim" (the same kernels on the CPU simulator, for tests).
  std::string device = "cpu";
  int n_threads = 0;         // 0: default_thread_count(); at most the machine's hardware threads
  std::string kv_k = "f16";  // key cache format (see memory/kv_store.h: f32 f16 q8_0 q4_0 kivi4 kivi2)
  std::string kv_v = "f16";  // value cache format
  int64_t n_ctx = 0;         // 0: the model's trained context length (cuda: at most kCudaDefaultContext)
  // "q8": Q8_0/Q4_0/Q4_1 weights multiply activations quantized to 8 bits per block of 32 (integer
  // dots, llama.cpp's approach); "f32": float activations (slower; the exact reference path).
  std::string activations = "q8";
  PrefillOptions prefill;
  // The one place options are checked: kInvalidArgument / kUnsupported naming the option and value.
  // Model::load calls it; it fills in the device's defaults (the NPU's delegate and chunk).
  void validate();
};
// A GPU session reserves its whole KV cache up front; without a context, at most this many positions.
constexpr int64_t kCudaDefaultContext = 4096;

struct Weight;
// Sees every linear a session runs (input rows x [T, cols], output y [T, rows]); calibration uses it.
using LinearObserver = std::function<void(const Weight& w, const float* x, int64_t T, const float* y)>;

class Model;
class EncoderDecoderSession;

class Session {
 public:
  virtual ~Session() = default;
  virtual const Model& model() const = 0;
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
  // Calls `obs` for each linear of every later feed (CPU models; kUnsupported elsewhere).
  virtual void set_linear_observer(LinearObserver obs);
  // The encoder input of encoder-decoder sessions (null for decoder-only models).
  virtual EncoderDecoderSession* encoder_decoder() { return nullptr; }
};

// Sessions of encoder-decoder models (Session::encoder_decoder()): the decoder attends to one encoder
// input at a time.
class EncoderDecoderSession {
 public:
  virtual ~EncoderDecoderSession() = default;
  // Runs the encoder on `ids` (or takes states from EncoderDecoder::encode), computes every decoder
  // layer's cross-attention K/V once, and starts a fresh decoder sequence.
  virtual void set_encoder_input(const int32_t* ids, int64_t n) = 0;
  virtual void set_encoder_states(const float* states, int64_t n, int64_t width) = 0;
  virtual int64_t encoder_length() const = 0;  // 0 before any input
};

// Encoder-decoder models (T5, Mu, Whisper).
class EncoderDecoder {
 public:
  virtual ~EncoderDecoder() = default;
  // Final encoder states [n, embedding_length] of token ids; kUnsupported for speech encoders.
  virtual void encode(const int32_t* ids, int64_t n, float* out) const = 0;
  // Several inputs at once (packed, no padding: each attends within itself): states of every input's
  // rows in order, [sum of lengths, embedding_length].
  virtual void encode_batch(const std::vector<std::vector<int32_t>>& inputs, float* out) const = 0;
  virtual int32_t decoder_start_token() const = 0;
};

// Speech encoders (Whisper): mono PCM at sample_rate() -> features [n_mels, n_frames] -> states.
class SpeechEncoder {
 public:
  virtual ~SpeechEncoder() = default;
  virtual int sample_rate() const = 0;
  virtual std::vector<float> audio_features(const float* pcm, int64_t n, int64_t* n_mels, int64_t* n_frames) const = 0;
  virtual std::vector<float> encode_audio(const float* features, int64_t n_mels, int64_t n_frames,
                                          int64_t* n_states) const = 0;
};

// Prefill whose linears run on a delegate (device "npu").
class DelegatedPrefill {
 public:
  virtual ~DelegatedPrefill() = default;
  virtual std::string runs_on() const = 0;            // what executed the graphs ("cpu" when no accelerator did)
  virtual std::vector<W8A8Graph> graphs() const = 0;  // the W8A8 graphs handed over: what exporters write
};

class Model {
 public:
  virtual ~Model() = default;
  // Opens the file once, validates `opts`, builds the architecture on the device's backend.
  static std::shared_ptr<Model> load(const std::string& path, const ModelOptions& opts);

  virtual std::unique_ptr<Session> new_session(int64_t n_ctx) = 0;
  virtual int64_t vocab_size() const = 0;
  virtual int64_t context_length() const = 0;
  virtual int64_t embedding_length() const = 0;

  // One decode step of several sessions of this model, one token each: logits [n, vocab_size()]. Models
  // that batch it (batches_decode()) run each linear once over the n rows, reading every weight once
  // for all of them. Checks (models/checks.h) happen before any session is fed.
  virtual void decode_batch(const std::vector<Session*>& sessions, const int32_t* tokens, float* logits) = 0;
  virtual bool batches_decode() const = 0;
  // One prompt per session, packed into passes without padding where the model can: logits
  // [n, vocab_size()], each prompt's last row.
  virtual void prefill_batch(const std::vector<Session*>& sessions, const std::vector<std::vector<int32_t>>& prompts,
                             float* logits);
  // Whether prefill_batch packs prompts into shared passes (rather than feeding them one by one).
  virtual bool packs_prefill() const { return false; }

  virtual const EncoderDecoder* encoder_decoder() const { return nullptr; }
  virtual const SpeechEncoder* speech() const { return nullptr; }
  virtual const DelegatedPrefill* delegated_prefill() const { return nullptr; }
  // What runs the model: "cpu", "cuda" or "cuda-sim" (the NPU's delegate is in delegated_prefill()).
  virtual const std::string& device() const = 0;
  // Stats of the weights on the device (bytes, weights converted to another type), for sessions' stats.
  virtual std::map<std::string, double> device_stats() const { return {}; }

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
  // prefill_batch's checks (one prompt per session; sessions distinct, of this model; each prompt fits).
  void check_prefill_batch(const std::vector<Session*>& sessions,
                           const std::vector<std::vector<int32_t>>& prompts) const;
  std::string arch_;
  std::shared_ptr<GgufFile> file_;
  std::shared_ptr<Tokenizer> tokenizer_;
  ModelOptions opts_;
  std::unique_ptr<ThreadPool> pool_;
};

// Architecture strings this build can run (the registry).
std::vector<std::string> supported_architectures();

}  // namespace pyrt
