// Error type of the C++ core. Inside the core errors are exceptions carrying a code; the C ABI
// (pyrt.h) and the Python module turn them into values / typed Python exceptions at the boundary.
#pragma once
#include <stdexcept>
#include <string>

namespace pyrt {

enum class ErrorCode : int {
  kOk = 0,
  kInvalidArgument = 1,  // a caller passed something unusable (empty prompt, bad option)
  kIo = 2,               // file missing / unreadable
  kFormat = 3,           // file is not a valid GGUF / is truncated / corrupt
  kUnsupported = 4,      // valid file, but an architecture or tensor type we do not run
  kOutOfRange = 5,       // token id outside the vocabulary, position outside the context
  kContextOverflow = 6,  // more tokens than the session's context holds
  kInternal = 7,
};

const char* error_code_name(ErrorCode code);

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ErrorCode code() const { return code_; }

 private:
  ErrorCode code_;
};

[[noreturn]] inline void fail(ErrorCode code, const std::string& message) {
  throw Error(code, message);
}

}  // namespace pyrt
