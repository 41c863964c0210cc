// An additive attention bias by relative position (T5's buckets), shared by every device's attention.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

namespace pyrt {

// table [num_buckets][n_head] plus the bucket of each distance; beyond max_distance every bucket is
// saturated, so the lookup clamps.
struct RelativeBias {
  std::vector<float> table;
  std::vector<int> bucket_neg, bucket_pos;  // bucket of rel = -n and rel = +n, n in 0..max_distance
  int n_head = 0;
  float at(int head, int64_t rel) const {
    const int64_t last = static_cast<int64_t>(bucket_pos.size()) - 1;
    const int b = rel < 0 ? bucket_neg[std::min(-rel, last)] : bucket_pos[std::min(rel, last)];
    return table[static_cast<size_t>(b) * n_head + head];
  }
};

}  // namespace pyrt
