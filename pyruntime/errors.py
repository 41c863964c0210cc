"""Typed exceptions raised by pyruntime. Every native error maps to one of these."""

from __future__ import annotations


class PyruntimeError(Exception):
    """Base class of every error pyruntime raises on purpose."""


class InvalidArgumentError(PyruntimeError, ValueError):
    """A caller passed something unusable: an empty prompt, a bad option value."""


class ModelIOError(PyruntimeError, OSError):
    """A file is missing or unreadable."""


class FormatError(PyruntimeError, ValueError):
    """A file is not valid GGUF, or is truncated or corrupt. The message names file, offset, field."""


class UnsupportedError(PyruntimeError, NotImplementedError):
    """A valid file that uses an architecture, tokenizer or tensor type this runtime does not run."""


class TokenOutOfRangeError(PyruntimeError, IndexError):
    """A token id outside the model's vocabulary."""


class ContextOverflowError(PyruntimeError):
    """More tokens than the session's context can hold."""


class UnknownModelError(PyruntimeError, LookupError):
    """A model name that is neither a file nor in the registry."""


class DownloadError(PyruntimeError):
    """Fetching a registered model failed (network, checksum, archive content)."""


class InternalError(PyruntimeError, RuntimeError):
    """A bug in pyruntime: please report it."""


_BY_CODE: dict[int, type[PyruntimeError]] = {
    1: InvalidArgumentError,
    2: ModelIOError,
    3: FormatError,
    4: UnsupportedError,
    5: TokenOutOfRangeError,
    6: ContextOverflowError,
    7: InternalError,
}


def from_code(code: int) -> type[PyruntimeError]:
    """The exception class for a native error code (used by the C++ module)."""
    return _BY_CODE.get(code, InternalError)
