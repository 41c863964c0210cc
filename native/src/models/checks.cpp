#include "models/checks.h"

#include "pyrt/error.h"

namespace pyrt {

void check_token_ids(const int32_t* ids, int64_t n, int64_t n_vocab) {
  for (int64_t t = 0; t < n; ++t) {
    if (ids[t] < 0 || ids[t] >= n_vocab) {
      fail(ErrorCode::kOutOfRange, "token id " + std::to_string(ids[t]) + " at position " + std::to_string(t) +
                                       " is outside the vocabulary (0.." + std::to_string(n_vocab - 1) + ")");
    }
  }
}

void check_feed(int64_t n_past, int64_t n_ctx, const int32_t* ids, int64_t n, int64_t n_vocab, const std::string& who) {
  if (n <= 0) fail(ErrorCode::kInvalidArgument, who + "feed() needs at least one token");
  if (n > n_ctx - n_past) {
    fail(ErrorCode::kContextOverflow, who + "context overflow: " + std::to_string(n_past) + " cached + " +
                                          std::to_string(n) + " new tokens exceed the context of " +
                                          std::to_string(n_ctx));
  }
  try {
    check_token_ids(ids, n, n_vocab);
  } catch (const Error& e) {
    if (who.empty()) throw;
    fail(e.code(), who + e.what());
  }
}

}  // namespace pyrt
