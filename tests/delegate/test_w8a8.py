"""W8A8 per-tensor static quantization and shadow outlier correction (SPEC 5.1, 5.2, 5.5 tests 1-2)
against a numpy implementation written from the SPEC, plus the int8 GEMM kernel."""

from __future__ import annotations

import numpy as np
import pytest

from pyruntime import _core


def spec_quantize(x: np.ndarray, s: float) -> np.ndarray:
    """round-half-even(x / s) without clamping, as float64."""
    return np.round(x.astype(np.float32) / np.float32(s)).astype(np.float64)


def spec_weight(w: np.ndarray) -> tuple[np.ndarray, float]:
    s_w = np.float32(max(float(np.abs(w).max()), 1e-5) / 127.0)
    return np.clip(np.round(w.astype(np.float32) / s_w), -128, 127), float(s_w)


def spec_npu(x: np.ndarray, w: np.ndarray, s_x: float, s_y: float) -> np.ndarray:
    """SPEC 5.1: y_q of the int8 delegate."""
    wq, s_w = spec_weight(w)
    acc = np.clip(spec_quantize(x, s_x), -128, 127) @ wq.T.astype(np.float64)  # exact in float64
    # acc * (s_x s_w) / s_y in float32, left to right (as ONNX Runtime's QDQ MatMul evaluates it)
    y = acc.astype(np.float32) * np.float32(np.float32(s_x) * np.float32(s_w)) / np.float32(s_y)
    return np.clip(np.round(y), -128, 127).astype(np.int8)


def spec_shadow(x: np.ndarray, w: np.ndarray, s_x: float, s_y: float) -> np.ndarray:
    """SPEC 5.2 as float math: non-saturated outputs = y_q s_y + (unclipped - clipped input) @ W~ s_w;
    saturated outputs = round(z / s_y) s_y with z from the unclipped input."""
    wq, s_w = spec_weight(w)
    y_q = spec_npu(x, w, s_x, s_y)
    r = spec_quantize(x, s_x)
    y = y_q * np.float64(s_y) + ((r - np.clip(r, -128, 127)) * s_x) @ (wq.T * s_w)
    z = (r * s_x) @ (wq.T * s_w)
    sat = (y_q == 127) | (y_q == -128)
    y[sat] = (np.round(z / s_y) * s_y)[sat]
    return y


@pytest.mark.parametrize("T,N,K", [(1, 1, 1), (2, 4, 16), (3, 5, 17), (5, 7, 33), (4, 64, 576), (3, 9, 1536)])
def test_gemm_s8_is_exact(T: int, N: int, K: int) -> None:
    rng = np.random.default_rng(T * 100 + K)
    rows = rng.integers(-128, 128, (N, K)).astype(np.int8)
    x = rng.integers(-128, 128, (T, K)).astype(np.int8)
    rows[0, :] = -128  # extremes: (-128)(-128) pairs must not saturate
    x[0, :] = -128
    np.testing.assert_array_equal(_core.gemm_s8(rows, x), x.astype(np.int64) @ rows.T.astype(np.int64))


def test_reference_delegate_matches_spec_bit_for_bit() -> None:
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.05, (48, 96)).astype(np.float32)
    x = rng.normal(0, 1.0, (13, 96)).astype(np.float32)
    s_x, s_y = 3.0 / 127, 2.0 / 127
    y_q, y, wq, s_w, counts = _core.w8a8_linear(w, x, s_x, s_y, outliers=False)
    ref_wq, ref_sw = spec_weight(w)
    np.testing.assert_array_equal(wq, ref_wq.astype(np.int8))
    assert s_w == pytest.approx(ref_sw, rel=0, abs=0)
    np.testing.assert_array_equal(y_q, spec_npu(x, w, s_x, s_y))
    np.testing.assert_array_equal(y, y_q.astype(np.float32) * np.float32(s_y))


def test_per_channel_weights_match_spec_bit_for_bit() -> None:
    rng = np.random.default_rng(5)
    w = rng.normal(0, 0.05, (24, 40)).astype(np.float32) * rng.uniform(0.1, 3.0, (24, 1)).astype(np.float32)
    w[3] = 0.0  # an all-zero row keeps a positive scale
    x = rng.normal(0, 1.5, (9, 40)).astype(np.float32)
    x[2, 7] = 40.0  # an input outlier
    s_x, s_y = 2.0 / 127, 1.0 / 127  # and saturated outputs
    y_q, y, wq, s_w, counts = _core.w8a8_linear(w, x, s_x, s_y, per_channel=True)
    s_ref = np.maximum(np.abs(w).max(1), 1e-5).astype(np.float32) / np.float32(127)
    np.testing.assert_array_equal(s_w, s_ref)
    wq_ref = np.clip(np.round(w / s_ref[:, None]), -128, 127)
    np.testing.assert_array_equal(wq, wq_ref.astype(np.int8))
    r = spec_quantize(x, s_x)
    acc = np.clip(r, -128, 127) @ wq_ref.T
    yq_ref = np.clip(np.round(acc.astype(np.float32) * (np.float32(s_x) * s_ref) / np.float32(s_y)), -128, 127)
    np.testing.assert_array_equal(y_q, yq_ref.astype(np.int8))
    w_deq = wq_ref * s_ref[:, None]
    ref = y_q * np.float64(s_y) + ((r - np.clip(r, -128, 127)) * s_x) @ w_deq.T
    sat = (y_q == 127) | (y_q == -128)
    ref[sat] = (np.round(((r * s_x) @ w_deq.T) / s_y) * s_y)[sat]
    assert sat.any() and counts["input_outliers"] == int(((r < -128) | (r > 127)).sum()) > 1
    assert np.abs(y - ref).max() <= 1e-5 * np.abs(ref).max()


