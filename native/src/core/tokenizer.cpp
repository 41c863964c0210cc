#include "pyrt/tokenizer.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <queue>

#include "core/unicode.h"
#include "pyrt/error.h"

namespace pyrt {

namespace {

using unicode::is_letter;
using unicode::is_number;
using unicode::is_punct;
using unicode::is_space;

// A matcher returns the length (in codepoints) of the match at `pos`, or 0.
using Matcher = std::function<size_t(const std::vector<uint32_t>& cp, size_t pos, size_t end)>;

bool is_other(uint32_t c) {
  return !is_space(c) && !is_letter(c) && !is_number(c);
}
size_t run(const std::vector<uint32_t>& cp, size_t pos, size_t end, bool (*pred)(uint32_t)) {
  size_t i = pos;
  while (i < end && pred(cp[i])) ++i;
  return i - pos;
}
uint32_t lower_ascii(uint32_t c) {
  return (c >= 'A' && c <= 'Z') ? c + 32 : c;
}

// 's 't 're 've 'm 'll 'd (optionally case-insensitive, as in the Llama-3 pattern).
size_t contraction(const std::vector<uint32_t>& cp, size_t pos, size_t end, bool icase) {
  if (cp[pos] != '\'' || pos + 1 >= end) return 0;
  auto at = [&](size_t i) { return i < end ? (icase ? lower_ascii(cp[i]) : cp[i]) : 0u; };
  const uint32_t a = at(pos + 1), b = at(pos + 2);
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
  if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
  return 0;
}

// Whitespace alternatives shared by both families: \s+(?!\S) | \s+
size_t trailing_space(const std::vector<uint32_t>& cp, size_t pos, size_t end) {
  const size_t n = run(cp, pos, end, is_space);
  if (n == 0) return 0;
  if (pos + n == end || n == 1) return n;
  return n - 1;  // leave the last space to prefix the following word
}

// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
size_t match_gpt2(const std::vector<uint32_t>& cp, size_t pos, size_t end) {
  if (size_t n = contraction(cp, pos, end, false)) return n;
  const size_t sp = (cp[pos] == ' ' && pos + 1 < end) ? 1 : 0;
  const uint32_t c = cp[pos + sp];
  if (is_letter(c)) return sp + run(cp, pos + sp, end, is_letter);
  if (is_number(c)) return sp + run(cp, pos + sp, end, is_number);
  if (is_other(c)) return sp + run(cp, pos + sp, end, is_other);
  return trailing_space(cp, pos, end);
}

bool is_newline(uint32_t c) {
  return c == '\r' || c == '\n';
}

// (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,max_digits}|
// ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
size_t match_llama3(const std::vector<uint32_t>& cp, size_t pos, size_t end, size_t max_digits) {
  if (size_t n = contraction(cp, pos, end, true)) return n;
  const uint32_t c = cp[pos];
  if (!is_newline(c) && !is_letter(c) && !is_number(c) && pos + 1 < end && is_letter(cp[pos + 1])) {
    return 1 + run(cp, pos + 1, end, is_letter);
  }
  if (is_letter(c)) return run(cp, pos, end, is_letter);
  if (is_number(c)) return std::min(max_digits, run(cp, pos, end, is_number));
  const size_t sp = (c == ' ' && pos + 1 < end && is_other(cp[pos + 1])) ? 1 : 0;
  if (is_other(cp[pos + sp])) {
    size_t n = sp + run(cp, pos + sp, end, is_other);
    return n + run(cp, pos + n, end, is_newline);
  }
  const size_t ws = run(cp, pos, end, is_space);
  for (size_t k = ws; k > 0; --k) {
    if (is_newline(cp[pos + k - 1])) return k;  // \s*[\r\n]+ ends at the last newline of the run
  }
  return trailing_space(cp, pos, end);
}

template <typename Pred>
size_t optional_space_then_run(const std::vector<uint32_t>& cp, size_t pos, size_t end, Pred pred) {
  const size_t sp = (is_space(cp[pos]) && pos + 1 < end && pred(cp[pos + 1])) ? 1 : 0;
  const size_t n = run(cp, pos + sp, end, pred);
  return n ? sp + n : 0;
}

bool is_cjk_deepseek(uint32_t c) {
  return (c >= 0x4E00 && c <= 0x9FA5) || (c >= 0x0800 && c <= 0x4E00) || (c >= 0xAC00 && c <= 0xD7FF);
}
bool is_falcon_punct(uint32_t c) {
  return is_punct(c) || c == '$' || c == '+' || c == '<' || c == '=' || c == '>' || c == '^' || c == '~' || c == '|' ||
         c == '`';
}
bool is_ascii_digit(uint32_t c) {
  return c >= '0' && c <= '9';
}

// Each pre-tokenizer is a sequence of regex splits; every split keeps the unmatched text too.
std::vector<Matcher> pre_tokenizer(const std::string& pre, int* kind) {
  const Matcher gpt2 = match_gpt2;
  const Matcher digit = [](const std::vector<uint32_t>& cp, size_t pos, size_t) -> size_t {
    return is_number(cp[pos]) ? 1 : 0;
  };
  *kind = 0;
  if (pre == "gpt-2" || pre == "gpt2" || pre == "default" || pre.empty()) return {gpt2};
  if (pre == "llama-bpe" || pre == "llama3" || pre == "dbrx" || pre == "smaug-bpe") {
    *kind = 1;  // Llama-3 family: ignore_merges
    return {[](const std::vector<uint32_t>& cp, size_t p, size_t e) { return match_llama3(cp, p, e, 3); }};
  }
  if (pre == "qwen2")
    return {[](const std::vector<uint32_t>& cp, size_t p, size_t e) { return match_llama3(cp, p, e, 1); }};
  if (pre == "starcoder" || pre == "smollm" || pre == "refact") return {digit, gpt2};
  if (pre == "falcon") {
    return {[](const std::vector<uint32_t>& cp, size_t p, size_t e) { return run(cp, p, e, is_falcon_punct); }, gpt2,
            [](const std::vector<uint32_t>& cp, size_t p, size_t e) -> size_t {
              return (p + 3 <= e && is_ascii_digit(cp[p]) && is_ascii_digit(cp[p + 1]) && is_ascii_digit(cp[p + 2]))
                         ? 3
                         : 0;
            }};
  }
  if (pre == "deepseek-coder") {
    return {
        [](const std::vector<uint32_t>& cp, size_t p, size_t) -> size_t { return is_newline(cp[p]) ? 1 : 0; },
        [](const std::vector<uint32_t>& cp, size_t p, size_t e) {
          return optional_space_then_run(cp, p, e, is_letter);
        },
        [](const std::vector<uint32_t>& cp, size_t p, size_t e) { return optional_space_then_run(cp, p, e, is_punct); },
        [](const std::vector<uint32_t>& cp, size_t p, size_t e) { return run(cp, p, e, is_cjk_deepseek); }, digit};
  }
  fail(ErrorCode::kUnsupported,
       "unsupported pre-tokenizer '" + pre +
           "' (supported: gpt-2, llama-bpe, qwen2, starcoder, smollm, falcon, deepseek-coder)");
}

// Apply the splits in order; returns [begin, end) codepoint ranges.
std::vector<std::pair<size_t, size_t>> split(const std::vector<uint32_t>& cp, const std::vector<Matcher>& matchers) {
  std::vector<std::pair<size_t, size_t>> parts{{0, cp.size()}};
  for (const auto& m : matchers) {
    std::vector<std::pair<size_t, size_t>> next;
    for (auto [b, e] : parts) {
      size_t pos = b, pending = b;
      while (pos < e) {
        const size_t n = m(cp, pos, e);
        if (n == 0) {
          ++pos;
          continue;
        }
        if (pending < pos) next.emplace_back(pending, pos);
        next.emplace_back(pos, pos + n);
        pos += n;
        pending = pos;
      }
      if (pending < e) next.emplace_back(pending, e);
    }
    parts.swap(next);
  }
  return parts;
}

const std::string kSpmSpace = "\xE2\x96\x81";  // U+2581 '▁'

// A doubly linked list of the UTF-8 characters of s: the starting symbols of both BPE merges.
struct Sym {
  size_t off, len;
  int prev, next;
};
std::vector<Sym> utf8_symbols(const std::string& s) {
  std::vector<Sym> syms;
  for (size_t i = 0; i < s.size();) {
    const size_t len = std::min(unicode::utf8_len(static_cast<unsigned char>(s[i])), s.size() - i);
    syms.push_back({i, len, static_cast<int>(syms.size()) - 1, static_cast<int>(syms.size()) + 1});
    i += len;
  }
  if (!syms.empty()) syms.back().next = -1;
  return syms;
}

size_t pow2_at_least(size_t n) {
  size_t p = 16;
  while (p < n) p <<= 1;
  return p;
}

constexpr uint64_t kEmptyPair = ~uint64_t(0);  // ids are below 2^31, so no pair key is all ones

// First slot of a pair key: both ids mixed into the low bits the mask keeps (a plain multiply would
// leave them depending on the right id alone, piling up every merge that ends in the same token).
size_t pair_slot(uint64_t k, size_t mask) {
  k ^= k >> 31;
  k *= 0xBF58476D1CE4E5B9ull;
  k ^= k >> 29;
  return static_cast<size_t>(k) & mask;
}

}  // namespace

void TokenTable::build(const std::vector<std::string_view>& texts) {
  size_t bytes = 0;
  for (std::string_view t : texts) bytes += t.size();
  if (bytes > UINT32_MAX) fail(ErrorCode::kFormat, "the vocabulary's texts exceed 4 GiB");
  blob_.clear();
  blob_.reserve(bytes);
  offsets_.assign(1, 0);
  offsets_.reserve(texts.size() + 1);
  for (std::string_view t : texts) {
    blob_.append(t);
    offsets_.push_back(static_cast<uint32_t>(blob_.size()));
  }
  slots_.assign(pow2_at_least(texts.size() * 2), -1);  // at most half full: short probe runs
  const size_t mask = slots_.size() - 1;
  for (int32_t id = 0; id < size(); ++id) {
    const std::string_view t = text(id);
    for (size_t i = std::hash<std::string_view>{}(t)&mask;; i = (i + 1) & mask) {
      if (slots_[i] < 0) {
        slots_[i] = id;
        break;
      }
      if (text(slots_[i]) == t) break;  // a duplicate text: the first id keeps it
    }
  }
}

int32_t TokenTable::find(std::string_view s) const {
  if (slots_.empty()) return -1;
  const size_t mask = slots_.size() - 1;
  for (size_t i = std::hash<std::string_view>{}(s)&mask;; i = (i + 1) & mask) {
    const int32_t id = slots_[i];
    if (id < 0 || text(id) == s) return id;
  }
}

void MergeRanks::reserve(size_t n) {
  keys_.assign(pow2_at_least(n + n / 2), kEmptyPair);  // at most 2/3 full
  ranks_.assign(keys_.size(), -1);
  used_ = 0;
}

void MergeRanks::insert(int32_t left, int32_t right, int32_t rank) {
  if ((used_ + 1) * 3 > keys_.size() * 2) {  // grow: rehash what is there
    std::vector<uint64_t> old_keys = std::move(keys_);
    std::vector<int32_t> old_ranks = std::move(ranks_);
    reserve(old_keys.size());
    for (size_t i = 0; i < old_keys.size(); ++i) {
      if (old_keys[i] != kEmptyPair) insert(int32_t(old_keys[i] >> 32), int32_t(uint32_t(old_keys[i])), old_ranks[i]);
    }
  }
  const uint64_t k = key(left, right);
  const size_t mask = keys_.size() - 1;
  for (size_t i = pair_slot(k, mask);; i = (i + 1) & mask) {
    if (keys_[i] == k) return;
    if (keys_[i] == kEmptyPair) {
      keys_[i] = k;
      ranks_[i] = rank;
      ++used_;
      return;
    }
  }
}

int32_t MergeRanks::find(int32_t left, int32_t right) const {
  if (left < 0 || right < 0 || keys_.empty()) return -1;
  const uint64_t k = key(left, right);
  const size_t mask = keys_.size() - 1;
  for (size_t i = pair_slot(k, mask);; i = (i + 1) & mask) {
    if (keys_[i] == k) return ranks_[i];
    if (keys_[i] == kEmptyPair) return -1;
  }
}

std::shared_ptr<Tokenizer> Tokenizer::from_gguf(const GgufFile& f) {
  auto t = std::shared_ptr<Tokenizer>(new Tokenizer());
  const std::string model = f.get_string("tokenizer.ggml.model");
  if (model.empty()) fail(ErrorCode::kFormat, f.path() + ": no tokenizer in this file (tokenizer.ggml.model missing)");
  const GgufValue* toks = f.find("tokenizer.ggml.tokens");
  if (!toks || toks->type != GgufType::ARRAY || toks->array_type != GgufType::STRING) {
    fail(ErrorCode::kFormat, f.path() + ": tokenizer.ggml.tokens missing or not an array of strings");
  }
  t->tokens_.build(toks->array_str);
  const size_t n = toks->array_str.size();
  t->types_.assign(n, TokenType::kNormal);
  if (const GgufValue* tt = f.find("tokenizer.ggml.token_type")) {
    if (tt->type != GgufType::ARRAY || tt->array_int.size() != n) {
      fail(ErrorCode::kFormat,
           f.path() + ": tokenizer.ggml.token_type must be an integer array as long as the vocabulary");
    }
    for (size_t i = 0; i < n; ++i) t->types_[i] = static_cast<TokenType>(tt->array_int[i]);
  }

  t->pre_ = f.get_string("tokenizer.ggml.pre", "default");
  if (model == "gpt2") {
    t->kind_ = Kind::kBpe;
    int pre_kind = 0;
    t->pre_splits_ = pre_tokenizer(t->pre_, &pre_kind);  // also rejects unknown names early
    t->ignore_merges_ = pre_kind == 1;
    const GgufValue* merges = f.find("tokenizer.ggml.merges");
    if (!merges || merges->type != GgufType::ARRAY || merges->array_type != GgufType::STRING) {
      fail(ErrorCode::kFormat, f.path() + ": BPE tokenizer without tokenizer.ggml.merges");
    }
    t->merge_rank_.reserve(merges->array_str.size());
    for (size_t i = 0; i < merges->array_str.size(); ++i) {
      const std::string_view m = merges->array_str[i];
      const size_t space = m.find(' ', 1);  // halves never start with a space: byte-level BPE spells it 'Ġ'
      const int32_t l = space == std::string_view::npos ? -1 : t->tokens_.find(m.substr(0, space));
      const int32_t r = l < 0 ? -1 : t->tokens_.find(m.substr(space + 1));
      if (r >= 0)
        t->merge_rank_.insert(l, r, static_cast<int32_t>(i));
      else
        t->text_merge_rank_.emplace(m, static_cast<int32_t>(i));
    }
    t->add_bos_ = pre_kind == 1;
  } else if (model == "llama") {
    t->kind_ = Kind::kSpm;
    const GgufValue* sc = f.find("tokenizer.ggml.scores");
    if (!sc || sc->type != GgufType::ARRAY || sc->array_float.size() != n) {
      fail(ErrorCode::kFormat,
           f.path() + ": SentencePiece tokenizer needs tokenizer.ggml.scores as long as the vocabulary");
    }
    t->scores_.assign(sc->array_float.begin(), sc->array_float.end());
    t->add_space_prefix_ = true;
    t->add_bos_ = true;
  } else if (model == "t5") {  // SentencePiece Unigram, llama.cpp's name for it
    t->kind_ = Kind::kUnigram;
    const GgufValue* sc = f.find("tokenizer.ggml.scores");
    if (!sc || sc->type != GgufType::ARRAY || sc->array_float.size() != n) {
      fail(ErrorCode::kFormat, f.path() + ": Unigram tokenizer needs tokenizer.ggml.scores as long as the vocabulary");
    }
    t->scores_.assign(sc->array_float.begin(), sc->array_float.end());
    t->add_space_prefix_ = true;
    t->add_eos_ = true;  // T5 appends </s>
    t->remove_extra_whitespaces_ = f.get_bool("tokenizer.ggml.remove_extra_whitespaces", true);
    if (const GgufValue* cm = f.find("tokenizer.ggml.precompiled_charsmap")) {
      std::string blob;
      for (int64_t b : cm->array_int) blob += static_cast<char>(static_cast<uint8_t>(b));
      if (!blob.empty()) {
        uint32_t trie_bytes = 0;
        if (blob.size() < 4) fail(ErrorCode::kFormat, f.path() + ": tokenizer.ggml.precompiled_charsmap is truncated");
        std::memcpy(&trie_bytes, blob.data(), 4);
        if (trie_bytes % 4 || 4 + size_t(trie_bytes) > blob.size()) {
          fail(ErrorCode::kFormat, f.path() + ": tokenizer.ggml.precompiled_charsmap: trie size " +
                                       std::to_string(trie_bytes) + " does not fit its " + std::to_string(blob.size()) +
                                       " bytes");
        }
        t->charsmap_units_.resize(trie_bytes / 4);
        std::memcpy(t->charsmap_units_.data(), blob.data() + 4, trie_bytes);
        t->charsmap_strings_ = blob.substr(4 + trie_bytes);
      }
    }
    t->unigram_min_score_ = INFINITY;
    t->unigram_max_score_ = -INFINITY;
    for (size_t i = 0; i < n; ++i) {
      if (t->types_[i] != TokenType::kNormal) continue;
      t->unigram_min_score_ = std::min(t->unigram_min_score_, t->scores_[i]);
      t->unigram_max_score_ = std::max(t->unigram_max_score_, t->scores_[i]);
    }
    for (size_t i = 0; i < n; ++i)
      t->max_piece_bytes_ = std::max(t->max_piece_bytes_, t->tokens_.text(int32_t(i)).size());
  } else {
    fail(ErrorCode::kUnsupported,
         f.path() + ": unsupported tokenizer model '" + model + "' (supported: gpt2, llama, t5)");
  }
  t->add_space_prefix_ = f.get_bool("tokenizer.ggml.add_space_prefix", t->add_space_prefix_);
  t->add_bos_ = f.get_bool("tokenizer.ggml.add_bos_token", t->add_bos_);
  t->add_eos_ = f.get_bool("tokenizer.ggml.add_eos_token", false);
  auto id_or = [&](const char* key) {
    int64_t v = f.get_int(key, -1);
    return (v >= 0 && v < static_cast<int64_t>(n)) ? static_cast<int32_t>(v) : -1;
  };
  t->bos_ = id_or("tokenizer.ggml.bos_token_id");
  t->eos_ = id_or("tokenizer.ggml.eos_token_id");
  t->unk_ = id_or("tokenizer.ggml.unknown_token_id");
  if (t->add_bos_ && t->bos_ < 0) t->add_bos_ = false;

  for (size_t i = 0; i < n; ++i) {
    if ((t->types_[i] == TokenType::kControl || t->types_[i] == TokenType::kUserDefined) &&
        !t->tokens_.text(int32_t(i)).empty()) {
      t->specials_.push_back(static_cast<int32_t>(i));
    }
  }
  std::stable_sort(t->specials_.begin(), t->specials_.end(),
                   [&](int32_t a, int32_t b) { return t->tokens_.text(a).size() > t->tokens_.text(b).size(); });
  if (t->eos_ >= 0) t->eog_.push_back(t->eos_);
  for (const char* name :
       {"<|im_end|>", "<|eot_id|>", "<|end|>", "<|endoftext|>", "<end_of_turn>", "<|end_of_text|>"}) {
    const int32_t id = t->tokens_.find(name);
    if (id >= 0 && t->types_[id] == TokenType::kControl &&
        std::find(t->eog_.begin(), t->eog_.end(), id) == t->eog_.end()) {
      t->eog_.push_back(id);
    }
  }
  return t;
}

bool Tokenizer::is_control(int32_t id) const {
  return id >= 0 && id < vocab_size() && types_[id] == TokenType::kControl;
}

std::string_view Tokenizer::token_text(int32_t id) const {
  if (id < 0 || id >= vocab_size()) {
    fail(ErrorCode::kOutOfRange,
         "token id " + std::to_string(id) + " is outside the vocabulary (0.." + std::to_string(vocab_size() - 1) + ")");
  }
  return tokens_.text(id);
}

TokenType Tokenizer::token_type(int32_t id) const {
  token_text(id);
  return types_[id];
}

int32_t Tokenizer::byte_token(uint8_t b) const {
  char buf[8];
  std::snprintf(buf, sizeof(buf), "<0x%02X>", b);
  int32_t id = tokens_.find(buf);
  if (id < 0) id = tokens_.find(std::string_view(reinterpret_cast<const char*>(&b), 1));
  if (id >= 0) return id;
  if (unk_ >= 0) return unk_;
  fail(ErrorCode::kFormat,
       std::string("the vocabulary cannot encode byte ") + buf + ": no byte token and no unknown token");
}

std::vector<int32_t> Tokenizer::encode(const std::string& text, bool add_special, bool parse_special) const {
  std::vector<int32_t> out;
  if (add_special && add_bos_) out.push_back(bos_);
  // Partition the text around special tokens: user-defined ones always, control ones on request.
  struct Frag {
    size_t begin, end;
    int32_t token;  // -1 for raw text
  };
  std::vector<Frag> frags;
  if (!text.empty()) frags.push_back({0, text.size(), -1});
  for (int32_t id : specials_) {
    if (types_[id] == TokenType::kControl && !parse_special) continue;
    // Unigram matches user-defined pieces inside its segmentation (with their own score), as SentencePiece does.
    if (types_[id] == TokenType::kUserDefined && kind_ == Kind::kUnigram) continue;
    const std::string_view s = tokens_.text(id);
    std::vector<Frag> next;
    for (const Frag& fr : frags) {
      if (fr.token >= 0) {
        next.push_back(fr);
        continue;
      }
      size_t pos = fr.begin;
      for (;;) {
        size_t hit = text.find(s, pos);
        if (hit == std::string::npos || hit + s.size() > fr.end) break;
        if (hit > pos) next.push_back({pos, hit, -1});
        next.push_back({hit, hit + s.size(), id});
        pos = hit + s.size();
      }
      if (pos < fr.end) next.push_back({pos, fr.end, -1});
    }
    frags.swap(next);
  }
  bool prev_special = true;  // SPM prefixes a space at the start and after special tokens
  for (const Frag& fr : frags) {
    if (fr.token >= 0) {
      out.push_back(fr.token);
      prev_special = true;
      continue;
    }
    encode_text(text.substr(fr.begin, fr.end - fr.begin), out, prev_special);
    prev_special = false;
  }
  if (add_special && add_eos_ && eos_ >= 0) out.push_back(eos_);
  return out;
}

void Tokenizer::encode_text(const std::string& text, std::vector<int32_t>& out, bool prefix_space) const {
  if (kind_ == Kind::kUnigram) {
    (void)prefix_space;  // the normalizer adds the dummy prefix to every text fragment
    unigram_text(unigram_normalize(text), out);
    return;
  }
  if (kind_ == Kind::kSpm) {
    std::string s = (add_space_prefix_ && prefix_space) ? " " + text : text;
    std::string escaped;
    for (char c : s) {
      if (c == ' ')
        escaped += kSpmSpace;
      else
        escaped += c;
    }
    spm_text(escaped, out);
    return;
  }
  std::vector<size_t> offsets;
  const std::vector<uint32_t> cp = unicode::decode_utf8(text, &offsets);
  for (auto [b, e] : split(cp, pre_splits_)) {
    std::string word;
    for (size_t i = offsets[b]; i < offsets[e]; ++i) word += unicode::byte_to_unicode(static_cast<uint8_t>(text[i]));
    bpe_word(word, out);
  }
}

void Tokenizer::bpe_word(const std::string& word, std::vector<int32_t>& out) const {
  if (ignore_merges_) {
    const int32_t id = tokens_.find(word);
    if (id >= 0) {
      out.push_back(id);
      return;
    }
  }
  // Symbols are UTF-8 characters in a doubly linked list; merge the lowest-ranked pair first,
  // leftmost on ties, exactly as the merges table orders them.
  std::vector<Sym> syms = utf8_symbols(word);
  if (syms.empty()) return;
  const std::string_view w = word;
  std::vector<int32_t> sym_id(syms.size());  // each symbol's token id, -1 if its text is none
  for (size_t i = 0; i < syms.size(); ++i) sym_id[i] = tokens_.find(w.substr(syms[i].off, syms[i].len));
  struct Pair {
    int32_t rank;
    int left, right;
    size_t size;
    bool operator<(const Pair& o) const { return rank != o.rank ? rank > o.rank : left > o.left; }
  };
  std::priority_queue<Pair> queue;
  auto add_pair = [&](int l, int r) {
    if (l < 0 || r < 0) return;
    int32_t rank = merge_rank_.find(sym_id[l], sym_id[r]);
    if (rank < 0 && !text_merge_rank_.empty()) {
      auto it =
          text_merge_rank_.find(word.substr(syms[l].off, syms[l].len) + " " + word.substr(syms[r].off, syms[r].len));
      if (it != text_merge_rank_.end()) rank = it->second;
    }
    if (rank >= 0) queue.push({rank, l, r, syms[l].len + syms[r].len});
  };
  for (int i = 0; i + 1 < static_cast<int>(syms.size()); ++i) add_pair(i, i + 1);
  while (!queue.empty()) {
    Pair p = queue.top();
    queue.pop();
    Sym& l = syms[p.left];
    Sym& r = syms[p.right];
    if (l.len == 0 || r.len == 0 || l.len + r.len != p.size || l.next != p.right) continue;  // stale
    l.len += r.len;
    r.len = 0;
    l.next = r.next;
    if (r.next >= 0) syms[r.next].prev = p.left;
    sym_id[p.left] = tokens_.find(w.substr(l.off, l.len));
    add_pair(l.prev, p.left);
    add_pair(p.left, l.next);
  }
  for (int i = 0; i >= 0; i = syms[i].next) {
    if (sym_id[i] >= 0) {
      out.push_back(sym_id[i]);
      continue;
    }
    const std::string_view piece = w.substr(syms[i].off, syms[i].len);
    for (size_t k = 0; k < piece.size();) {  // not in the vocabulary: fall back to its characters
      const size_t len = std::min(unicode::utf8_len(static_cast<unsigned char>(piece[k])), piece.size() - k);
      const int32_t ch = tokens_.find(piece.substr(k, len));
      if (ch >= 0) {
        out.push_back(ch);
      } else if (unk_ >= 0) {
        out.push_back(unk_);
      } else {
        fail(ErrorCode::kFormat, "the vocabulary cannot encode '" + std::string(piece.substr(k, len)) +
                                     "': no such token and no unknown token");
      }
      k += len;
    }
  }
}

void Tokenizer::spm_text(const std::string& text, std::vector<int32_t>& out) const {
  std::vector<Sym> syms = utf8_symbols(text);
  if (syms.empty()) return;
  struct Bigram {
    float score;
    int left, right;
    size_t size;
    bool operator<(const Bigram& o) const { return score != o.score ? score < o.score : left > o.left; }
  };
  std::priority_queue<Bigram> queue;
  auto add_bigram = [&](int l, int r) {
    if (l < 0 || r < 0) return;
    const std::string_view s = std::string_view(text).substr(syms[l].off, syms[l].len + syms[r].len);
    const int32_t id = tokens_.find(s);
    if (id < 0) return;
    queue.push({scores_[id], l, r, s.size()});
  };
  for (int i = 1; i < static_cast<int>(syms.size()); ++i) add_bigram(i - 1, i);
  while (!queue.empty()) {
    Bigram b = queue.top();
    queue.pop();
    Sym& l = syms[b.left];
    Sym& r = syms[b.right];
    if (l.len == 0 || r.len == 0 || l.len + r.len != b.size) continue;
    l.len += r.len;
    r.len = 0;
    l.next = r.next;
    if (r.next >= 0) syms[r.next].prev = b.left;
    add_bigram(l.prev, b.left);
    add_bigram(b.left, l.next);
  }
  // A bigram is only merged when the result is a vocabulary token, so a final symbol is either a
  // token or one character missing from the vocabulary, which falls back to byte tokens.
  for (int i = 0; i >= 0; i = syms[i].next) {
    const std::string_view piece = std::string_view(text).substr(syms[i].off, syms[i].len);
    const int32_t id = tokens_.find(piece);
    if (id >= 0) {
      out.push_back(id);
    } else {
      for (unsigned char c : piece) out.push_back(byte_token(c));
    }
  }
}
// Longest normalization rule matching s at pos (darts-clone double array, as SentencePiece stores
// it); returns the bytes consumed (0: no rule) and the replacement.
size_t Tokenizer::charsmap_match(const std::string& s, size_t pos, std::string* replacement) const {
  if (charsmap_units_.empty()) return 0;
  auto offset = [](uint32_t u) { return (u >> 10) << ((u & (1U << 9)) >> 6); };
  auto label = [](uint32_t u) { return u & ((1U << 31) | 0xFF); };
  auto has_leaf = [](uint32_t u) { return ((u >> 8) & 1) != 0; };
  const size_t n_units = charsmap_units_.size();
  size_t node = offset(charsmap_units_[0]), best = 0;
  for (size_t i = pos; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c == 0) break;
    node ^= c;
    if (node >= n_units || label(charsmap_units_[node]) != c) break;
    const bool leaf = has_leaf(charsmap_units_[node]);
    node ^= offset(charsmap_units_[node]);
    if (node >= n_units) break;
    if (leaf) {
      const uint32_t value = charsmap_units_[node] & ((1U << 31) - 1);
      if (value >= charsmap_strings_.size()) {
        fail(ErrorCode::kFormat,
             "precompiled_charsmap: replacement offset " + std::to_string(value) + " is outside its strings");
      }
      best = i - pos + 1;
      *replacement = std::string(charsmap_strings_.c_str() + value);
    }
  }
  return best;
}

