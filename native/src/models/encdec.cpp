#include "models/encdec.h"

#include <chrono>

#include "models/checks.h"
#include "pyrt/error.h"

namespace pyrt {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

class EncDecSession : public DecoderSession, public EncoderDecoderSession {
 public:
  EncDecSession(EncDecModel& m, int64_t n_ctx) : DecoderSession(m, n_ctx), m_(m) {}
  EncoderDecoderSession* encoder_decoder() override { return this; }

  void set_encoder_input(const int32_t* ids, int64_t n) override {
    if (n <= 0) fail(ErrorCode::kInvalidArgument, "the encoder input needs at least one token");
    check_token_ids(ids, n, m_.vocab_size());
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<float> states(static_cast<size_t>(n * m_.embedding_length()));
    m_.encode(ids, n, states.data());
    encode_s_ += seconds_since(t0);
    set_encoder_states(states.data(), n, m_.embedding_length());
  }

  void set_encoder_states(const float* states, int64_t n, int64_t width) override {
    if (n <= 0) fail(ErrorCode::kInvalidArgument, "the encoder states need at least one row");
    if (width != m_.embedding_length()) {
      fail(ErrorCode::kInvalidArgument, "encoder states have width " + std::to_string(width) + ", the model expects " +
                                            std::to_string(m_.embedding_length()));
    }
    const auto t0 = std::chrono::steady_clock::now();
    try {
      m_.compute_cross(cache(), states, n);
    } catch (...) {
      encoder_length_ = -1;  // some layers may hold the new input, others the old one
      throw;
    }
    encoder_length_ = n;
    ++cross_computations_;
    cross_s_ += seconds_since(t0);
    reset();
  }

  int64_t encoder_length() const override { return encoder_length_ < 0 ? 0 : encoder_length_; }
  bool has_encoder_input() const { return encoder_length_ >= 0; }

  std::map<std::string, double> stats() const override {
    std::map<std::string, double> out = DecoderSession::stats();
    out["encoder_length"] = double(encoder_length());
    out["encode_s"] = encode_s_;
    out["cross_kv_s"] = cross_s_;
    out["cross_kv_computations"] = double(cross_computations_);
    out.emplace("kv_self_bytes", double(kv_bytes()));  // before any encoder input, all of it is self
    out.emplace("kv_cross_bytes", 0.0);
    return out;
  }

 private:
  EncDecModel& m_;
  int64_t encoder_length_ = -1;  // -1: no encoder input yet
  double encode_s_ = 0, cross_s_ = 0;
  int64_t cross_computations_ = 0;
};

}  // namespace

EncDecModel::EncDecModel(std::shared_ptr<GgufFile> f, const ModelOptions& opts, const EncDecArchFactory& arch)
    : DecoderModel(std::move(f), opts, [&arch](const GgufFile& file, const ModelOptions& o) {
        return std::unique_ptr<DecoderArch>(arch(file, o));
      }) {
  encoder_ = std::make_unique<Runner>(enc().encoder(), *dev_.backend, *dev_.memory);
  cross_ = std::make_unique<Runner>(enc().cross(), *dev_.backend, *dev_.memory);
}

std::unique_ptr<Session> EncDecModel::new_session(int64_t n_ctx) {
  return std::make_unique<EncDecSession>(*this, session_context(n_ctx));
}

void EncDecModel::check_ready(const DecoderSession& s, const std::string& who) const {
  if (!static_cast<const EncDecSession&>(s).has_encoder_input())
    fail(ErrorCode::kInvalidArgument, who + " has no encoder input: set it before feeding decoder tokens");
}

void EncDecModel::run_encoder(const int32_t* ids, const float* input, const std::vector<int64_t>& ns,
                              float* out) const {
  PassRequest r;
  for (int64_t n : ns) {  // kDense attention: within each sequence's rows, no cache
    r.seqs.push_back(SeqRows{nullptr, r.rows, n, enc().encoder_first_position(n)});
    r.rows += n;
  }
  r.ids = ids;
  r.input = input;
  for (int64_t t = 0; t < r.rows; ++t) r.out_rows.push_back(t);
  r.out = out;
  encoder_->run(r);
}

void EncDecModel::check_token_input() const {
  if (enc().front_end()) {
    fail(ErrorCode::kUnsupported,
         architecture() + " encodes audio, not token ids: use the audio features (transcribe)");
  }
}

void EncDecModel::encode(const int32_t* ids, int64_t n, float* out) const {
  check_token_input();
  if (n <= 0) fail(ErrorCode::kInvalidArgument, "the encoder input needs at least one token");
  check_token_ids(ids, n, vocab_size());
  run_encoder(ids, nullptr, {n}, out);
}

void EncDecModel::encode_batch(const std::vector<std::vector<int32_t>>& inputs, float* out) const {
  check_token_input();
  std::vector<int32_t> ids;
  std::vector<int64_t> ns;
  for (size_t b = 0; b < inputs.size(); ++b) {
    if (inputs[b].empty()) continue;  // an input without tokens has no states
    check_token_ids(inputs[b].data(), int64_t(inputs[b].size()), vocab_size());
    ids.insert(ids.end(), inputs[b].begin(), inputs[b].end());
    ns.push_back(int64_t(inputs[b].size()));
  }
  if (!ns.empty()) run_encoder(ids.data(), nullptr, ns, out);
}

void EncDecModel::compute_cross(SequenceCache& cache, const float* states, int64_t n) const {
  PassRequest r;
  r.rows = n;
  r.seqs = {SeqRows{&cache, 0, n, 0}};
  r.input = states;
  cross_->run(r);
  dev_.memory->set_cross_length(cache, n);
}

const SpeechFrontEnd& EncDecModel::front_end() const {
  if (!enc().front_end()) fail(ErrorCode::kUnsupported, architecture() + " is not a speech model (no audio front end)");
  return *enc().front_end();
}

int EncDecModel::sample_rate() const {
  return front_end().sample_rate();
}

std::vector<float> EncDecModel::audio_features(const float* pcm, int64_t n, int64_t* n_mels, int64_t* n_frames) const {
  return front_end().features(pcm, n, n_mels, n_frames, pool());
}

std::vector<float> EncDecModel::encode_audio(const float* features, int64_t n_mels, int64_t n_frames,
                                             int64_t* n_states) const {
  int64_t rows = 0;
  const std::vector<float> input = front_end().encoder_input(features, n_mels, n_frames, &rows, pool());
  std::vector<float> out(static_cast<size_t>(rows * embedding_length()));
  run_encoder(nullptr, input.data(), {rows}, out.data());
  *n_states = rows;
  return out;
}

}  // namespace pyrt
