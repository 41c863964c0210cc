// Shared machinery of encoder-decoder models (T5, Mu, Whisper): the read-only model encodes once; a
// session holds the decoder's self-attention cache plus every decoder layer's cross-attention K/V,
// computed once from the encoder states (SPEC 3.1/3.2) and reused by every step. Both caches use the
// session's KV formats, so quantized caches cover cross-attention too.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "memory/kv_cache.h"
#include "models/checks.h"
#include "pyrt/model.h"

namespace pyrt {

struct DecoderState {
  DecoderState(int n_layers, int n_kv_heads, int head_dim, int n_cross_kv_heads, int cross_head_dim, const KvSpec& k,
               const KvSpec& v)
      : self(n_layers, n_kv_heads, head_dim, k, v), cross(n_layers, n_cross_kv_heads, cross_head_dim, k, v) {}
  KvCache self;                 // grows by the decoder tokens fed
  KvCache cross;                // fixed once the encoder ran: encoder_length keys per layer
  int64_t n_past = 0;           // decoder tokens cached
  int64_t encoder_length = -1;  // -1: no encoder input yet
};

class EncDecModel : public Model, public EncoderDecoder {
 public:
  const EncoderDecoder* encoder_decoder() const override { return this; }
  std::unique_ptr<Session> new_session(int64_t n_ctx) override;
  int32_t decoder_start_token() const override { return decoder_start_; }
  const std::string& device() const override { return device_; }

  // Hooks the session calls. cross_kv: layer's cross K and V ([n, kv_dim] each) from encoder states.
  virtual void cross_kv(int layer, const float* states, int64_t n, float* k, float* v) const = 0;
  // Feeds T decoder tokens at positions st.n_past.. (the session checked ids and context).
  virtual void decode(DecoderState& st, const int32_t* ids, int64_t T, float* logits, bool all_logits) const = 0;
  // One decoder step of several states, ids[b] at states[b]->n_past (checked; n_past is advanced by the
  // caller): logits [n, vocab]. The default runs decode() per state; architectures that override it
  // (and batches_decode_steps) run each linear once over the n rows.
  virtual void decode_steps(const std::vector<DecoderState*>& states, const int32_t* ids, float* logits) const;
  virtual bool batches_decode_steps() const { return false; }
  // Model::decode_batch for encoder-decoder sessions (each needs its encoder input set).
  void decode_batch(const std::vector<Session*>& sessions, const int32_t* tokens, float* logits) override;
  bool batches_decode() const override { return batches_decode_steps(); }

  std::unique_ptr<DecoderState> new_decoder_state() const {
    return std::make_unique<DecoderState>(n_dec_layers_, self_kv_heads_, self_head_dim_, cross_kv_heads_,
                                          cross_head_dim_, kv_k_, kv_v_);
  }
  int n_decoder_layers() const { return n_dec_layers_; }
  int64_t cross_kv_dim() const { return int64_t(cross_kv_heads_) * cross_head_dim_; }
  int64_t max_encoder_length() const { return max_enc_len_; }

 protected:
  EncDecModel(std::shared_ptr<GgufFile> f, const ModelOptions& opts);
  // Set by the architecture's constructor.
  int n_dec_layers_ = 0, self_kv_heads_ = 0, self_head_dim_ = 0, cross_kv_heads_ = 0, cross_head_dim_ = 0;
  int32_t decoder_start_ = 0;
  int64_t max_enc_len_ = 0;  // 0: unlimited (relative positions)
  KvSpec kv_k_, kv_v_;
  const std::string device_ = "cpu";
};

}  // namespace pyrt
