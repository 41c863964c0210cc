// T5 (v1.0 / v1.1 / FLAN-T5) encoder-decoder on an NVIDIA GPU with the project's kernels, the GPU
// twin of models/t5.cpp: the encoder runs once per input (bidirectional FlashAttention with the
// relative position bias), every decoder layer's cross-attention K/V is computed once from the
// encoder states into an fp16 cache, and decoder steps attend causally to their own fp16 cache (with
// the decoder's bias) and to the cross cache. Compiled into `_cuda` and `_cuda_sim` like the Llama path.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "backends/cuda/device.h"
#include "models/t5_weights.h"

namespace pyrt::cuda {

class T5GpuSession;

class T5GpuModel {
 public:
  T5GpuModel(const std::string& path, const std::string& arch);
  std::unique_ptr<T5GpuSession> new_session(int64_t n_ctx) const;
  // Final encoder states [n, d_model] of `ids` (on the GPU; copied to `out` on the host).
  void encode(const int32_t* ids, int64_t n, float* out) const;
  // A batch of sequences (ids back to back, lengths[b] each), padding-free: packed rows through every
  // linear, varlen attention by prefix sums; out [B, max length, d_model] with zero rows past each length.
  void encode_batch(const int32_t* ids, const std::vector<int>& lengths, float* out) const;
  const T5Weights& weights() const { return w_; }
  size_t device_bytes() const { return up_.device_bytes; }

 private:
  friend class T5GpuSession;
  struct Layer {
    DeviceBuffer attn_norm, cross_norm, ffn_norm;
    DeviceWeight q, k, v, o, cq, ck, cv, co, up, gate, down;
  };
  // Runs the encoder on the device over packed sequences: states [sum of lengths, d_model].
  void encode_device(const int32_t* ids, const std::vector<int>& lengths, DeviceBuffer& states) const;

  std::shared_ptr<GgufFile> file_;
  T5Weights w_;
  WeightUploader up_;
  std::vector<Layer> enc_, dec_;
  DeviceBuffer enc_norm_, dec_norm_;  // dec_norm_ carries the logit scale
  DeviceWeight output_;
};

class T5GpuSession {
 public:
  T5GpuSession(const T5GpuModel& m, int64_t n_ctx);
  // Encodes `ids`, fills every decoder layer's cross K/V, and starts a fresh decoder sequence.
  void set_encoder_input(const int32_t* ids, int64_t n);
  // Appends n decoder tokens; logits for every fed position ([n, vocab]) or only the last.
  void feed(const int32_t* ids, int64_t n, float* logits, bool all_logits);
  void reset() { n_past_ = 0; }
  int64_t n_past() const { return n_past_; }
  int64_t n_ctx() const { return n_ctx_; }
  int64_t encoder_length() const { return enc_len_; }
  size_t kv_bytes() const;
  std::map<std::string, double> stats() const;

 private:
  const T5GpuModel& m_;
  int64_t n_ctx_, n_past_ = 0, enc_len_ = -1;
  std::vector<DeviceBuffer> self_k_, self_v_, cross_k_, cross_v_;  // fp16 [heads, positions, d_kv]
  DeviceBuffer x_, xn_, q_, k_, v_, att_, tmp_, hidden_, gate_, half_q_, lse_, logits_, bias_, states_;
  Linear lin_;
  int64_t decoder_tokens_ = 0, encoder_tokens_ = 0;
  double encode_s_ = 0, decode_s_ = 0;
};

}  // namespace pyrt::cuda
