"""Tokenizer built from a GGUF file's metadata (runs in native code, no Python tokenizers)."""

from __future__ import annotations

import os
from typing import Sequence

from pyruntime import _core


class Tokenizer:
    """Byte-level BPE or SentencePiece tokenizer read from ``tokenizer.ggml.*`` metadata."""

    def __init__(self, native: _core.Tokenizer) -> None:
        self._t = native

    @classmethod
    def from_gguf(cls, path: str | os.PathLike[str]) -> Tokenizer:
        """Load the tokenizer of a GGUF file (a vocab-only file is enough)."""
        return cls(_core.Tokenizer.from_gguf(os.fspath(path)))

    def encode(self, text: str, add_special: bool = True, parse_special: bool = False) -> list[int]:
        """Token ids for ``text``. ``add_special`` adds BOS/EOS where the vocabulary asks for them;
        ``parse_special`` turns control tokens written in the text (``<|im_start|>``) into their ids."""
        return list(self._t.encode(text, add_special, parse_special))

    def decode(self, ids: Sequence[int]) -> str:
        """Text for ``ids``; invalid UTF-8 (a split multi-byte character) becomes U+FFFD."""
        return str(self._t.decode(list(ids)))

    def token_bytes(self, token_id: int) -> bytes:
        """The raw bytes one token stands for."""
        return bytes(self._t.token_bytes(token_id))

    def is_control(self, token_id: int) -> bool:
        return bool(self._t.is_control(token_id))

    @property
    def vocab_size(self) -> int:
        return int(self._t.vocab_size)

    @property
    def bos_id(self) -> int:
        return int(self._t.bos_id)

    @property
    def eos_id(self) -> int:
        return int(self._t.eos_id)

    @property
    def eog_ids(self) -> list[int]:
        """Tokens that end a generation (EOS, ``<|im_end|>``, ``<|eot_id|>`` ...)."""
        return list(self._t.eog_ids)

    @property
    def kind(self) -> str:
        """``"bpe"`` (byte-level BPE), ``"spm"`` (SentencePiece BPE) or ``"unigram"`` (SentencePiece Unigram, T5)."""
        return str(self._t.kind)

    @property
    def pre(self) -> str:
        """The pre-tokenizer name from the GGUF (``gpt-2``, ``llama-bpe``, ``smollm`` ...)."""
        return str(self._t.pre)
