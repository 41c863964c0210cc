"""Minimal safetensors reader (numpy only, bf16 included) so converting needs no torch."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Iterator

import numpy as np

_DTYPES = {
    "F32": np.float32,
    "F16": np.float16,
    "F64": np.float64,
    "I32": np.int32,
    "I64": np.int64,
    "I8": np.int8,
    "U8": np.uint8,
    "I16": np.int16,
    "BOOL": np.bool_,
}


class SafetensorsError(ValueError):
    pass


def read_header(path: Path) -> tuple[dict[str, dict], int]:
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise SafetensorsError(f"{path}: too short for a safetensors header")
        (n,) = struct.unpack("<Q", raw)
        size = path.stat().st_size
        if n > size - 8:
            raise SafetensorsError(f"{path}: header length {n} exceeds the file ({size} bytes)")
        try:
            header = json.loads(f.read(n))
        except json.JSONDecodeError as e:
            raise SafetensorsError(f"{path}: header is not JSON: {e}") from e
    header.pop("__metadata__", None)
    return header, 8 + n


def iter_tensors(path: Path) -> Iterator[tuple[str, np.ndarray]]:
    """(name, float32-or-native array) for every tensor; bf16 is widened to float32 exactly."""
    header, base = read_header(path)
    data = np.memmap(path, dtype=np.uint8, mode="r")
    for name, info in header.items():
        dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
        if base + end > data.size or begin > end:
            raise SafetensorsError(f"{path}: tensor '{name}' data [{begin}, {end}) runs past the end of the file")
        buf = data[base + begin : base + end]
        if dtype == "BF16":
            arr = (buf.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
        elif dtype in _DTYPES:
            arr = buf.view(_DTYPES[dtype])
        else:
            raise SafetensorsError(f"{path}: tensor '{name}' has unsupported dtype {dtype}")
        yield name, arr.reshape(shape)


def load_folder(folder: Path) -> dict[str, np.ndarray]:
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise SafetensorsError(f"{folder}: no *.safetensors files")
    out: dict[str, np.ndarray] = {}
    for f in files:
        out.update(iter_tensors(f))
    return out
