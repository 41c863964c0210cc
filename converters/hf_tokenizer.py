"""tokenizer.json (HF tokenizers) -> GGUF tokenizer.ggml.* metadata for byte-level BPE models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

# Known pre-tokenizer regexes (as written in tokenizer.json) and llama.cpp's names for them.
_GPT2_RE = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_LLAMA3_RE = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
    r"\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_RE = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
    r"\s*[\r\n]+|\s+(?!\S)|\s+"
)

TOKEN_NORMAL, TOKEN_CONTROL, TOKEN_USER_DEFINED = 1, 3, 4


class TokenizerConversionError(ValueError):
    pass


def _pre_name(pre: Optional[dict[str, Any]]) -> str:
    if pre is None:
        raise TokenizerConversionError("tokenizer.json has no pre_tokenizer")
    kind = pre.get("type")
    if kind == "ByteLevel":
        if pre.get("use_regex", True):
            return "gpt-2"
    if kind == "Sequence":
        steps = pre.get("pretokenizers", [])
        types = [s.get("type") for s in steps]
        if types == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and steps[1].get("use_regex", True):
            return "smollm"
        if types and types[0] == "Split":
            regex = steps[0].get("pattern", {}).get("Regex", "")
            if regex == _LLAMA3_RE:
                return "llama-bpe"
            if regex == _QWEN2_RE:
                return "qwen2"
            if regex == _GPT2_RE:
                return "gpt-2"
    raise TokenizerConversionError(f"unsupported pre-tokenizer in tokenizer.json: {json.dumps(pre)[:300]}")


def convert_tokenizer(folder: Path, config: dict[str, Any]) -> Optional[dict[str, Any]]:
    """Metadata for the GGUF writer, or None when the folder has no tokenizer. A SentencePiece model
    (spiece.model / tokenizer.model, Unigram) wins over tokenizer.json: it is the original."""
    for name in ("spiece.model", "tokenizer.model"):
        spm = folder / name
        if spm.is_file() and config.get("model_type") in ("t5", "mt5"):
            from converters.spm_model import read_spm_model

            return read_spm_model(spm)
    path = folder / "tokenizer.json"
    if not path.is_file():
        return None
    tj = json.loads(path.read_text(encoding="utf-8"))
    model = tj.get("model", {})
    if model.get("type") == "Unigram":
        from converters.spm_model import unigram_from_tokenizer_json

        return unigram_from_tokenizer_json(tj, str(path))
    if model.get("type") != "BPE":
        raise TokenizerConversionError(
            f"{path}: only byte-level BPE tokenizers convert so far (got {model.get('type')})"
        )
    vocab: dict[str, int] = dict(model["vocab"])
    added = {t["content"]: t for t in tj.get("added_tokens", [])}
    for content, t in added.items():
        vocab[content] = t["id"]
    n = max(vocab.values()) + 1
    tokens = [f"[PAD{i}]" for i in range(n)]
    types = [TOKEN_USER_DEFINED] * n  # holes get a harmless placeholder
    for tok, i in vocab.items():
        tokens[i] = tok
        types[i] = TOKEN_NORMAL
    for t in added.values():
        types[t["id"]] = TOKEN_CONTROL if t.get("special") else TOKEN_USER_DEFINED
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    meta: dict[str, Any] = {
        "model": "gpt2",
        "pre": _pre_name(tj.get("pre_tokenizer")),
        "tokens": tokens,
        "token_types": types,
        "merges": merges,
    }
    tc_path = folder / "tokenizer_config.json"
    tc = json.loads(tc_path.read_text(encoding="utf-8")) if tc_path.is_file() else {}

    def special_id(key: str) -> Optional[int]:
        tok = tc.get(key)
        if isinstance(tok, dict):
            tok = tok.get("content")
        if isinstance(tok, str) and tok in vocab:
            return vocab[tok]
        v = config.get(f"{key}_id")
        return v if isinstance(v, int) else None

    for key in ("bos_token", "eos_token", "unk_token", "pad_token"):
        meta[key] = special_id(key)
    meta["add_bos"] = bool(tc.get("add_bos_token", False))
    if isinstance(tc.get("chat_template"), str):
        meta["chat_template"] = tc["chat_template"]
    return meta