std::string Tokenizer::unigram_normalize(const std::string& text) const {
  // SentencePiece's Normalizer::Normalize: rule by rule (or one UTF-8 character), dropping leading,
  // repeated and trailing spaces when remove_extra_whitespaces, spaces escaped as U+2581, a dummy prefix.
  auto next_piece = [&](size_t pos, std::string* piece) -> size_t {
    const size_t matched = charsmap_match(text, pos, piece);
    if (matched) return matched;
    const auto c = static_cast<unsigned char>(text[pos]);
    const size_t len = unicode::utf8_len(c);
    bool valid = len >= 1 && pos + len <= text.size() && (len == 1 ? c < 0x80 : (c & 0xC0) == 0xC0);
    for (size_t k = 1; valid && k < len; ++k) valid = (static_cast<unsigned char>(text[pos + k]) & 0xC0) == 0x80;
    *piece = valid ? text.substr(pos, len) : std::string("\xEF\xBF\xBD");
    return valid ? len : 1;
  };
  size_t pos = 0;
  std::string piece;
  if (remove_extra_whitespaces_) {
    while (pos < text.size()) {
      const size_t used = next_piece(pos, &piece);
      if (piece != " ") break;
      pos += used;
    }
  }
  std::string out;
  if (pos >= text.size()) return out;
  if (add_space_prefix_) out += kSpmSpace;
  bool prev_space = remove_extra_whitespaces_;
  while (pos < text.size()) {
    pos += next_piece(pos, &piece);
    size_t skip = 0;
    if (prev_space && remove_extra_whitespaces_) {
      while (skip < piece.size() && piece[skip] == ' ') ++skip;
    }
    if (skip == piece.size()) continue;
    for (size_t k = skip; k < piece.size(); ++k) {
      if (piece[k] == ' ')
        out += kSpmSpace;
      else
        out += piece[k];
    }
    prev_space = piece.back() == ' ';
  }
  if (remove_extra_whitespaces_) {
    while (out.size() >= 3 && out.compare(out.size() - 3, 3, kSpmSpace) == 0) out.resize(out.size() - 3);
  }
  return out;
}

