// UTF-8 <-> codepoints, Unicode category flags, GPT-2 byte<->unicode mapping.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace pyrt::unicode {

enum Flag : uint8_t {
  kNumber = 1,
  kLetter = 2,
  kSeparator = 4,
  kMark = 8,
  kPunct = 16,
  kSymbol = 32,
  kControl = 64,
  kWhitespace = 128,
};
uint8_t flags(uint32_t cp);
inline bool is_letter(uint32_t cp) {
  return flags(cp) & kLetter;
}
inline bool is_number(uint32_t cp) {
  return flags(cp) & kNumber;
}
inline bool is_space(uint32_t cp) {
  return flags(cp) & kWhitespace;
}
inline bool is_punct(uint32_t cp) {
  return flags(cp) & kPunct;
}

// Invalid UTF-8 bytes decode to U+FFFD one byte at a time (never throws, never over-reads).
// offsets (optional) receives each codepoint's byte offset, plus s.size() at the end.
std::vector<uint32_t> decode_utf8(const std::string& s, std::vector<size_t>* offsets = nullptr);
void append_utf8(std::string& out, uint32_t cp);
// Length in bytes of the UTF-8 sequence starting with this byte (1 for invalid leads).
size_t utf8_len(unsigned char lead);

// GPT-2 byte-level mapping: every byte to a printable codepoint and back.
const std::string& byte_to_unicode(uint8_t b);
int unicode_to_byte(uint32_t cp);  // -1 if cp is not in the mapping

}  // namespace pyrt::unicode
