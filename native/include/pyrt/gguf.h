// GGUF reader: memory-maps the file, validates every offset before reading, and keeps the
// metadata and tensor table. Any defect is reported as Error(kFormat) naming file, offset, field.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "pyrt/ggml_types.h"

namespace pyrt {

enum class GgufType : uint32_t {
  UINT8 = 0,
  INT8 = 1,
  UINT16 = 2,
  INT16 = 3,
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  UINT64 = 10,
  INT64 = 11,
  FLOAT64 = 12,
};
const char* gguf_type_name(GgufType t);

// One metadata value. Arrays keep their elements in the vector that matches their element type.
struct GgufValue {
  GgufType type = GgufType::UINT8;
  uint64_t u = 0;  // unsigned ints and bool
  int64_t i = 0;   // signed ints
  double f = 0;    // floats
  std::string s;
  GgufType array_type = GgufType::UINT8;
  std::vector<int64_t> array_int;   // all integer and bool element types
  std::vector<double> array_float;  // FLOAT32 / FLOAT64
  // STRING arrays (vocabularies, merges: 100k+ entries) view the file's bytes instead of copying
  // them; valid while the GgufFile lives.
  std::vector<std::string_view> array_str;
  std::vector<GgufValue> array_nested;  // ARRAY of ARRAY
  uint64_t array_size = 0;

  bool is_integer() const;
  bool is_float() const { return type == GgufType::FLOAT32 || type == GgufType::FLOAT64; }
  int64_t as_int() const;   // any integer, bool
  double as_float() const;  // any number
};

struct GgufTensorInfo {
  std::string name;
  GgmlType type = GgmlType::F32;
  std::vector<int64_t> ne;  // ggml order: ne[0] is the contiguous row length
  uint64_t offset = 0;      // relative to the data section
  uint64_t nbytes = 0;
  const uint8_t* data = nullptr;
  int64_t n_elements() const;
};

class MappedFile;

class GgufFile {
 public:
  static std::shared_ptr<GgufFile> open(const std::string& path);
  // Parse an in-memory buffer (fuzzing, tests). The buffer must outlive the object.
  static std::shared_ptr<GgufFile> from_buffer(const uint8_t* data, size_t size, const std::string& label);
  ~GgufFile();

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  size_t file_size() const { return size_; }
  const std::map<std::string, GgufValue>& metadata() const { return kv_; }
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }

  const GgufValue* find(const std::string& key) const;
  const GgufTensorInfo* find_tensor(const std::string& name) const;
  // Typed getters: throw Error(kFormat) naming the key when present with the wrong type;
  // return the default when absent.
  std::string get_string(const std::string& key, const std::string& def = "") const;
  int64_t get_int(const std::string& key, int64_t def) const;
  double get_float(const std::string& key, double def) const;
  bool get_bool(const std::string& key, bool def) const;
  int64_t require_int(const std::string& key) const;

 private:
  GgufFile() = default;
  void parse();
  std::string path_;
  std::unique_ptr<MappedFile> map_;
  const uint8_t* base_ = nullptr;
  size_t size_ = 0;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  std::map<std::string, GgufValue> kv_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t> tensor_index_;
};

}  // namespace pyrt
