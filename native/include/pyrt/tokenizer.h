// Tokenizers built from GGUF metadata (tokenizer.ggml.*): byte-level BPE with llama.cpp's named
// pre-tokenizers, SentencePiece-style BPE with byte fallback, and SentencePiece Unigram (T5: the
// precompiled normalizer plus Viterbi segmentation). No Python needed at run time.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "pyrt/gguf.h"

namespace pyrt {

enum class TokenType : int32_t {
  kUndefined = 0,
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6
};

// The vocabulary as one byte blob with offsets, plus an open-addressed table of ids hashed by
// text: ~15 bytes a token where a vector of strings and an unordered_map took ~90 (SmolLM2's
// 49k tokens: 0.7 MB instead of 4.3 MB resident in every process that loads the model).
class TokenTable {
 public:
  void build(const std::vector<std::string_view>& texts);
  int32_t size() const { return static_cast<int32_t>(offsets_.size()) - 1; }
  std::string_view text(int32_t id) const { return {blob_.data() + offsets_[id], offsets_[id + 1] - offsets_[id]}; }
  // The id of the first token spelled s, -1 if none.
  int32_t find(std::string_view s) const;

 private:
  std::string blob_;
  std::vector<uint32_t> offsets_{0};
  std::vector<int32_t> slots_;  // token ids, -1 empty; size a power of two
};

// BPE merges keyed by the ids of their two halves: (left, right) -> rank, open addressing.
class MergeRanks {
 public:
  void reserve(size_t n);
  void insert(int32_t left, int32_t right, int32_t rank);  // keeps the first rank of a pair
  int32_t find(int32_t left, int32_t right) const;         // -1 if the pair never merges

 private:
  static uint64_t key(int32_t l, int32_t r) { return (uint64_t(uint32_t(l)) << 32) | uint32_t(r); }
  std::vector<uint64_t> keys_;  // kEmpty where free
  std::vector<int32_t> ranks_;
  size_t used_ = 0;
};

class Tokenizer {
 public:
  enum class Kind { kBpe, kSpm, kUnigram };
  // Throws Error(kUnsupported) for tokenizer models / pre-tokenizers it does not implement.
  static std::shared_ptr<Tokenizer> from_gguf(const GgufFile& f);

  // add_special: BOS/EOS as the vocabulary asks; parse_special: control tokens written in the
  // text (e.g. "<|im_start|>") become their ids instead of being spelled out.
  std::vector<int32_t> encode(const std::string& text, bool add_special, bool parse_special) const;
  std::string decode(const std::vector<int32_t>& ids) const;
  // Raw bytes one token stands for (for streaming output with an incremental UTF-8 decoder).
  std::string token_bytes(int32_t id) const;

  Kind kind() const { return kind_; }
  const std::string& pre() const { return pre_; }
  int32_t vocab_size() const { return tokens_.size(); }
  int32_t bos() const { return bos_; }
  int32_t eos() const { return eos_; }
  bool add_bos() const { return add_bos_; }
  bool is_control(int32_t id) const;
  // End-of-generation tokens: EOS plus control tokens such as <|im_end|> / <|eot_id|>.
  const std::vector<int32_t>& eog_ids() const { return eog_; }
  std::string_view token_text(int32_t id) const;
  TokenType token_type(int32_t id) const;

 private:
  void encode_text(const std::string& text, std::vector<int32_t>& out, bool prefix_space) const;
  void bpe_word(const std::string& word, std::vector<int32_t>& out) const;
  void spm_text(const std::string& text, std::vector<int32_t>& out) const;
  // Unigram: SentencePiece normalization (charsmap, whitespace rules, "▁") then best-score segmentation.
  std::string unigram_normalize(const std::string& text) const;
  void unigram_text(const std::string& normalized, std::vector<int32_t>& out) const;
  size_t charsmap_match(const std::string& s, size_t pos, std::string* replacement) const;
  int32_t byte_token(uint8_t b) const;

  Kind kind_ = Kind::kBpe;
  std::string pre_;
  // The pre-tokenizer's regex splits, built once per vocabulary (match length at a position, 0 if none).
  std::vector<std::function<size_t(const std::vector<uint32_t>&, size_t, size_t)>> pre_splits_;
  bool ignore_merges_ = false, add_space_prefix_ = false, add_bos_ = false, add_eos_ = false;
  bool remove_extra_whitespaces_ = true;
  // Unigram normalizer: darts-clone double array (uint32 units) over UTF-8 input, and the replacement strings.
  std::vector<uint32_t> charsmap_units_;
  std::string charsmap_strings_;
  float unigram_min_score_ = 0, unigram_max_score_ = 0;
  size_t max_piece_bytes_ = 0;
  int32_t bos_ = -1, eos_ = -1, unk_ = -1;
  TokenTable tokens_;
  std::vector<TokenType> types_;
  std::vector<float> scores_;
  MergeRanks merge_rank_;
  // Merges whose halves are not both vocabulary tokens ("left right" -> rank); empty for every
  // vocabulary seen so far, kept so such a file still tokenizes exactly as its merges say.
  std::unordered_map<std::string, int32_t> text_merge_rank_;
  std::vector<int32_t> specials_;  // control / user-defined, longest text first
  std::vector<int32_t> eog_;
};

}  // namespace pyrt
