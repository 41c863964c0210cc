"""Reading audio for speech models: a RIFF/WAVE reader (PCM 8/16/24/32-bit and IEEE float 32/64,
any channel count, mixed down to mono) with errors that name the file, offset and field."""

from __future__ import annotations

import os
import struct
from typing import TYPE_CHECKING, Union

from pyruntime.errors import FormatError

if TYPE_CHECKING:
    import numpy as np

_PCM, _FLOAT, _EXTENSIBLE = 1, 3, 0xFFFE


def read_wav(path: Union[str, os.PathLike[str]]) -> tuple[np.ndarray, int]:
    """(mono float32 samples in [-1, 1], sample rate) of a WAV file."""
    import numpy as np

    name = os.fspath(path)
    with open(name, "rb") as f:
        data = f.read()
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise FormatError(f"{name}: not a RIFF/WAVE file (offset 0: {data[:4]!r}, offset 8: {data[8:12]!r})")
    pos, fmt, samples = 12, None, None
    while pos + 8 <= len(data):
        chunk, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body = data[pos + 8 : pos + 8 + size]
        if chunk == b"fmt ":
            if size < 16:
                raise FormatError(f"{name}: offset {pos}: 'fmt ' chunk of {size} bytes is too short")
            tag, channels, rate, _, align, bits = struct.unpack_from("<HHIIHH", body)
            if tag == _EXTENSIBLE and size >= 26:
                tag = struct.unpack_from("<H", body, 24)[0]
            fmt = (tag, channels, rate, align, bits, pos)
        elif chunk == b"data":
            samples = (body, pos)
        pos += 8 + size + (size & 1)
    if fmt is None:
        raise FormatError(f"{name}: no 'fmt ' chunk")
    if samples is None:
        raise FormatError(f"{name}: no 'data' chunk")
    tag, channels, rate, align, bits, fmt_at = fmt
    if channels < 1 or rate < 1:
        raise FormatError(f"{name}: offset {fmt_at}: channels={channels}, sample rate={rate} are invalid")
    body, data_at = samples
    width = bits // 8
    if tag == _PCM and bits in (8, 16, 24, 32):
        if bits == 24:
            raw = np.frombuffer(body[: len(body) // 3 * 3], dtype=np.uint8).reshape(-1, 3).astype(np.int32)
            ints = (raw[:, 0] | (raw[:, 1] << 8) | (raw[:, 2] << 16)) << 8 >> 8  # sign-extend
            x = ints.astype(np.float32) / float(1 << 23)
        elif bits == 8:
            x = (np.frombuffer(body, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
        else:
            dt = np.int16 if bits == 16 else np.int32
            x = np.frombuffer(body[: len(body) // width * width], dtype=dt).astype(np.float32) / float(1 << (bits - 1))
    elif tag == _FLOAT and bits in (32, 64):
        ft = np.dtype(np.float32 if bits == 32 else np.float64)
        x = np.frombuffer(body[: len(body) // width * width], dtype=ft).astype(np.float32)
    else:
        raise FormatError(
            f"{name}: offset {fmt_at}: format tag {tag} with {bits} bits per sample is not supported "
            "(PCM 8/16/24/32-bit or IEEE float 32/64)"
        )
    if x.size % channels:
        raise FormatError(
            f"{name}: offset {data_at}: data holds {x.size} samples, not a multiple of {channels} channels"
        )
    if align != channels * width:
        raise FormatError(f"{name}: offset {fmt_at}: block align {align} != channels x bytes per sample")
    return x.reshape(-1, channels).mean(axis=1).astype(np.float32), int(rate)