void Tokenizer::unigram_text(const std::string& s, std::vector<int32_t>& out) const {
  // Viterbi over byte positions (only UTF-8 character boundaries are reachable). A character no
  // piece covers becomes <unk> with SentencePiece's penalty (min score - 10); runs of <unk> merge.
  if (s.empty()) return;
  constexpr float kUnkPenalty = 10.0f;
  const size_t n = s.size();
  std::vector<float> best(n + 1, -INFINITY);
  std::vector<int32_t> token(n + 1, -1);
  std::vector<size_t> from(n + 1, 0);
  best[0] = 0;
  for (size_t i = 0; i < n; ++i) {
    if (best[i] == -INFINITY) continue;
    const size_t char_len = std::min(unicode::utf8_len(static_cast<unsigned char>(s[i])), n - i);
    bool covered = false;
    for (size_t len = 1; len <= max_piece_bytes_ && i + len <= n; ++len) {
      const int32_t id = tokens_.find(std::string_view(s).substr(i, len));
      if (id < 0) continue;
      const TokenType ty = types_[id];
      float score;
      if (ty == TokenType::kNormal)
        score = scores_[id];
      else if (ty == TokenType::kUserDefined)
        score = static_cast<float>(len) * unigram_max_score_ - 0.1f;
      else
        continue;  // control, unknown, unused and byte pieces never match text
      if (len == char_len) covered = true;
      if (best[i] + score > best[i + len]) {
        best[i + len] = best[i] + score;
        token[i + len] = id;
        from[i + len] = i;
      }
    }
    if (!covered) {
      const float score = best[i] + unigram_min_score_ - kUnkPenalty;
      if (score > best[i + char_len]) {
        best[i + char_len] = score;
        token[i + char_len] = unk_;
        from[i + char_len] = i;
      }
    }
  }
  std::vector<int32_t> rev;
  for (size_t pos = n; pos > 0; pos = from[pos]) {
    if (token[pos] < 0) fail(ErrorCode::kFormat, "the vocabulary cannot encode this text: no <unk> token");
    if (!(token[pos] == unk_ && !rev.empty() && rev.back() == unk_)) rev.push_back(token[pos]);
  }
  out.insert(out.end(), rev.rbegin(), rev.rend());
}

