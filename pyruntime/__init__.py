"""pyruntime: on-device language-model inference.

Quick start::

    import pyruntime
    model = pyruntime.load("smollm2-135m-instruct")
    print(model.generate("Once upon a time", max_new_tokens=32).text)
"""

from __future__ import annotations

from pyruntime.errors import (
    ContextOverflowError,
    FormatError,
    InvalidArgumentError,
    PyruntimeError,
    TokenOutOfRangeError,
    UnknownModelError,
    UnsupportedError,
)
from pyruntime.model import Chunk, Completion, Model, Session, Stream, load
from pyruntime.tokenizer import Tokenizer

__version__ = "0.1.0"

__all__ = [
    "Chunk",
    "Completion",
    "ContextOverflowError",
    "FormatError",
    "InvalidArgumentError",
    "Model",
    "PyruntimeError",
    "Session",
    "Stream",
    "TokenOutOfRangeError",
    "Tokenizer",
    "UnknownModelError",
    "UnsupportedError",
    "load",
]
