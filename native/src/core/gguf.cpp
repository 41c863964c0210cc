#include "pyrt/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <sstream>

#include "pyrt/error.h"

namespace pyrt {

const char* error_code_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::kOk: return "ok";
    case ErrorCode::kInvalidArgument: return "invalid_argument";
    case ErrorCode::kIo: return "io";
    case ErrorCode::kFormat: return "format";
    case ErrorCode::kUnsupported: return "unsupported";
    case ErrorCode::kOutOfRange: return "out_of_range";
    case ErrorCode::kContextOverflow: return "context_overflow";
    case ErrorCode::kInternal: return "internal";
  }
  return "unknown";
}

const char* gguf_type_name(GgufType t) {
  static const char* names[] = {"uint8", "int8",   "uint16", "int16",  "uint32", "int32",  "float32",
                                "bool",  "string", "array",  "uint64", "int64",  "float64"};
  auto i = static_cast<uint32_t>(t);
  return i < 13 ? names[i] : "invalid";
}

bool GgufValue::is_integer() const {
  switch (type) {
    case GgufType::UINT8:
    case GgufType::INT8:
    case GgufType::UINT16:
    case GgufType::INT16:
    case GgufType::UINT32:
    case GgufType::INT32:
    case GgufType::UINT64:
    case GgufType::INT64:
    case GgufType::BOOL: return true;
    default: return false;
  }
}

int64_t GgufValue::as_int() const {
  switch (type) {
    case GgufType::UINT8:
    case GgufType::UINT16:
    case GgufType::UINT32:
    case GgufType::UINT64:
    case GgufType::BOOL: return static_cast<int64_t>(u);
    case GgufType::INT8:
    case GgufType::INT16:
    case GgufType::INT32:
    case GgufType::INT64: return i;
    default: return static_cast<int64_t>(f);
  }
}

double GgufValue::as_float() const {
  return is_float() ? f : static_cast<double>(as_int());
}

int64_t GgufTensorInfo::n_elements() const {
  int64_t n = 1;
  for (int64_t d : ne) n *= d;
  return n;
}

// ---------------------------------------------------------------------------------------------
class MappedFile {
 public:
  explicit MappedFile(const std::string& path) {
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) fail(ErrorCode::kIo, path + ": cannot open: " + std::strerror(errno));
    struct stat st{};
    if (fstat(fd_, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd_);
      fail(ErrorCode::kIo, path + ": not a regular file");
    }
    size_ = static_cast<size_t>(st.st_size);
    if (size_ > 0) {
      void* p = mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd_, 0);
      if (p == MAP_FAILED) {
        ::close(fd_);
        fail(ErrorCode::kIo, path + ": mmap failed: " + std::strerror(errno));
      }
      data_ = static_cast<const uint8_t*>(p);
    }
  }
  ~MappedFile() {
    if (data_) munmap(const_cast<uint8_t*>(data_), size_);
    if (fd_ >= 0) ::close(fd_);
  }
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  int fd_ = -1;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

namespace {

// Bounds-checked reader. `field` names what is being read so errors point at it.
class Cursor {
 public:
  Cursor(const uint8_t* base, size_t size, const std::string& path) : base_(base), size_(size), path_(path) {}
  size_t pos() const { return pos_; }
  size_t remaining() const { return size_ - pos_; }