std::string Tokenizer::token_bytes(int32_t id) const {
  const std::string_view t = token_text(id);
  const TokenType ty = types_[id];
  if (kind_ == Kind::kUnigram) {
    if (ty == TokenType::kControl) return "";
    if (ty == TokenType::kUnknown) return " \xE2\x81\x87 ";  // SentencePiece renders <unk> as " ⁇ "
  }
  if (kind_ == Kind::kSpm || kind_ == Kind::kUnigram) {
    if (ty == TokenType::kByte && t.size() == 6)
      return std::string(1, static_cast<char>(std::stoi(std::string(t.substr(3, 2)), nullptr, 16)));
    std::string s;
    for (size_t i = 0; i < t.size();) {
      if (t.compare(i, 3, kSpmSpace) == 0) {
        s += ' ';
        i += 3;
      } else {
        s += t[i++];
      }
    }
    return s;
  }
  if (ty == TokenType::kControl || ty == TokenType::kUserDefined) return std::string(t);
  std::string s;
  for (uint32_t c : unicode::decode_utf8(std::string(t))) {
    const int b = unicode::unicode_to_byte(c);
    if (b >= 0)
      s += static_cast<char>(b);
    else
      unicode::append_utf8(s, c);
  }
  return s;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string s;
  bool strip_space = (kind_ == Kind::kSpm || kind_ == Kind::kUnigram) && add_space_prefix_;
  for (int32_t id : ids) {
    std::string piece = token_bytes(id);
    if (strip_space && !piece.empty() && !is_control(id)) {
      if (piece[0] == ' ') piece.erase(0, 1);
      strip_space = false;
    }
    s += piece;
  }
  return s;
}

}  // namespace pyrt
