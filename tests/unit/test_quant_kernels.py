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


def reference_q8a(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """8-bit activation blocks in numpy float32: d = max|x| / 127, codes = round-half-even(x * (1 / d))."""
    blocks = x.astype(np.float32).reshape(-1, 32)
    d = (np.abs(blocks).max(1) / np.float32(127)).astype(np.float32)
    inv = np.divide(np.float32(1), d, out=np.zeros_like(d), where=d != 0).astype(np.float32)
    q = np.rint(blocks * inv[:, None]).astype(np.int8)
    return d, q


def test_activation_quantizer_matches_reference_on_every_table() -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal(32 * 64).astype(np.float32) * rng.choice([1e-3, 1.0, 30.0], 32 * 64).astype(np.float32)
    x[:32] = 0  # an all-zero block: d = 0, codes 0
    x[32:64] = 0.5  # ties: x * (1/d) lands exactly on .5 steps for some values
    x[64] = -1e4  # one extreme value in a block
    want_d, want_q = reference_q8a(x)
    for name in kernel_tables():
        assert _core.set_kernels(name)
        d, s, q = _core.quantize_q8a(x)
        np.testing.assert_array_equal(d, want_d)
        np.testing.assert_array_equal(q, want_q)
        np.testing.assert_allclose(s, want_d * want_q.astype(np.int64).sum(1), rtol=1e-6)
    _core.set_kernels("auto")


@pytest.mark.parametrize("qtype", QTYPES)
def test_integer_dot_kernels_against_reference(qtype: str) -> None:
    """Weight row . 8-bit activations: the exact value of dequantized weights times dequantized
    activations (float64), within float accumulation error, on every table."""
    rng = np.random.default_rng(6)
    for name in kernel_tables():
        assert _core.set_kernels(name)
        for n in [32, 64, 96, 256, 4096, 4128]:
            w = rng.standard_normal(n).astype(np.float32)
            x = (rng.standard_normal(n) * 3).astype(np.float32)
            row = encode(qtype, w)
            got = _core.dot_row_q8a(qtype, row, x)
            d, q = reference_q8a(x)
            xa = (q.astype(np.float64) * d.astype(np.float64)[:, None]).reshape(-1)
            wd = _core.dequantize(qtype, row, n).astype(np.float64)
            want = float(wd @ xa)
            scale = float(np.abs(wd) @ np.abs(xa))
            assert abs(got - want) <= 1e-5 * scale + 1e-6, (name, qtype, n, got, want)
    _core.set_kernels("auto")


@pytest.mark.parametrize("qtype", QTYPES)
def test_blocked_integer_gemm_equals_row_dots_bit_for_bit(qtype: str) -> None:
    """Every table's blocked product (decode rows for < 4 tokens, packed 8-row panels above) gives
    exactly the generic row-by-row dots: the per-block arithmetic is fixed (kernels.h), so a token's
    result cannot depend on the token count, the tiling or the ISA. Shapes cover partial panels
    (rows % 8), token tails (tokens % 4) and both sides of the decode/prefill switch."""
    rng = np.random.default_rng(7)
    shapes = [(1, 1, 32), (3, 4, 64), (5, 7, 96), (8, 3, 64), (9, 5, 160), (16, 9, 576), (17, 2, 4128), (2, 13, 4128)]
    for n_rows, n_tok, K in shapes:
        w = rng.standard_normal((n_rows, K)).astype(np.float32)
        x = (rng.standard_normal((n_tok, K)) * 2).astype(np.float32)
        rows = [encode(qtype, w[r]) for r in range(n_rows)]
        assert _core.set_kernels("generic")
        want = np.array([[_core.dot_row_q8a(qtype, rows[r], x[t]) for r in range(n_rows)] for t in range(n_tok)])
        for name in kernel_tables():
            assert _core.set_kernels(name)
            got = _core.gemm_q8a(qtype, b"".join(rows), n_rows, x)
            np.testing.assert_array_equal(got, want, err_msg=f"{name} {qtype} {(n_rows, n_tok, K)}")
            dots = [_core.dot_row_q8a(qtype, rows[r], x[t]) for r in range(n_rows) for t in range(n_tok)]
            np.testing.assert_array_equal(np.array(dots).reshape(n_rows, n_tok).T, want)
    _core.set_kernels("auto")


@pytest.mark.parametrize("qtype", QTYPES)
def test_integer_gemm_extreme_codes_do_not_saturate(qtype: str) -> None:
    """Largest codes on both sides (Q4 nibble 15, Q8_0 weight -128 written by hand, activations
    +-127): the 16-bit partial sums of the SIMD paths must not clip. Checked against an int64 sum."""
    K, n_rows, n_tok = 256, 9, 5
    rng = np.random.default_rng(11)
    signs = rng.choice([-1.0, 1.0], (n_tok, K)).astype(np.float32)
    x = signs * 3.0  # every block's max is 3: all codes +-127
    w = np.full((n_rows, K), -1.0, np.float32) if qtype != "Q4_1" else np.full((n_rows, K), 1.0, np.float32)
    w[:, ::7] = 0.25
    raw = bytearray(b"".join(encode(qtype, w[r]) for r in range(n_rows)))
    if qtype == "Q8_0":  # set every code of the first block of each row to -128 (valid bytes, out of ggml's range)
        for r in range(n_rows):
            off = r * (K // 32) * 34
            raw[off + 2 : off + 34] = bytes([0x80]) * 32
    rows = bytes(raw)
    stride = len(rows) // n_rows
    wd = np.stack([_core.dequantize(qtype, rows[r * stride : (r + 1) * stride], K) for r in range(n_rows)])
    wd = wd.astype(np.float64)
    d, q = reference_q8a(x.reshape(-1))
    xa = (q.astype(np.float64) * d.astype(np.float64)[:, None]).reshape(n_tok, K)
    want = xa @ wd.T
    for name in kernel_tables():
        assert _core.set_kernels(name)
        got = _core.gemm_q8a(qtype, rows, n_rows, x)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4, err_msg=name)
    _core.set_kernels("auto")


def test_blocked_float_gemm_and_f16_conversion() -> None:
    rng = np.random.default_rng(8)
    for n_rows, n_tok, K in [(1, 1, 1), (2, 3, 7), (3, 4, 8), (7, 5, 33), (15, 9, 576), (4, 8, 4097), (70, 13, 530)]:
        w = rng.standard_normal((n_rows, K)).astype(np.float32)
        x = rng.standard_normal((n_tok, K)).astype(np.float32)
        want = x.astype(np.float64) @ w.astype(np.float64).T
        for name in kernel_tables():
            assert _core.set_kernels(name)
            got = _core.gemm_f32(w, x)
            assert np.abs(got - want).max() <= 1e-5 * (np.abs(x) @ np.abs(w).T).max(), (name, n_rows, n_tok, K)
    h = rng.standard_normal(4101).astype(np.float16)
    for name in kernel_tables():
        assert _core.set_kernels(name)
        np.testing.assert_array_equal(_core.f16_to_f32_row(h.view(np.uint16)), h.astype(np.float32))
    _core.set_kernels("auto")


def test_runtime_dispatch_picks_a_table() -> None:
    assert _core.kernels_name() in ("avx2", "generic")
    assert not _core.set_kernels("no-such-isa")
