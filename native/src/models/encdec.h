// Encoder-decoder models (T5, Mu, Whisper): an architecture file states three graphs once, and this
// runs them on the device the options name. The encoder maps token ids (or a speech front end's rows)
// to states; the cross graph computes every decoder layer's cross-attention K/V from those states once
// per encoder input (SPEC 3.1/3.2) into the session's cache; the decoder is an ordinary decoder graph
// whose layers also attend to that cross cache. The decoder is a DecoderModel, so prompts, batched
// decode steps, chunked and delegated prefill, stats and checks are the decoder-only ones.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "models/decoder.h"
#include "pyrt/model.h"

namespace pyrt {

// Speech front end (Whisper): PCM -> features -> the encoder graph's input rows, on the host.
class SpeechFrontEnd {
 public:
  virtual ~SpeechFrontEnd() = default;
  virtual int sample_rate() const = 0;
  virtual std::vector<float> features(const float* pcm, int64_t n, int64_t* n_mels, int64_t* n_frames,
                                      ThreadPool& pool) const = 0;
  // Checks the features' shape; returns [*rows, width] rows for the encoder graph's kInput.
  virtual std::vector<float> encoder_input(const float* features, int64_t n_mels, int64_t n_frames, int64_t* rows,
                                           ThreadPool& pool) const = 0;
};

class EncDecArch : public DecoderArch {
 public:
  std::vector<const Graph*> graphs() const override { return {&graph_, &encoder_, &cross_}; }
  const Graph& encoder() const { return encoder_; }  // kEmbed (ids) or kInput (front end rows) -> states
  const Graph& cross() const { return cross_; }      // kInput states -> kStoreCross of every decoder layer
  // Position of the encoder's first row (Mu centres its positions; others count from 0).
  virtual int64_t encoder_first_position(int64_t n) const { return 0; }
  virtual const SpeechFrontEnd* front_end() const { return nullptr; }
  int32_t decoder_start = 0;

 protected:
  Graph encoder_, cross_;
};
using EncDecArchFactory = std::function<std::unique_ptr<EncDecArch>(const GgufFile&, const ModelOptions&)>;

class EncDecModel : public DecoderModel, public EncoderDecoder, public SpeechEncoder {
 public:
  EncDecModel(std::shared_ptr<GgufFile> f, const ModelOptions& opts, const EncDecArchFactory& arch);
  std::unique_ptr<Session> new_session(int64_t n_ctx) override;
  const EncoderDecoder* encoder_decoder() const override { return this; }
  const SpeechEncoder* speech() const override { return enc().front_end() ? this : nullptr; }

  void encode(const int32_t* ids, int64_t n, float* out) const override;
  void encode_batch(const std::vector<std::vector<int32_t>>& inputs, float* out) const override;
  int32_t decoder_start_token() const override { return enc().decoder_start; }
  int sample_rate() const override;
  std::vector<float> audio_features(const float* pcm, int64_t n, int64_t* n_mels, int64_t* n_frames) const override;
  std::vector<float> encode_audio(const float* features, int64_t n_mels, int64_t n_frames,
                                  int64_t* n_states) const override;

  // The cross graph over `states` into the session's cache (the session checked the states).
  void compute_cross(SequenceCache& cache, const float* states, int64_t n) const;

 protected:
  void check_ready(const DecoderSession& s, const std::string& who) const override;

 private:
  const EncDecArch& enc() const { return static_cast<const EncDecArch&>(arch_def()); }
  const SpeechFrontEnd& front_end() const;
  // The encoder graph over sequences of ids or input rows (lengths `ns`, packed): states [sum, width].
  void run_encoder(const int32_t* ids, const float* input, const std::vector<int64_t>& ns, float* out) const;
  void check_token_input() const;  // kUnsupported for speech encoders
  std::unique_ptr<Runner> encoder_, cross_;
};

}  // namespace pyrt
