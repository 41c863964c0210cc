"""pyruntime: on-device language-model inference.

Quick start::

    import pyruntime
    model = pyruntime.load("smollm2-135m-instruct")
    print(model.generate("Once upon a time", max_new_tokens=32).text)
"""

from __future__ import annotations


def _use_installed_native_module() -> None:
    """In a source checkout (``python -m pytest`` in the repo puts it first on ``sys.path``), the
    compiled ``_core`` lives in the installed copy: add that copy to this package's search path."""
    import importlib.util
    from pathlib import Path

    if importlib.util.find_spec("pyruntime._core") is not None:
        return
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        installed = Path(str(distribution("pyruntime").locate_file("pyruntime")))
    except PackageNotFoundError:
        return
    if installed.is_dir() and installed.resolve() != Path(__file__).resolve().parent:
        __path__.append(str(installed))


_use_installed_native_module()

from pyruntime import audio, delegates, speech  # noqa: E402
from pyruntime.audio import read_wav  # noqa: E402
from pyruntime.errors import (  # noqa: E402
    ContextOverflowError,
    FormatError,
    InvalidArgumentError,
    PyruntimeError,
    TokenOutOfRangeError,
    UnknownModelError,
    UnsupportedError,
)
from pyruntime.model import Chunk, Completion, Model, Session, Stream, load  # noqa: E402
from pyruntime.speech import Transcript  # noqa: E402
from pyruntime.tokenizer import Tokenizer  # noqa: E402

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
    "Transcript",
    "UnknownModelError",
    "UnsupportedError",
    "audio",
    "delegates",
    "load",
    "read_wav",
    "speech",
]
