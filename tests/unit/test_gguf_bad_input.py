"""Truncated, corrupt and unsupported files: a typed error naming file, offset and field; never a crash."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

import pyruntime
from pyruntime import _core
from pyruntime.errors import FormatError, ModelIOError, PyruntimeError, UnsupportedError
from tests.conftest import TOKENIZER_DIR
from tests.unit.gguf_files import write_gguf


def header(n_tensors: int = 0, n_kv: int = 0, version: int = 3) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv)


def gguf_str(s: bytes) -> bytes:
    return struct.pack("<Q", len(s)) + s


def parse(data: bytes) -> tuple[int, int]:
    return _core.GGUFFile.parse_bytes(data)


def test_not_gguf(tmp_path: Path) -> None:
    p = tmp_path / "model.gguf"
    p.write_bytes(b"PK\x03\x04 this is a zip file")
    with pytest.raises(FormatError, match=r"model\.gguf: not a GGUF file"):
        _core.GGUFFile.open(str(p))
    with pytest.raises(FormatError, match="not a GGUF"):
        pyruntime.load(p)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelIOError, match="no such file"):
        pyruntime.load(tmp_path / "nope.gguf")


def test_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "empty.gguf"
    p.write_bytes(b"")
    with pytest.raises(FormatError, match="not a GGUF"):
        _core.GGUFFile.open(str(p))


def test_bad_version() -> None:
    with pytest.raises(FormatError, match="unsupported GGUF version 7"):
        parse(header(version=7))


def test_string_longer_than_file() -> None:
    data = header(n_kv=1) + struct.pack("<Q", 1 << 40) + b"abc" + b"\0" * 40
    with pytest.raises(
        FormatError, match=r"string length 1099511627776 exceeds .* at offset 24 \(field 'metadata key #0'\)"
    ):
        parse(data)


def test_array_count_larger_than_file() -> None:
    data = header(n_kv=1) + gguf_str(b"k") + struct.pack("<IIQ", 9, 5, 1 << 50)
    with pytest.raises(
        FormatError, match=r"array count 1125899906842624 cannot fit .* at offset 41 \(field 'k.count'\)"
    ):
        parse(data)


def test_invalid_value_type() -> None:
    data = header(n_kv=1) + gguf_str(b"key") + struct.pack("<I", 99)
    with pytest.raises(FormatError, match="invalid value type 99"):
        parse(data)


def test_bool_out_of_range() -> None:
    data = header(n_kv=1) + gguf_str(b"flag") + struct.pack("<IB", 7, 3)
    with pytest.raises(FormatError, match="field 'flag'"):
        parse(data)


def tensor_info(name: bytes, dims: list[int], type_id: int, offset: int) -> bytes:
    return (
        gguf_str(name)
        + struct.pack("<I", len(dims))
        + b"".join(struct.pack("<Q", d) for d in dims)
        + struct.pack("<IQ", type_id, offset)
    )


def test_unknown_tensor_type() -> None:
    data = header(n_tensors=1) + tensor_info(b"w", [32], 77, 0) + b"\0" * 64
    with pytest.raises(FormatError, match="unknown tensor type id 77.*tensor 'w'"):
        parse(data)


def test_misaligned_tensor_offset() -> None:
    data = header(n_tensors=1) + tensor_info(b"w", [4], 0, 3) + b"\0" * 64
    with pytest.raises(FormatError, match="not aligned"):
        parse(data)


def test_tensor_past_end_of_file() -> None:
    data = header(n_tensors=1) + tensor_info(b"w", [1024], 0, 0)
    data += b"\0" * (-len(data) % 32) + b"\0" * 100
    with pytest.raises(FormatError, match=r"tensor 'w' \(F32, 4096 bytes\) .* runs past the end"):
        parse(data)


def test_row_not_multiple_of_block() -> None:
    data = header(n_tensors=1) + tensor_info(b"q", [33], 8, 0) + b"\0" * 128
    with pytest.raises(FormatError, match="not a multiple of the Q8_0 block size 32"):
        parse(data)


def test_every_truncation_of_a_real_header_is_reported() -> None:
    blob = (TOKENIZER_DIR / "ggml-vocab-phi-3.gguf").read_bytes()
    rng = np.random.default_rng(0)
    cuts = sorted(set(rng.integers(1, len(blob) - 1, size=300).tolist()) | set(range(1, 200)))
    for cut in cuts:
        with pytest.raises(FormatError, match=r"(truncated|not a GGUF|exceeds|cannot fit).*"):
            parse(blob[:cut])


def test_truncated_model_file_names_tensor(tmp_path: Path, smollm2_path: Path) -> None:
    blob = smollm2_path.read_bytes()
    p = tmp_path / "cut.gguf"
    p.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(FormatError, match=r"cut\.gguf: truncated file: tensor 'blk\.\d+\..*' .* runs past the end"):
        pyruntime.load(p)


def test_unsupported_architecture(tmp_path: Path) -> None:
    p = write_gguf(tmp_path / "mamba.gguf", arch="mamba")
    with pytest.raises(UnsupportedError, match="unsupported architecture 'mamba'.*llama"):
        pyruntime.load(p)


def llama_kv(embedding: int, ff: int) -> dict:
    """Minimal llama hyperparameters (one layer, four heads) for files that must fail at tensors."""
    import gguf

    T = gguf.GGUFValueType
    values = dict(block_count=1, embedding_length=embedding, feed_forward_length=ff, context_length=64)
    kv = {f"llama.{k}": (v, T.UINT32, None) for k, v in values.items()}
    kv["llama.attention.head_count"] = (4, T.UINT32, None)
    return kv


def test_unsupported_tensor_type(tmp_path: Path) -> None:
    import gguf

    kv = llama_kv(256, 256)
    q4k = np.zeros((16, 144), np.uint8)  # 16 rows of one 256-element Q4_K block
    p = write_gguf(tmp_path / "k.gguf", kv, {"token_embd.weight": (q4k, gguf.GGMLQuantizationType.Q4_K)})
    with pytest.raises(UnsupportedError, match="tensor 'token_embd.weight' has type Q4_K"):
        pyruntime.load(p)


def test_missing_tensor_and_wrong_shape(tmp_path: Path) -> None:
    kv = llama_kv(32, 64)
    f32 = np.zeros
    p = write_gguf(
        tmp_path / "m.gguf",
        kv,
        {"token_embd.weight": (f32((10, 32), np.float32), None), "output_norm.weight": (f32(32, np.float32), None)},
    )
    with pytest.raises(FormatError, match="tensor 'blk.0.attn_norm.weight' is missing"):
        pyruntime.load(p)
    p = write_gguf(
        tmp_path / "s.gguf",
        kv,
        {"token_embd.weight": (f32((10, 32), np.float32), None), "output_norm.weight": (f32(31, np.float32), None)},
    )
    with pytest.raises(FormatError, match=r"'output_norm.weight' has shape \[31\], expected \[32\]"):
        pyruntime.load(p)


def test_errors_are_pyruntime_errors() -> None:
    with pytest.raises(PyruntimeError):
        parse(b"GGUF")
