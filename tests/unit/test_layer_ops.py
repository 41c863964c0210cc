"""A decoder layer's elementwise steps on the CPU (RMSNorm, RoPE in both pairings, SwiGLU) against
float64 numpy: the references the CUDA kernels are tested against (tests/cuda)."""

from __future__ import annotations

import numpy as np
import pytest

from pyruntime import _core
from pyruntime.errors import InvalidArgumentError


def rope_ref(
    x: np.ndarray, n_heads: int, d: int, n_rot: int, pos0: int, inv_freq: np.ndarray, neox: bool
) -> np.ndarray:
    y = x.astype(np.float64).reshape(x.shape[0], n_heads, d).copy()
    half = n_rot // 2
    a = np.arange(half) if neox else 2 * np.arange(half)
    b = a + half if neox else a + 1
    theta = (pos0 + np.arange(x.shape[0]))[:, None] * inv_freq.astype(np.float64)[None, :]
    c, s = np.cos(theta)[:, None, :], np.sin(theta)[:, None, :]
    x0, x1 = y[:, :, a].copy(), y[:, :, b].copy()
    y[:, :, a], y[:, :, b] = x0 * c - x1 * s, x0 * s + x1 * c
    return y.reshape(x.shape)


@pytest.mark.parametrize("rows, n", [(1, 1), (3, 31), (5, 576), (2, 4097)])
def test_rms_norm_rows(rows: int, n: int) -> None:
    rng = np.random.default_rng(n)
    x, w = rng.standard_normal((rows, n)).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    want = x / np.sqrt((x.astype(np.float64) ** 2).mean(axis=1, keepdims=True) + 1e-5) * w
    np.testing.assert_allclose(_core.rms_norm_rows(x, w, 1e-5), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("neox", [False, True])
@pytest.mark.parametrize("n_rot", [64, 32])
def test_rope_pairings(neox: bool, n_rot: int) -> None:
    """Adjacent pairs (ggml NORM, Llama GGUFs) or rotate-half (NeoX); channels past n_rot untouched;
    positions up to 4k, where float angle rounding dominates the error (|theta| ~ 4e3 -> ~2e-4 rad ulp)."""
    T, H, d = 7, 3, 64
    rng = np.random.default_rng(n_rot + neox)
    x = rng.standard_normal((T, H * d)).astype(np.float32)
    inv_freq = (10000.0 ** (-np.arange(n_rot // 2) * 2.0 / n_rot)).astype(np.float32)
    for pos0 in (0, 4090):
        got = _core.rope(x, H, d, n_rot, pos0, inv_freq.tolist(), neox)
        np.testing.assert_allclose(got, rope_ref(x, H, d, n_rot, pos0, inv_freq, neox), atol=2e-6 * (1 + pos0))
        if n_rot < d:
            rest = got.reshape(T, H, d)[:, :, n_rot:]
            np.testing.assert_array_equal(rest, x.reshape(T, H, d)[:, :, n_rot:])
    with pytest.raises(InvalidArgumentError, match="n_rot"):
        _core.rope(x, H, d, 63, 0, inv_freq.tolist(), neox)


def test_silu_mul_including_large_gates() -> None:
    rng = np.random.default_rng(3)
    g = (6 * rng.standard_normal(4097)).astype(np.float32)
    g[:4] = [120.0, -120.0, 0.0, 88.0]
    u = rng.standard_normal(4097).astype(np.float32)
    g64 = g.astype(np.float64)
    want = g64 / (1.0 + np.exp(-g64)) * u
    np.testing.assert_allclose(_core.silu_mul(g, u), want, rtol=1e-6, atol=1e-30)
