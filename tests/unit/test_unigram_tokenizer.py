"""SentencePiece Unigram (T5-style) tokenization against the sentencepiece library itself.

A Unigram model is trained here with sentencepiece (nmt_nfkc normalization, so the precompiled
charsmap is real), converted to GGUF metadata from the .model file (our protobuf reader) and from an
HF tokenizer.json (T5TokenizerFast), and both must produce sentencepiece's ids exactly on botchan.txt
lines and on normalization edge cases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pyruntime import Tokenizer
from tests.conftest import BOTCHAN

EDGE_CASES = [
    "Hello world",
    "  leading and   repeated   spaces  ",
    "Ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３ and ｶﾀｶﾅ",  # NFKC folds these
    "unknown: 漢字 and émigré ﬁne",  # characters outside the vocabulary become one <unk> per run
    "tab\tand\nnewline\r\n",
    "",
    " ",
    "a<sep>b <sep> c",  # user-defined symbol matched inside the segmentation
    "I don't know what you mean, said he.",
    "\u00a0non-breaking\u2003em space",
]


def _gguf_with(tok: dict[str, Any], path: Path) -> Path:
    from converters.common import add_tokenizer
    from converters.writer import AtomicGGUF

    with AtomicGGUF(path, "t5", overwrite=True, progress=False) as w:
        add_tokenizer(w, tok)
        w.add_tensor("dummy", np.zeros(4, np.float32))
    return path


def _texts() -> list[str]:
    return EDGE_CASES + BOTCHAN.read_text(encoding="utf-8").splitlines()[3000:3600]


def test_from_spm_model_matches_sentencepiece(spm_unigram_model: Path, tmp_path: Path) -> None:
    import sentencepiece as spm

    from converters.spm_model import read_spm_model

    sp = spm.SentencePieceProcessor(model_file=str(spm_unigram_model))
    meta = read_spm_model(spm_unigram_model)
    assert len(meta["precompiled_charsmap"]) > 1000, "nmt_nfkc must ship a charsmap"
    tok = Tokenizer.from_gguf(_gguf_with(meta, tmp_path / "t.gguf"))
    assert tok.kind == "unigram"
    for text in _texts():
        assert tok.encode(text, add_special=False) == sp.encode(text), repr(text)
        assert tok.encode(text) == sp.encode(text) + [1]  # T5 appends </s>
    ids = sp.encode("Hello   world, émigré 漢字")
    assert tok.decode(ids) == sp.decode(ids)


def test_from_hf_tokenizer_json_matches_sentencepiece(spm_unigram_model: Path, tmp_path: Path) -> None:
    import json
    import types

    import sentencepiece as spm
    from transformers.convert_slow_tokenizer import T5Converter

    from converters.spm_model import unigram_from_tokenizer_json

    sp = spm.SentencePieceProcessor(model_file=str(spm_unigram_model))
    # HF's own spm -> tokenizer.json conversion (what T5TokenizerFast checkpoints ship), fed the
    # attributes it reads from a slow tokenizer.
    slow = types.SimpleNamespace(
        vocab_file=str(spm_unigram_model),
        extra_ids=0,
        _extra_ids=0,
        legacy=True,
        add_prefix_space=True,
        additional_special_tokens=[],
        convert_tokens_to_ids=sp.piece_to_id,
    )
    tj = json.loads(T5Converter(slow).converted().to_str())
    tok = Tokenizer.from_gguf(_gguf_with(unigram_from_tokenizer_json(tj, "tokenizer.json"), tmp_path / "t.gguf"))
    for text in _texts():
        if "<sep>" in text:
            continue  # the HF conversion keeps user-defined symbols as plain vocabulary entries
        assert tok.encode(text, add_special=False) == sp.encode(text), repr(text)


def test_bad_spm_model_names_the_problem(tmp_path: Path) -> None:
    from converters.spm_model import SpmFormatError, read_spm_model

    bad = tmp_path / "bad.model"
    bad.write_bytes(b"\x0a\xff\x01abc")  # field 1, length 255, only 3 bytes follow
    with pytest.raises(SpmFormatError, match="offset 0"):
        read_spm_model(bad)