  [[noreturn]] void error(const std::string& field, const std::string& what) const {
    std::ostringstream os;
    os << path_ << ": " << what << " at offset " << pos_ << " (field '" << field << "')";
    fail(ErrorCode::kFormat, os.str());
  }
  void need(size_t n, const std::string& field) const {
    if (n > remaining()) {
      std::ostringstream os;
      os << "truncated file: need " << n << " bytes, " << remaining() << " left";
      error(field, os.str());
    }
  }
  template <typename T>
  T read(const std::string& field) {
    need(sizeof(T), field);
    T v;
    std::memcpy(&v, base_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  void seek(size_t pos) { pos_ = pos; }
  std::string read_string(const std::string& field) {
    return std::string(read_string_view([&] { return field; }));
  }
  // A view of the string's bytes in the file; `field()` names it, built only for an error (arrays
  // of 100k strings would otherwise build 100k names).
  template <typename FieldName>
  std::string_view read_string_view(FieldName&& field) {
    const size_t start = pos_;
    if (sizeof(uint64_t) > remaining()) need(sizeof(uint64_t), field());
    uint64_t n;
    std::memcpy(&n, base_ + pos_, sizeof n);
    pos_ += sizeof n;
    if (n > remaining()) {
      pos_ = start;  // report the offset of the length field
      std::ostringstream os;
      os << "string length " << n << " exceeds the " << remaining() << " bytes left";
      error(field(), os.str());
    }
    std::string_view s(reinterpret_cast<const char*>(base_ + pos_), n);
    pos_ += n;
    return s;
  }

 private:
  const uint8_t* base_;
  size_t size_;
  size_t pos_ = 0;
  const std::string& path_;
};

size_t scalar_size(GgufType t) {
  switch (t) {
    case GgufType::UINT8:
    case GgufType::INT8:
    case GgufType::BOOL: return 1;
    case GgufType::UINT16:
    case GgufType::INT16: return 2;
    case GgufType::UINT32:
    case GgufType::INT32:
    case GgufType::FLOAT32: return 4;
    case GgufType::UINT64:
    case GgufType::INT64:
    case GgufType::FLOAT64: return 8;
    default: return 0;
  }
}

void read_scalar(Cursor& c, GgufType t, GgufValue& v, const std::string& field) {
  v.type = t;
  switch (t) {
    case GgufType::UINT8: v.u = c.read<uint8_t>(field); break;
    case GgufType::INT8: v.i = c.read<int8_t>(field); break;
    case GgufType::UINT16: v.u = c.read<uint16_t>(field); break;
    case GgufType::INT16: v.i = c.read<int16_t>(field); break;
    case GgufType::UINT32: v.u = c.read<uint32_t>(field); break;
    case GgufType::INT32: v.i = c.read<int32_t>(field); break;
    case GgufType::UINT64: v.u = c.read<uint64_t>(field); break;
    case GgufType::INT64: v.i = c.read<int64_t>(field); break;
    case GgufType::FLOAT32: v.f = c.read<float>(field); break;
    case GgufType::FLOAT64: v.f = c.read<double>(field); break;
    case GgufType::BOOL: {
      uint8_t b = c.read<uint8_t>(field);
      if (b > 1) c.error(field, "bool value " + std::to_string(b) + " is neither 0 nor 1");
      v.u = b;
      break;
    }
    case GgufType::STRING: v.s = c.read_string(field); break;
    default: c.error(field, "invalid value type " + std::to_string(static_cast<uint32_t>(t)));
  }
}

void read_value(Cursor& c, GgufType t, GgufValue& v, const std::string& field, int depth) {
  if (t != GgufType::ARRAY) {
    read_scalar(c, t, v, field);
    return;
  }
  if (depth > 4) c.error(field, "arrays nested too deeply");
  v.type = GgufType::ARRAY;
  uint32_t et = c.read<uint32_t>(field + ".type");
  if (et > static_cast<uint32_t>(GgufType::FLOAT64)) c.error(field, "invalid array element type " + std::to_string(et));
  v.array_type = static_cast<GgufType>(et);
  const size_t count_pos = c.pos();
  uint64_t n = c.read<uint64_t>(field + ".count");
  // Every element takes at least one byte (strings 8): reject counts the file cannot hold before allocating.
  size_t min_elem =
      v.array_type == GgufType::STRING ? 8 : (v.array_type == GgufType::ARRAY ? 12 : scalar_size(v.array_type));
  if (min_elem == 0 || n > c.remaining() / min_elem) {
    std::ostringstream os;
    os << "array count " << n << " cannot fit in the " << c.remaining() << " bytes left";
    c.seek(count_pos);
    c.error(field + ".count", os.str());
  }
  v.array_size = n;
  GgufValue tmp;
  if (v.array_type == GgufType::STRING) {
    v.array_str.reserve(n);
    for (uint64_t k = 0; k < n; ++k)
      v.array_str.push_back(c.read_string_view([&] { return field + "[" + std::to_string(k) + "]"; }));
  } else if (v.array_type == GgufType::ARRAY) {
    v.array_nested.resize(n);
    for (uint64_t k = 0; k < n; ++k)
      read_value(c, GgufType::ARRAY, v.array_nested[k], field + "[" + std::to_string(k) + "]", depth + 1);
  } else if (v.array_type == GgufType::FLOAT32 || v.array_type == GgufType::FLOAT64) {
    v.array_float.resize(n);
    for (uint64_t k = 0; k < n; ++k) {
      read_scalar(c, v.array_type, tmp, field);
      v.array_float[k] = tmp.f;
    }
  } else {
    v.array_int.resize(n);
    for (uint64_t k = 0; k < n; ++k) {
      read_scalar(c, v.array_type, tmp, field);
      v.array_int[k] = tmp.as_int();
    }
  }
}

}  // namespace

GgufFile::~GgufFile() = default;

std::shared_ptr<GgufFile> GgufFile::open(const std::string& path) {
  std::shared_ptr<GgufFile> f(new GgufFile());
  f->path_ = path;
  f->map_ = std::make_unique<MappedFile>(path);
  f->base_ = f->map_->data();
  f->size_ = f->map_->size();
  f->parse();
  return f;
}

std::shared_ptr<GgufFile> GgufFile::from_buffer(const uint8_t* data, size_t size, const std::string& label) {
  std::shared_ptr<GgufFile> f(new GgufFile());
  f->path_ = label;
  f->base_ = data;
  f->size_ = size;
  f->parse();
  return f;
}

void GgufFile::parse() {
  Cursor c(base_, size_, path_);
  if (size_ < 4 || std::memcmp(base_, "GGUF", 4) != 0) {
    fail(ErrorCode::kFormat, path_ + ": not a GGUF file (magic at offset 0 is not 'GGUF')");
  }
  c.read<uint32_t>("magic");
  version_ = c.read<uint32_t>("version");
  if (version_ < 2 || version_ > 3) c.error("version", "unsupported GGUF version " + std::to_string(version_));
  uint64_t n_tensors = c.read<uint64_t>("tensor_count");
  uint64_t n_kv = c.read<uint64_t>("kv_count");
  // A key takes >= 12 bytes and a tensor info >= 28: impossible counts are corruption.
  if (n_kv > c.remaining() / 12) c.error("kv_count", "kv_count " + std::to_string(n_kv) + " cannot fit in the file");
  for (uint64_t k = 0; k < n_kv; ++k) {
    std::string key = c.read_string("metadata key #" + std::to_string(k));
    uint32_t t = c.read<uint32_t>(key + ".type");
    if (t > static_cast<uint32_t>(GgufType::FLOAT64)) c.error(key, "invalid value type " + std::to_string(t));
    GgufValue v;
    read_value(c, static_cast<GgufType>(t), v, key, 0);
    if (kv_.count(key)) c.error(key, "duplicate metadata key");
    kv_.emplace(std::move(key), std::move(v));
  }
  if (auto* a = find("general.alignment")) {
    if (!a->is_integer() || a->as_int() <= 0 || (a->as_int() & (a->as_int() - 1)) != 0) {
      fail(ErrorCode::kFormat,
           path_ + ": general.alignment must be a power of two, got " + std::to_string(a->as_int()));
    }
    alignment_ = static_cast<uint64_t>(a->as_int());
  }
  if (n_tensors > c.remaining() / 28)
    c.error("tensor_count", "tensor_count " + std::to_string(n_tensors) + " cannot fit in the file");
  tensors_.resize(n_tensors);
  for (uint64_t k = 0; k < n_tensors; ++k) {
    GgufTensorInfo& ti = tensors_[k];
    ti.name = c.read_string("tensor #" + std::to_string(k) + " name");
    const std::string field = "tensor '" + ti.name + "'";
    uint32_t n_dims = c.read<uint32_t>(field + " n_dims");
    if (n_dims < 1 || n_dims > 4) c.error(field, "n_dims " + std::to_string(n_dims) + " is outside 1..4");
    ti.ne.resize(n_dims);
    int64_t n_el = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      uint64_t dim = c.read<uint64_t>(field + " ne[" + std::to_string(d) + "]");
      if (dim == 0 || dim > (uint64_t(1) << 40) || n_el > (int64_t(1) << 50) / static_cast<int64_t>(dim)) {
        c.error(field, "dimension " + std::to_string(dim) + " is invalid");
      }
      ti.ne[d] = static_cast<int64_t>(dim);
      n_el *= static_cast<int64_t>(dim);
    }
    uint32_t type = c.read<uint32_t>(field + " type");
    const TypeTraits* tr = type_traits(type);
    if (!tr) c.error(field, "unknown tensor type id " + std::to_string(type));
    ti.type = static_cast<GgmlType>(type);
    if (ti.ne[0] % tr->block_size != 0) {
      c.error(field, "row length " + std::to_string(ti.ne[0]) + " is not a multiple of the " + tr->name +
                         " block size " + std::to_string(tr->block_size));
    }
    ti.nbytes = static_cast<uint64_t>(n_el / tr->block_size) * tr->block_bytes;
    ti.offset = c.read<uint64_t>(field + " offset");
    if (ti.offset % alignment_ != 0)
      c.error(field, "data offset " + std::to_string(ti.offset) + " is not aligned to " + std::to_string(alignment_));
    if (tensor_index_.count(ti.name)) c.error(field, "duplicate tensor name");
    tensor_index_[ti.name] = k;
  }
  uint64_t data_start = (c.pos() + alignment_ - 1) / alignment_ * alignment_;
  if (n_tensors > 0 && data_start > size_) {
    fail(ErrorCode::kFormat, path_ + ": truncated file: tensor data section would start at offset " +
                                 std::to_string(data_start) + " past the end (" + std::to_string(size_) + " bytes)");
  }
  for (auto& ti : tensors_) {
    uint64_t begin = data_start + ti.offset;
    if (ti.offset > size_ || begin > size_ || ti.nbytes > size_ - begin) {
      std::ostringstream os;
      os << path_ << ": truncated file: tensor '" << ti.name << "' (" << type_name(static_cast<uint32_t>(ti.type))
         << ", " << ti.nbytes << " bytes) at offset " << begin << " runs past the end of the file (" << size_
         << " bytes)";
      fail(ErrorCode::kFormat, os.str());
    }
    ti.data = base_ + begin;
  }
}

const GgufValue* GgufFile::find(const std::string& key) const {
  auto it = kv_.find(key);
  return it == kv_.end() ? nullptr : &it->second;
}

const GgufTensorInfo* GgufFile::find_tensor(const std::string& name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

static std::string wrong_type(const std::string& path, const std::string& key, const GgufValue& v, const char* want) {
  return path + ": metadata '" + key + "' has type " + gguf_type_name(v.type) + ", expected " + want;
}

std::string GgufFile::get_string(const std::string& key, const std::string& def) const {
  const GgufValue* v = find(key);
  if (!v) return def;
  if (v->type != GgufType::STRING) fail(ErrorCode::kFormat, wrong_type(path_, key, *v, "string"));
  return v->s;
}

int64_t GgufFile::get_int(const std::string& key, int64_t def) const {
  const GgufValue* v = find(key);
  if (!v) return def;
  if (!v->is_integer()) fail(ErrorCode::kFormat, wrong_type(path_, key, *v, "an integer"));
  return v->as_int();
}

double GgufFile::get_float(const std::string& key, double def) const {
  const GgufValue* v = find(key);
  if (!v) return def;
  if (!v->is_float() && !v->is_integer()) fail(ErrorCode::kFormat, wrong_type(path_, key, *v, "a number"));
  return v->as_float();
}

bool GgufFile::get_bool(const std::string& key, bool def) const {
  const GgufValue* v = find(key);
  if (!v) return def;
  if (v->type != GgufType::BOOL) fail(ErrorCode::kFormat, wrong_type(path_, key, *v, "bool"));
  return v->u != 0;
}

int64_t GgufFile::require_int(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) fail(ErrorCode::kFormat, path_ + ": required metadata '" + key + "' is missing");
  return get_int(key, 0);
}

}  // namespace pyrt
