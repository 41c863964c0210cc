#include "models/loader.h"

#include "pyrt/error.h"

namespace pyrt {

namespace {
std::string shape_str(const std::vector<int64_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}
}  // namespace

void ModelLoader::bad(const std::string& what) const {
  fail(ErrorCode::kFormat, f_.path() + ": " + what);
}

const GgufTensorInfo& ModelLoader::tensor(const std::string& name, const std::vector<int64_t>& shape) const {
  const GgufTensorInfo* t = f_.find_tensor(name);
  if (!t) bad("tensor '" + name + "' is missing");
  if (t->ne != shape) bad("tensor '" + name + "' has shape " + shape_str(t->ne) + ", expected " + shape_str(shape));
  return *t;
}

const float* ModelLoader::f32(const std::string& name, int64_t n) const {
  const GgufTensorInfo& t = tensor(name, {n});
  if (t.type != GgmlType::F32) fail(ErrorCode::kUnsupported, f_.path() + ": 1-D tensor '" + name + "' must be F32");
  return reinterpret_cast<const float*>(t.data);
}

AttentionWeights ModelLoader::attention(const std::string& prefix, int64_t n_embd, int64_t q_dim,
                                        int64_t kv_dim) const {
  AttentionWeights a;
  a.q = weight(prefix + "_q.weight", {n_embd, q_dim});
  a.k = weight(prefix + "_k.weight", {n_embd, kv_dim});
  a.v = weight(prefix + "_v.weight", {n_embd, kv_dim});
  a.o = weight(prefix + "_o.weight", {q_dim, n_embd});
  a.bq = f32_or_null(prefix + "_q.bias", q_dim);
  a.bk = f32_or_null(prefix + "_k.bias", kv_dim);
  a.bv = f32_or_null(prefix + "_v.bias", kv_dim);
  a.bo = f32_or_null(prefix + "_o.bias", n_embd);
  return a;
}

int64_t ModelLoader::vocab_of(const std::string& name) const {
  const GgufTensorInfo* t = f_.find_tensor(name);
  if (!t || t->ne.size() != 2) bad("tensor '" + name + "' is missing or not 2-D");
  return t->ne[1];
}

int32_t ModelLoader::decoder_start(int64_t n_vocab, int64_t fallback) const {
  const int64_t start = f_.get_int(prefix_ + "decoder_start_token_id", fallback);
  if (start < 0 || start >= n_vocab)
    bad("decoder_start_token_id " + std::to_string(start) + " is outside the vocabulary");
  return static_cast<int32_t>(start);
}

int ModelLoader::pos_int(const std::string& key) const {
  const int64_t v = f_.require_int(prefix_ + key);
  if (v <= 0 || v > (int64_t(1) << 31))
    bad("metadata '" + prefix_ + key + "' = " + std::to_string(v) + " is out of range");
  return static_cast<int>(v);
}

int ModelLoader::pos_int(const std::string& key, int64_t fallback) const {
  if (!f_.find(prefix_ + key)) return static_cast<int>(fallback);
  return pos_int(key);
}

}  // namespace pyrt
