#include "models/encdec.h"

#include <chrono>

#include "models/checks.h"
#include "pyrt/error.h"

namespace pyrt {

namespace {

class EncDecSession : public EncoderDecoderSession {
 public:
  EncDecSession(const EncDecModel& m, int64_t n_ctx)
      : m_(m), n_ctx_(n_ctx), state_(m.new_decoder_state()), st_(*state_) {
    if (n_ctx <= 0) fail(ErrorCode::kInvalidArgument, "context size must be positive");
  }

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
    st_.cross.clear();
    const int64_t kv = m_.cross_kv_dim();
    std::vector<float> k(static_cast<size_t>(n * kv)), v(static_cast<size_t>(n * kv));
    for (int il = 0; il < m_.n_decoder_layers(); ++il) {
      m_.cross_kv(il, states, n, k.data(), v.data());
      st_.cross.store(il, 0, n, k.data(), v.data());
      st_.cross.finish_step(il);
    }
    st_.encoder_length = n;
    ++cross_computations_;
    cross_s_ += seconds_since(t0);
    reset();
  }

  void feed(const int32_t* ids, int64_t T, float* logits, bool all_logits) override {
    if (st_.encoder_length < 0) {
      fail(ErrorCode::kInvalidArgument,
           "encoder-decoder session has no encoder input: set it before feeding decoder tokens");
    }
    check_feed(st_.n_past, n_ctx_, ids, T, m_.vocab_size());
    const auto t0 = std::chrono::steady_clock::now();
    m_.decode(st_, ids, T, logits, all_logits);
    st_.n_past += T;
    tokens_fed_ += T;
    ++calls_;
    decode_s_ += seconds_since(t0);
  }

  void reset() override {
    st_.self.clear();
    st_.n_past = 0;
  }
  // A decode step run for this session by EncDecModel::decode_batch (its share of the shared time).
  void account_step(double seconds) {
    ++st_.n_past, ++tokens_fed_, ++calls_, ++batched_steps_;
    decode_s_ += seconds;
  }
  const Model& model() const override { return m_; }
  DecoderState& state() { return st_; }
  int64_t n_past() const override { return st_.n_past; }
  int64_t n_ctx() const override { return n_ctx_; }
  int64_t encoder_length() const override { return st_.encoder_length < 0 ? 0 : st_.encoder_length; }
  size_t kv_bytes() const override { return st_.self.bytes() + st_.cross.bytes(); }
  std::map<std::string, double> stats() const override {
    return {{"n_past", double(st_.n_past)},
            {"n_ctx", double(n_ctx_)},
            {"encoder_length", double(encoder_length())},
            {"kv_bytes", double(kv_bytes())},
            {"kv_self_bytes", double(st_.self.bytes())},
            {"kv_cross_bytes", double(st_.cross.bytes())},
            {"tokens_fed", double(tokens_fed_)},
            {"feed_calls", double(calls_)},
            {"encode_s", encode_s_},
            {"cross_kv_s", cross_s_},
            {"compute_s", decode_s_},
            {"cross_kv_computations", double(cross_computations_)},
            {"batched_decodes", double(batched_steps_)},
            {"threads", double(m_.pool().size())}};
  }

 private:
  static double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  const EncDecModel& m_;
  int64_t n_ctx_;
  std::unique_ptr<DecoderState> state_;
  DecoderState& st_;
  double encode_s_ = 0, cross_s_ = 0, decode_s_ = 0;
  int64_t tokens_fed_ = 0, calls_ = 0, cross_computations_ = 0, batched_steps_ = 0;
};

}  // namespace

EncDecModel::EncDecModel(std::shared_ptr<GgufFile> f, const ModelOptions& opts) : Model(std::move(f), opts) {
  kv_k_ = parse_kv_spec(opts_.kv_k);
  kv_v_ = parse_kv_spec(opts_.kv_v);
}

void EncDecModel::decode_steps(const std::vector<DecoderState*>& states, const int32_t* ids, float* logits) const {
  for (size_t b = 0; b < states.size(); ++b) decode(*states[b], ids + b, 1, logits + b * vocab_size(), false);
}

void EncDecModel::decode_batch(const std::vector<Session*>& sessions, const int32_t* tokens, float* logits) {
  check_decode_batch(*this, sessions, tokens);
  std::vector<EncDecSession*> es;
  std::vector<DecoderState*> states;
  for (size_t b = 0; b < sessions.size(); ++b) {
    auto* s = static_cast<EncDecSession*>(sessions[b]);  // checked: this model's sessions
    const std::string who = "decode_batch: session " + std::to_string(b);
    if (s->state().encoder_length < 0) {
      fail(ErrorCode::kInvalidArgument, who + " has no encoder input: set it before feeding decoder tokens");
    }
    es.push_back(s);
    states.push_back(&s->state());
  }
  if (es.size() == 1) return es[0]->feed(tokens, 1, logits, false);
  const auto t0 = std::chrono::steady_clock::now();
  try {
    decode_steps(states, tokens, logits);
  } catch (...) {
    for (EncDecSession* s : es) s->reset();  // a cache holding part of the step would disagree with n_past
    throw;
  }
  const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  for (EncDecSession* s : es) s->account_step(dt / double(es.size()));
}

std::unique_ptr<Session> EncDecModel::new_session(int64_t n_ctx) {
  if (n_ctx <= 0) n_ctx = opts_.n_ctx > 0 ? opts_.n_ctx : context_length();
  return std::make_unique<EncDecSession>(*this, n_ctx);
}

}  // namespace pyrt
