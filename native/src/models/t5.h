#pragma once
#include <cstdint>

namespace pyrt {
// T5 relative-position bucket of rel = key_pos - query_pos (SPEC 3.2), computed in float32 like HF.
int t5_relative_bucket(int64_t rel, bool bidirectional, int num_buckets, int max_distance);
}  // namespace pyrt
