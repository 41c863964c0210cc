// Decoder-only language models: an architecture file (llama.cpp, ...) reads its weights and states its
// layers once as a Graph; DecoderModel runs that graph on the device the options name, and
// DecoderSession is one conversation's cache and position. Prompts, single tokens, batched decode
// steps of several sessions and packed prompts are all passes of the same graph.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "models/devices.h"
#include "models/graph.h"
#include "models/runner.h"
#include "pyrt/model.h"

namespace pyrt {

// What an architecture file provides: weights (views into the file) and the graph over them. The
// object must stay where it was built: the graph points into it.
class DecoderArch {
 public:
  virtual ~DecoderArch() = default;
  const Graph& graph() const { return graph_; }  // the decoder: token ids -> logits
  // Every graph the device runs (encoder-decoder architectures add theirs): prepared once at load.
  virtual std::vector<const Graph*> graphs() const { return {&graph_}; }
  int64_t n_vocab = 0, n_ctx_train = 0, n_embd = 0;

 protected:
  Graph graph_;
};
using DecoderArchFactory = std::function<std::unique_ptr<DecoderArch>(const GgufFile&, const ModelOptions&)>;

class DecoderSession;

// Per-session state of a prefill plan (its counters, profiled latencies, last trace).
class PlanState {
 public:
  virtual ~PlanState() = default;
};

// How prompts are fed when the options ask for chunks or a delegate (sched/ implements it; models only
// know this interface). Single tokens never take it.
class PrefillPlan {
 public:
  virtual ~PrefillPlan() = default;
  virtual void prefill(DecoderSession& s, const int32_t* ids, int64_t T, float* logits, bool all_logits) = 0;
  virtual void add_stats(const DecoderSession& s, std::map<std::string, double>& out) const = 0;
  virtual const DelegatedPrefill* delegated() const { return nullptr; }
};

class DecoderModel : public Model {
 public:
  DecoderModel(std::shared_ptr<GgufFile> f, const ModelOptions& opts, const DecoderArchFactory& arch);
  std::unique_ptr<Session> new_session(int64_t n_ctx) override;
  int64_t vocab_size() const override { return arch_def_->n_vocab; }
  int64_t context_length() const override { return arch_def_->n_ctx_train; }
  int64_t embedding_length() const override { return arch_def_->n_embd; }
  void decode_batch(const std::vector<Session*>& sessions, const int32_t* tokens, float* logits) override;
  bool batches_decode() const override { return true; }
  // Prompts of several sessions packed into passes of up to 512 rows, without padding: each prompt's
  // rows attend over its own session's cache (a prompt alone when it is longer, or chunks are asked for).
  void prefill_batch(const std::vector<Session*>& sessions, const std::vector<std::vector<int32_t>>& prompts,
                     float* logits) override;
  bool packs_prefill() const override { return !plan_; }
  const DelegatedPrefill* delegated_prefill() const override { return plan_ ? plan_->delegated() : nullptr; }
  const std::string& device() const override { return dev_.backend->name(); }
  std::map<std::string, double> device_stats() const override;

  const Graph& graph() const { return arch_def_->graph(); }
  static constexpr int64_t kMicroBatch = 512;  // rows of a prompt pass at once (llama.cpp's n_ubatch)
  const Runner& runner() const { return *runner_; }
  void set_prefill_plan(std::unique_ptr<PrefillPlan> plan) { plan_ = std::move(plan); }

 protected:
  const DecoderArch& arch_def() const { return *arch_def_; }
  int64_t session_context(int64_t n_ctx) const;  // the context of a new session asking for n_ctx (0: default)
  void run_packed(const std::vector<DecoderSession*>& ss, const std::vector<std::vector<int32_t>>& prompts,
                  const std::vector<size_t>& group, int64_t rows, float* logits);
  // Fails naming `who` when a session cannot take decoder tokens yet (encoder-decoder: no encoder input).
  virtual void check_ready(const DecoderSession& s, const std::string& who) const {}
  DeviceRuntime dev_;

 private:
  std::unique_ptr<DecoderArch> arch_def_;
  std::unique_ptr<Runner> runner_;
  std::unique_ptr<PrefillPlan> plan_;
  friend class DecoderSession;
};

class DecoderSession : public Session {
 public:
  DecoderSession(DecoderModel& m, int64_t n_ctx);
  const Model& model() const override { return m_; }
  const DecoderModel& decoder() const { return m_; }
  void feed(const int32_t* ids, int64_t n, float* logits, bool all_logits) override;
  void reset() override;
  int64_t n_past() const override { return n_past_; }
  int64_t n_ctx() const override { return n_ctx_; }
  size_t kv_bytes() const override { return cache_->bytes(); }
  std::map<std::string, double> stats() const override;
  std::string prefill_trace_json() const override { return trace_json; }
  std::vector<float> cached_rows(int layer, bool keys) const override { return cache_->rows(layer, keys); }
  void set_linear_observer(LinearObserver obs) override;

  // For passes run from outside (batched steps, prefill plans).
  SequenceCache& cache() { return *cache_; }
  const LinearObserver* observer() const { return observer_ ? &observer_ : nullptr; }
  // A pass over this session's rows only: n_valid tokens at positions n_past + offset.. in `rows` rows
  // (the rest padding), logits of `out_rows` into `out`.
  PassRequest pass(const int32_t* ids, int64_t rows, int64_t n_valid, int64_t offset, std::vector<int64_t> out_rows,
                   float* out) const;
  // After a feed of n tokens that took `seconds` (a batched step: this session's share).
  void account(int64_t n, double seconds, bool batched);

  PassCounters counters;  // the layers' linears and attention of every pass that ran on the device
  int64_t passes = 0, chunks = 0, pad_tokens = 0;
  std::unique_ptr<PlanState> plan_state;
  std::string trace_json;

 private:
  DecoderModel& m_;
  int64_t n_ctx_, n_past_ = 0;
  std::unique_ptr<SequenceCache> cache_;
  LinearObserver observer_;
  double prefill_s_ = 0, decode_s_ = 0;
  int64_t prefill_tokens_ = 0, decode_tokens_ = 0, calls_ = 0, batched_decodes_ = 0, batched_prefills_ = 0;
  friend class DecoderModel;
};

}  // namespace pyrt
