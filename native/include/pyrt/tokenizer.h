// Tokenizers built from GGUF metadata (tokenizer.ggml.*): byte-level BPE with llama.cpp's named
// pre-tokenizers, SentencePiece-style BPE with byte fallback, and SentencePiece Unigram (T5: the
// precompiled normalizer plus Viterbi segmentation). No Python needed at run time.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "pyrt/gguf.h"

namespace pyrt {

enum class TokenType : int32_t { kUndefined = 0, kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

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
  int32_t vocab_size() const { return static_cast<int32_t>(tokens_.size()); }
  int32_t bos() const { return bos_; }
  int32_t eos() const { return eos_; }
  bool add_bos() const { return add_bos_; }
  bool is_control(int32_t id) const;
  // End-of-generation tokens: EOS plus control tokens such as <|im_end|> / <|eot_id|>.
  const std::vector<int32_t>& eog_ids() const { return eog_; }
  const std::string& token_text(int32_t id) const;
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
  std::vector<std::string> tokens_;
  std::vector<TokenType> types_;
  std::vector<float> scores_;
  std::unordered_map<std::string, int32_t> token_to_id_;
  std::unordered_map<std::string, int32_t> merge_rank_;  // "left right" -> rank
  std::vector<int32_t> specials_;  // control / user-defined, longest text first
  std::vector<int32_t> eog_;
};

}  // namespace pyrt
