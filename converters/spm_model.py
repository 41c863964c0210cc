"""SentencePiece tokenizers -> GGUF tokenizer metadata (llama.cpp's "t5" = Unigram), from a
sentencepiece ``.model`` file (read with a minimal protobuf decoder: no protobuf package needed) or
from a tokenizer.json whose model is Unigram (HF tokenizers)."""

from __future__ import annotations

import base64
import struct
from pathlib import Path
from typing import Any, Optional

TYPE_NORMAL, TYPE_UNKNOWN, TYPE_CONTROL, TYPE_USER_DEFINED, TYPE_UNUSED, TYPE_BYTE = 1, 2, 3, 4, 5, 6
MODEL_UNIGRAM = 1


class SpmFormatError(ValueError):
    pass


def _fields(buf: bytes, where: str) -> list[tuple[int, int, Any]]:
    """(field number, wire type, value) of one protobuf message; length-delimited values as bytes."""
    out: list[tuple[int, int, Any]] = []
    pos = 0

    def varint() -> int:
        nonlocal pos
        shift = result = 0
        while True:
            if pos >= len(buf):
                raise SpmFormatError(f"{where}: truncated varint at offset {pos}")
            b = buf[pos]
            pos += 1
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7

    while pos < len(buf):
        start = pos
        key = varint()
        field, wire = key >> 3, key & 7
        if wire == 0:
            out.append((field, wire, varint()))
        elif wire == 1:
            out.append((field, wire, buf[pos : pos + 8]))
            pos += 8
        elif wire == 2:
            n = varint()
            if pos + n > len(buf):
                raise SpmFormatError(f"{where}: field {field} at offset {start} runs past the end ({n} bytes)")
            out.append((field, wire, buf[pos : pos + n]))
            pos += n
        elif wire == 5:
            out.append((field, wire, buf[pos : pos + 4]))
            pos += 4
        else:
            raise SpmFormatError(f"{where}: unsupported wire type {wire} at offset {start}")
    return out


def read_spm_model(path: Path) -> dict[str, Any]:
    """Tokenizer metadata (for converters.common.add_tokenizer) from a SentencePiece Unigram model."""
    where = str(path)
    tokens: list[str] = []
    scores: list[float] = []
    types: list[int] = []
    trainer: dict[int, Any] = {}
    normalizer: dict[int, Any] = {}
    for field, _wire, value in _fields(Path(path).read_bytes(), where):
        if field == 1:  # SentencePiece {piece = 1, score = 2, type = 3}
            piece, score, kind = "", 0.0, TYPE_NORMAL
            for f, _w, v in _fields(value, f"{where}: piece {len(tokens)}"):
                if f == 1:
                    piece = v.decode("utf-8")
                elif f == 2:
                    score = struct.unpack("<f", v)[0]
                elif f == 3:
                    kind = int(v)
            tokens.append(piece)
            scores.append(score)
            types.append(kind)
        elif field == 2:
            trainer = {f: v for f, _w, v in _fields(value, f"{where}: trainer_spec")}
        elif field == 3:
            normalizer = {f: v for f, _w, v in _fields(value, f"{where}: normalizer_spec")}
    if not tokens:
        raise SpmFormatError(f"{where}: no pieces (not a SentencePiece model?)")
    model_type = int(trainer.get(3, MODEL_UNIGRAM))
    if model_type != MODEL_UNIGRAM:
        raise SpmFormatError(f"{where}: model_type {model_type} is not Unigram (1); only Unigram models convert so far")

    def special(field: int, default: int) -> Optional[int]:
        v = int(trainer.get(field, default))
        v = v - (1 << 64) if v >= 1 << 63 else v  # int32 -1 is a 10-byte varint
        return v if 0 <= v < len(tokens) else None

    return {
        "model": "t5",
        "pre": "default",
        "tokens": tokens,
        "scores": scores,
        "token_types": types,
        "unk_token": special(40, 0),
        "bos_token": special(41, 1),
        "eos_token": special(42, 2),
        "pad_token": special(43, -1),
        "add_bos": False,
        "add_eos": True,
        "add_space_prefix": bool(normalizer.get(3, 1)),
        "remove_extra_whitespaces": bool(normalizer.get(4, 1)),
        "precompiled_charsmap": bytes(normalizer.get(2, b"")),
    }


def unigram_from_tokenizer_json(tj: dict[str, Any], where: str) -> dict[str, Any]:
    """The same metadata from an HF tokenizer.json with a Unigram model (e.g. T5TokenizerFast)."""
    model = tj["model"]
    vocab = model["vocab"]
    tokens = [p for p, _ in vocab]
    scores = [float(s) for _, s in vocab]
    types = [TYPE_NORMAL] * len(tokens)
    unk = model.get("unk_id")
    if isinstance(unk, int):
        types[unk] = TYPE_UNKNOWN
    ids = {}
    for t in tj.get("added_tokens", []):
        ids[t["content"]] = t["id"]
        if t["id"] < len(types) and t["id"] != unk:
            types[t["id"]] = TYPE_CONTROL if t.get("special") else TYPE_USER_DEFINED
    charsmap = b""
    norm = tj.get("normalizer") or {}
    steps = norm.get("normalizers", [norm]) if norm.get("type") == "Sequence" else [norm]
    for step in steps:
        if step and step.get("type") == "Precompiled":
            charsmap = base64.b64decode(step.get("precompiled_charsmap") or "")
        elif step and step.get("type") not in ("Replace", "Strip", None):
            raise SpmFormatError(f"{where}: Unigram normalizer step '{step.get('type')}' is not supported")
    pre = tj.get("pre_tokenizer") or {}
    pre_steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    prefix = any(p.get("type") == "Metaspace" and p.get("prepend_scheme", "always") != "never" for p in pre_steps if p)
    return {
        "model": "t5",
        "pre": "default",
        "tokens": tokens,
        "scores": scores,
        "token_types": types,
        "unk_token": unk if isinstance(unk, int) else None,
        "bos_token": None,
        "eos_token": ids.get("</s>"),
        "pad_token": ids.get("<pad>"),
        "add_bos": False,
        "add_eos": "</s>" in ids,
        "add_space_prefix": prefix,
        "remove_extra_whitespaces": True,
        "precompiled_charsmap": charsmap,
    }
