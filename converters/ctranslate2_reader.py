"""Reader for CTranslate2's model.bin (binary versions 1-6), numpy only.

Layout (little-endian): u32 version; [version >= 2] string spec name, u32 spec revision; u32 count;
per variable: string name, u8 rank, u32 dims[rank], dtype (u8 code in version >= 4, else u8 item
size), u32 byte count, raw data; [version >= 3] u32 alias count, (string alias, string target)*.
Strings are u16 length (including a trailing NUL) + bytes."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# CTranslate2 DataType codes.
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
_BF16 = 5


class CTranslate2FormatError(ValueError):
    pass


@dataclass
class CT2Model:
    spec: str
    revision: int
    variables: dict[str, np.ndarray] = field(default_factory=dict)

    def scalar(self, name: str) -> int:
        v = self.variables[name]
        return int(v.reshape(-1)[0])


def read_ctranslate2(path: Path) -> CT2Model:
    buf = Path(path).read_bytes()
    pos = 0

    def take(n: int, what: str) -> bytes:
        nonlocal pos
        if pos + n > len(buf):
            raise CTranslate2FormatError(f"{path}: truncated at offset {pos} while reading {what} ({n} bytes)")
        out = buf[pos : pos + n]
        pos += n
        return out

    def u32(what: str) -> int:
        return int(struct.unpack("<I", take(4, what))[0])

    def string(what: str) -> str:
        n = int(struct.unpack("<H", take(2, what))[0])
        raw = take(n, what)
        return raw[:-1].decode("utf-8", errors="replace") if n else ""

    version = u32("binary version")
    if not 1 <= version <= 6:
        raise CTranslate2FormatError(f"{path}: binary version {version} is not supported (1-6)")
    spec, revision = "", 1
    if version >= 2:
        spec = string("spec name")
        revision = u32("spec revision")
    model = CT2Model(spec, revision)
    for i in range(u32("variable count")):
        name = string(f"name of variable {i}")
        rank = take(1, f"rank of '{name}'")[0]
        dims = [u32(f"dims of '{name}'") for _ in range(rank)]
        code = take(1, f"dtype of '{name}'")[0]
        if version < 4:  # older files store the item size; 4 bytes means float32
            code = {4: 0, 1: 1, 2: 4}.get(code, 255)
        nbytes = u32(f"size of '{name}'")
        start = pos
        raw = take(nbytes, f"data of '{name}'")
        if code == _BF16:
            arr = (np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
        elif code in _DTYPES:
            arr = np.frombuffer(raw, dtype=_DTYPES[code])
        else:
            raise CTranslate2FormatError(f"{path}: variable '{name}' at offset {start} has unsupported dtype {code}")
        expected = int(np.prod(dims)) if dims else 1
        if arr.size != expected:
            raise CTranslate2FormatError(
                f"{path}: variable '{name}' at offset {start} holds {arr.size} values; its shape {dims} "
                f"needs {expected}"
            )
        model.variables[name] = arr.reshape(dims) if dims else arr
    if version >= 3:
        for i in range(u32("alias count")):
            alias, target = string(f"alias {i}"), string(f"alias target {i}")
            if target not in model.variables:
                raise CTranslate2FormatError(f"{path}: alias '{alias}' points to unknown variable '{target}'")
            model.variables[alias] = model.variables[target]
    return model
