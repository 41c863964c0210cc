// Decoder-only Llama on an NVIDIA GPU with the project's own kernels (kernels/pyrt_cuda.h).
// Compiled into the `_cuda` module against the CUDA runtime and into `_cuda_sim` against the CUDA
// simulator (kernels/sim), which is how CI runs it. The model holds the device weights (read-only,
// shared by sessions); a session holds one conversation's KV cache (f16, q8_0 or q4_0) and scratch.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "backends/cuda/device.h"
#include "backends/cuda/kivi_store.h"
#include "models/llama_weights.h"

namespace pyrt::cuda {

class LlamaGpuSession;

class LlamaGpuModel {
 public:
  // Errors (pyrt::Error) name the file, tensor, type or CUDA call that stopped the load.
  LlamaGpuModel(const std::string& path, const std::string& arch);
  // kv: "f16", "q8_0", "q4_0" or a KIVI spec ("kivi2", "kivi4-g32-r128-s4-clip", ...) for keys and values.
  std::unique_ptr<LlamaGpuSession> new_session(int64_t n_ctx, const std::string& kv) const;
  const LlamaHparams& hparams() const { return w_.hp; }
  size_t device_bytes() const { return up_.device_bytes; }
  int64_t f32_weights_rounded() const { return up_.converted_to_f16; }

 private:
  friend class LlamaGpuSession;
  struct Layer {
    DeviceBuffer attn_norm, ffn_norm;
    DeviceWeight wq, wk, wv, wo, gate, up, down;
  };
  std::shared_ptr<GgufFile> file_;
  LlamaWeights w_;  // host views (embedding rows are gathered on the host)
  std::vector<Layer> layers_;
  DeviceBuffer output_norm_, inv_freq_;
  DeviceWeight output_;
  WeightUploader up_;
};

class LlamaGpuSession {
 public:
  LlamaGpuSession(const LlamaGpuModel& m, int64_t n_ctx, const KvSpec& kv);
  // Appends n tokens; writes logits for every fed position ([n, vocab]) or only the last ([vocab]).
  void feed(const int32_t* ids, int64_t n, float* logits, bool all_logits);
  void reset();
  int64_t n_past() const { return n_past_; }
  int64_t n_ctx() const { return n_ctx_; }
  size_t kv_bytes() const;
  std::map<std::string, double> stats() const;
  // Padding-free batched prefill (ByteTransformer): fresh f16 sessions of one model, one prompt each,
  // packed into one pass (every linear over the packed rows, varlen causal FlashAttention by prefix
  // sums, each session's cache filled from its own rows). logits: [sessions, vocab], each prompt's last.
  static void prefill_batch(const std::vector<LlamaGpuSession*>& sessions,
                            const std::vector<std::vector<int32_t>>& prompts, float* logits);
  // One decode step for each of several sessions of one model (one token each, any cache lengths, the
  // same KV format): every linear over the batch's rows (the GEMV reads each weight once for up to
  // kGemvMaxRows sessions), each token appended to its own cache, Lean Attention (stream-K) over the
  // ragged caches in one launch. logits: [sessions, vocab]. Each session's logits equal its own
  // feed() step's within the attention's reordering (a few ulp).
  static void decode_batch(const std::vector<LlamaGpuSession*>& sessions, const std::vector<int32_t>& tokens,
                           float* logits);

 private:
  // One pass of T <= kMaxRows tokens at positions n_past_.. ; logits of rows [first, T) when asked.
  void pass(const int32_t* ids, int64_t T, float* logits, int64_t first);
  void linear(const DeviceWeight& w, const float* x, int64_t T, float* y) { lin_.run(w, x, T, y); }
  void qkv(const LlamaGpuModel::Layer& L, int64_t T);              // attention norm, Q/K/V linears
  void after_attention(const LlamaGpuModel::Layer& L, int64_t T);  // O + residual, FFN + residual
  void head(const float* rows, int64_t n_out, float* logits);      // final norm, output linear, to host
  void reserve(int64_t T);

  const LlamaGpuModel& m_;
  int64_t n_ctx_, n_past_ = 0;
  KvFormat kv_;
  size_t kv_row_bytes_;
  std::vector<DeviceBuffer> k_cache_, v_cache_;                 // per layer: [Hkv, n_ctx, kv_row_bytes_] (row formats)
  std::vector<std::unique_ptr<KiviGpuStore>> kivi_k_, kivi_v_;  // per layer (KIVI)
  // Scratch, sized for the largest pass so far.
  int64_t rows_reserved_ = 0;
  DeviceBuffer x_, xn_, q_, k_, v_, att_, tmp_, gate_, up_, half_q_, lse_, logits_;
  DeviceBuffer o_partial_, lse_partial_, seqlen_, k_f16_, v_f16_;
  Linear lin_;
  int64_t prefill_tokens_ = 0, decode_tokens_ = 0, passes_ = 0, batched_prefills_ = 0, batched_decodes_ = 0;
  double prefill_s_ = 0, decode_s_ = 0;
};

}  // namespace pyrt::cuda
