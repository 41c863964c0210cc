// The input checks every model and device runs before it computes anything, each with one message:
// the feed of one session, a batch of decode steps, and token ids.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "pyrt/error.h"
#include "pyrt/model.h"

namespace pyrt {

// kOutOfRange naming the first id outside 0..n_vocab-1 and its position.
void check_token_ids(const int32_t* ids, int64_t n, int64_t n_vocab);
// A feed of n tokens to a session holding n_past of n_ctx positions: kInvalidArgument for no tokens,
// kContextOverflow when they do not fit, then the ids. `who` prefixes the messages ("" or "decode_batch:
// session 2: ").
void check_feed(int64_t n_past, int64_t n_ctx, const int32_t* ids, int64_t n, int64_t n_vocab,
                const std::string& who = "");

// A batch of decode steps, tokens[b] for sessions[b] (any session type with n_past() and n_ctx()): at
// least one session, none null, repeated or of another model (`ours(s)` false), then check_feed of one
// token for each. Nothing is fed before these pass.
template <typename S, typename Ours>
void check_decode_batch(const std::vector<S*>& sessions, const int32_t* tokens, int64_t n_vocab, Ours ours) {
  if (sessions.empty()) fail(ErrorCode::kInvalidArgument, "decode_batch needs at least one session");
  for (size_t b = 0; b < sessions.size(); ++b) {
    const std::string who = "decode_batch: session " + std::to_string(b);
    if (!sessions[b]) fail(ErrorCode::kInvalidArgument, who + " is null");
    for (size_t a = 0; a < b; ++a) {
      if (sessions[a] == sessions[b])
        fail(ErrorCode::kInvalidArgument, who + " is session " + std::to_string(a) + " again");
    }
    if (!ours(sessions[b])) fail(ErrorCode::kInvalidArgument, who + " comes from another model");
    check_feed(sessions[b]->n_past(), sessions[b]->n_ctx(), tokens + b, 1, n_vocab, who + ": ");
  }
}

inline void check_decode_batch(const Model& model, const std::vector<Session*>& sessions, const int32_t* tokens) {
  check_decode_batch(sessions, tokens, model.vocab_size(), [&](const Session* s) { return &s->model() == &model; });
}

}  // namespace pyrt
