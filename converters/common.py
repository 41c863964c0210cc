"""Pieces every HF-folder converter shares: config reading, file types, tokenizer metadata."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FILE_TYPE = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q8_0": 7}


class ConversionError(ValueError):
    pass


def read_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    if not path.is_file():
        raise ConversionError(f"{folder}: no config.json")
    try:
        cfg = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConversionError(f"{path}: not valid JSON: {e}") from e
    if not isinstance(cfg, dict):
        raise ConversionError(f"{path}: expected a JSON object")
    return cfg


def add_tokenizer(w: Any, tok: dict[str, Any]) -> None:
    """Writes the tokenizer.ggml.* keys of a dict from converters.hf_tokenizer.convert_tokenizer."""
    w.add_tokenizer_model(tok["model"])
    w.add_tokenizer_pre(tok["pre"])
    w.add_token_list(tok["tokens"])
    w.add_token_types(tok["token_types"])
    if tok.get("merges"):
        w.add_token_merges(tok["merges"])
    if tok.get("scores") is not None:
        w.add_token_scores(tok["scores"])
    for key, fn in (
        ("bos_token", w.add_bos_token_id),
        ("eos_token", w.add_eos_token_id),
        ("unk_token", w.add_unk_token_id),
        ("pad_token", w.add_pad_token_id),
    ):
        if tok.get(key) is not None:
            fn(tok[key])
    w.add_add_bos_token(tok["add_bos"])
    if "add_space_prefix" in tok:
        w.add_add_space_prefix(tok["add_space_prefix"])
    if "remove_extra_whitespaces" in tok:
        w.add_remove_extra_whitespaces(tok["remove_extra_whitespaces"])
    if tok.get("precompiled_charsmap"):
        w.add_precompiled_charsmap(tok["precompiled_charsmap"])
    if "add_eos" in tok:
        w.add_add_eos_token(tok["add_eos"])
    if "chat_template" in tok:
        w.add_chat_template(tok["chat_template"])