def test_shadow_without_outliers_is_exactly_the_int8_result() -> None:
    rng = np.random.default_rng(1)
    w = rng.normal(0, 0.05, (32, 64)).astype(np.float32)
    x = rng.uniform(-1, 1, (9, 64)).astype(np.float32)
    s_x, s_y = 1.0 / 127, 4.0 / 127  # no input beyond 1.0, outputs far from saturation
    y_q, y, _, _, counts = _core.w8a8_linear(w, x, s_x, s_y, clip_input=False, clip_output=False)
    assert counts == {"input_outliers": 0, "cold_channels": 0, "output_outliers": 0}
    assert np.abs(y_q).max() < 127
    np.testing.assert_array_equal(y, y_q.astype(np.float32) * np.float32(s_y))


@pytest.mark.parametrize("hot", [[], [3, 17], [3, 17, 40]])
def test_injected_input_outliers_match_float_reference(hot: list[int]) -> None:
    rng = np.random.default_rng(2)
    w = rng.normal(0, 0.05, (40, 64)).astype(np.float32)
    x = rng.uniform(-1, 1, (11, 64)).astype(np.float32)
    x[2, 3], x[5, 17], x[7, 17], x[9, 40] = 25.0, -40.0, 9.0, 3.3  # channels 3, 17, 40 carry outliers
    s_x, s_y = 1.0 / 127, 16.0 / 127
    _, y_off, _, _, _ = _core.w8a8_linear(w, x, s_x, s_y, outliers=False)
    y_q, y, _, _, counts = _core.w8a8_linear(w, x, s_x, s_y, hot_channels=hot)
    assert np.abs(y_q).max() < 127  # this test is about inputs only
    ref = spec_shadow(x, w, s_x, s_y)
    assert np.abs(y - ref).max() <= 1e-5 * np.abs(ref).max()
    # Without the correction the outliers are clipped: a large, real error.
    assert np.abs(y_off - ref).max() > 100 * np.abs(y - ref).max()
    assert counts["input_outliers"] == 4
    assert counts["cold_channels"] == sum(1 for k in (3, 17, 17, 40) if k not in hot)


def test_saturated_outputs_take_the_unclamped_requantized_value() -> None:
    rng = np.random.default_rng(3)
    w = rng.normal(0, 0.2, (24, 32)).astype(np.float32)
    x = rng.uniform(-1, 1, (6, 32)).astype(np.float32)
    x[1, 5] = 30.0  # also an input outlier in a saturated row: the overwrite must not count it twice
    s_x, s_y = 1.0 / 127, 0.5 / 127  # outputs overflow s_y
    y_q, y, _, _, counts = _core.w8a8_linear(w, x, s_x, s_y)
    sat = (y_q == 127) | (y_q == -128)
    assert sat.sum() > 10 and counts["output_outliers"] == int(sat.sum())
    ref = spec_shadow(x, w, s_x, s_y)
    np.testing.assert_allclose(y[sat], ref[sat], rtol=1e-5, atol=1e-6)
    assert np.abs(y - ref).max() <= 1e-5 * np.abs(ref).max()


def test_clip_flags_switch_the_shadow_work_off() -> None:
    rng = np.random.default_rng(4)
    w = rng.normal(0, 0.2, (16, 32)).astype(np.float32)
    x = rng.uniform(-1, 1, (4, 32)).astype(np.float32)
    x[0, 0] = 50.0
    s_x, s_y = 1.0 / 127, 0.5 / 127
    y_q, y, _, _, counts = _core.w8a8_linear(w, x, s_x, s_y, clip_input=True, clip_output=True)
    assert counts == {"input_outliers": 0, "cold_channels": 0, "output_outliers": 0}
    np.testing.assert_array_equal(y, y_q.astype(np.float32) * np.float32(s_y))


def test_bad_scales_are_rejected() -> None:
    w = np.ones((4, 8), dtype=np.float32)
    x = np.ones((2, 8), dtype=np.float32)
    with pytest.raises(Exception, match="scales must be positive"):
        _core.w8a8_linear(w, x, 0.0, 1.0)
    with pytest.raises(Exception, match="hot channel 9"):
        _core.w8a8_linear(w, x, 1.0, 1.0, hot_channels=[9])


def test_builtin_delegates() -> None:
    assert "reference" in _core.builtin_delegates()
