"""Quantizers byte-identical to ggml's reference (via gguf-py's port), fp16 rounding, and every CPU
kernel (AVX2 and generic) against a plain numpy reference on tail shapes."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import pytest

from pyruntime import _core

QTYPES = ["Q8_0", "Q4_0", "Q4_1"]


def edge_blocks() -> np.ndarray:
    rng = np.random.default_rng(1)
    blocks = [
        np.zeros(32),  # all zero
        np.full(32, 3.0),  # constant (q4_1: max == min)
        np.r_[-7.0, np.linspace(-1, 1, 31)],  # single negative extreme
        np.r_[7.0, np.linspace(-1, 1, 31)],
        np.linspace(-127, 127, 32),  # q8_0 ties at .5/id
        (np.arange(32) - 16) * 0.5,  # many half-way values
        np.full(32, 1e-8) * np.sign(rng.standard_normal(32)),  # subnormal fp16 scale
        rng.standard_normal(32) * 1e4,  # large
    ]
    return np.concatenate(blocks).astype(np.float32)


def random_values(n_blocks: int) -> np.ndarray:
    rng = np.random.default_rng(2)
    x = rng.standard_normal(n_blocks * 32).astype(np.float32)
    x[rng.random(x.size) < 0.01] *= 50  # outliers
    return x


@pytest.mark.parametrize("qtype", QTYPES)
def test_quantizer_byte_identical_to_reference(qtype: str) -> None:
    import gguf

    t = gguf.GGMLQuantizationType[qtype]
    for x in (edge_blocks(), random_values(20_000)):
        ours = _core.quantize(qtype, x)
        ref = gguf.quants.quantize(x.reshape(-1, 32), t).tobytes()
        assert ours == ref
        want = gguf.quants.dequantize(np.frombuffer(ref, np.uint8).reshape(-1, len(ref) // (x.size // 32)), t)
        np.testing.assert_array_equal(_core.dequantize(qtype, ours, x.size), want.reshape(-1))


def test_fp16_rounding_matches_numpy() -> None:
    rng = np.random.default_rng(3)
    x = np.concatenate(
        [
            rng.standard_normal(100_000).astype(np.float32) * np.float32(10.0) ** rng.integers(-8, 5, 100_000),
            np.array([0.0, -0.0, 65504.0, 65520.0, 1e9, -1e9, np.inf, -np.inf, 5.96e-8, 2.98e-8, 6.1e-5], np.float32),
        ]
    ).astype(np.float32)
    with np.errstate(over="ignore"):
        want = x.astype(np.float16).view(np.uint16)
    np.testing.assert_array_equal(_core.fp32_to_fp16(x), want)
    nan = _core.fp32_to_fp16(np.array([np.nan], np.float32))[0]
    assert (nan & 0x7C00) == 0x7C00 and (nan & 0x3FF) != 0


def reference_dot(qtype: str, row: bytes, x: np.ndarray) -> float:
    w = _core.dequantize(qtype, row, x.size).astype(np.float64)
    return float(w @ x.astype(np.float64))


def kernel_tables() -> Iterator[str]:
    yield "generic"
    if _core.set_kernels("avx2"):
        yield "avx2"
    _core.set_kernels("auto")


def encode(qtype: str, w: np.ndarray) -> bytes:
    if qtype == "F32":
        return w.astype(np.float32).tobytes()
    if qtype == "F16":
        return w.astype(np.float16).tobytes()
    if qtype == "BF16":
        return (w.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16).tobytes()
    return _core.quantize(qtype, w)


@pytest.mark.parametrize("qtype", ["F32", "F16", "BF16", *QTYPES])
def test_dot_kernels_against_reference(qtype: str) -> None:
    rng = np.random.default_rng(4)
    blocked = qtype in QTYPES
    sizes = [32, 64, 96, 256, 4096, 4128] if blocked else [1, 7, 31, 32, 33, 255, 4097]
    for name in kernel_tables():
        assert _core.set_kernels(name)
        for n in sizes:
            w = rng.standard_normal(n).astype(np.float32)
            x = rng.standard_normal(n).astype(np.float32)
            row = encode(qtype, w)
            got = _core.dot_row(qtype, row, x)
            want = reference_dot(qtype, row, x)
            scale = float(np.abs(_core.dequantize(qtype, row, n) if blocked else w).astype(np.float64) @ np.abs(x))
            assert abs(got - want) <= 1e-5 * scale + 1e-6, (name, qtype, n, got, want)
    _core.set_kernels("auto")


def test_runtime_dispatch_picks_a_table() -> None:
    assert _core.kernels_name() in ("avx2", "generic")
    assert not _core.set_kernels("no-such-isa")
