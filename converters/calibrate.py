"""W8A8 calibration (SPEC 5.3): run text through the float model, measure every linear's input and
output activations, and store static scales, clip flags and hot outlier channels in the GGUF.

Per linear and side (input, output), over |x| of all calibration tokens: ``ori`` = the largest value,
``top`` = the 99.9th percentile. If ``top * threshold > ori`` the tail is mild: scale from ``ori`` and
clip (no shadow work). Otherwise the scale comes from ``top`` and values beyond it are outliers the
runtime corrects on the CPU; input channels that went beyond it during calibration are "hot" (their
weight rows stay resident on the CPU). The reference tooling ranks signed values; we rank |x| because
the int8 range is symmetric and a negative tail is clipped just the same.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

DEFAULT_SAMPLES = 40
DEFAULT_SAMPLE_TOKENS = 512
CALIBRATION_SUFFIXES = (".input_scale", ".output_scale", ".clip_input", ".clip_output", ".hot_channels")
HOT_COVERAGE = 0.9  # hot channels: the fewest holding 90% of the calibration's input outliers
# SPEC 5.3's function default is 5 (its export default, 152, clips almost everything). On SmolLM2-135M
# 1.5 shadows about 2/3 of the linears and halves the KL of 5 (bench/results/npu-prefill).
DEFAULT_THRESHOLD = 1.5


def calibration_samples(model: Any, text: str, n_samples: int, sample_tokens: int) -> list[list[int]]:
    """Consecutive windows of ``sample_tokens`` tokens from the start of the text (BOS first when the
    model adds one), at most ``n_samples`` of them."""
    if model.tokenizer is None:
        raise ValueError("calibration needs a model with a tokenizer")
    ids = model.tokenizer.encode(text, add_special=False)
    bos = model.tokenizer.encode("", add_special=True)  # [BOS] for models that start with one, else []
    body = sample_tokens - len(bos)
    samples = [bos + ids[i : i + body] for i in range(0, len(ids), body)][:n_samples]
    samples = [s for s in samples if len(s) > len(bos) + 16] or samples[:1]
    if not samples or len(samples[0]) <= len(bos):
        raise ValueError("the calibration text is empty after tokenization")
    return samples


def decide(stats: dict[str, Any], threshold: float) -> tuple[float, bool]:
    """(clip value a, clip flag) for one side of a linear."""
    ori, top = float(stats["max"]), float(stats["top_0_1"])
    if ori <= 0.0:
        return 1e-5, True  # all-zero activations (never seen in practice): any positive scale works
    clip = top * threshold > ori or top <= 0.0
    return (ori if clip else top), clip


def hot_channels(counts: np.ndarray, coverage: float) -> np.ndarray:
    """The fewest channels that hold ``coverage`` of all outlier events (most frequent first)."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int32)
    order = np.argsort(-counts, kind="stable")
    covered = np.cumsum(counts[order])
    n = int(np.searchsorted(covered, coverage * total) + 1)
    return np.sort(order[:n]).astype(np.int32)


def outlier_limit(a: float) -> float:
    """|x| above this rounds outside the int8 range of scale a / 127."""
    return 127.5 * (a / 127.0)


def calibration_tensors(
    linears: list[dict[str, Any]],
    threshold: float,
    input_outlier_counts: Optional[dict[str, np.ndarray]] = None,
    coverage: float = HOT_COVERAGE,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """GGUF tensors (<linear>.input_scale, .output_scale, .clip_input, .clip_output, .hot_channels)
    from the statistics; hot channels need the second pass's per-channel outlier counts."""
    tensors: dict[str, np.ndarray] = {}
    n_shadow_in = n_shadow_out = n_hot = 0
    for lin in linears:
        name = lin["name"]
        a_in, clip_in = decide(lin["input"], threshold)
        a_out, clip_out = decide(lin["output"], threshold)
        tensors[f"{name}.input_scale"] = np.array([a_in / 127.0], dtype=np.float32)
        tensors[f"{name}.output_scale"] = np.array([a_out / 127.0], dtype=np.float32)
        tensors[f"{name}.clip_input"] = np.array([float(clip_in)], dtype=np.float32)
        tensors[f"{name}.clip_output"] = np.array([float(clip_out)], dtype=np.float32)
        if not clip_in and input_outlier_counts is not None and name in input_outlier_counts:
            hot = hot_channels(input_outlier_counts[name], coverage)
            if hot.size:
                tensors[f"{name}.hot_channels"] = hot
                n_hot += int(hot.size)
        n_shadow_in += int(not clip_in)
        n_shadow_out += int(not clip_out)
    summary = {
        "linears": len(linears),
        "shadow_inputs": n_shadow_in,
        "shadow_outputs": n_shadow_out,
        "hot_channels": n_hot,
    }
    return tensors, summary


def calibration_for(
    model: Any, samples: list[list[int]], linears: list[dict[str, Any]], threshold: float
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Tensors for one threshold from first-pass statistics (runs the second, counting pass)."""
    limits = {}
    for lin in linears:
        a_in, clip_in = decide(lin["input"], threshold)
        if not clip_in:
            limits[lin["name"]] = outlier_limit(a_in)
    counts = {k: np.asarray(v) for k, v in model._m.count_input_outliers(samples, limits).items()} if limits else {}
    return calibration_tensors(linears, threshold, counts)


def write_calibrated(
    src: Path,
    out: Path,
    tensors: dict[str, np.ndarray],
    meta: dict[str, Any],
    overwrite: bool,
    log: Callable[[str], None],
    quant: Optional[str] = None,
) -> None:
    from converters.gguf_requant import requantize_gguf

    requantize_gguf(
        src, out, quant, overwrite, log, extra_tensors=tensors, extra_metadata=meta, drop_suffixes=CALIBRATION_SUFFIXES
    )


def calibrate_gguf(
    src: Path,
    out: Path,
    text_path: Path,
    overwrite: bool,
    log: Callable[[str], None],
    *,
    quant: Optional[str] = None,
    n_samples: int = DEFAULT_SAMPLES,
    sample_tokens: int = DEFAULT_SAMPLE_TOKENS,
    threshold: float = DEFAULT_THRESHOLD,
) -> dict[str, Any]:
    """Calibrate ``src`` on ``text_path`` and write ``out`` (tensors kept, or requantized to ``quant``)."""
    import pyruntime

    if threshold < 1.0:
        raise ValueError(f"--outlier-threshold must be >= 1 (1: every layer gets shadow correction), got {threshold}")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --force to replace it")
    text = Path(text_path).read_text(encoding="utf-8", errors="replace")
    model = pyruntime.load(src, activations="f32", kv_cache="f32")
    samples = calibration_samples(model, text, n_samples, min(sample_tokens, model.context_length))
    log(f"calibrating on {len(samples)} samples, {sum(map(len, samples))} tokens of {text_path}")
    linears = model._m.calibrate_linears(samples)
    tensors, summary = calibration_for(model, samples, linears, threshold)
    log(
        f"{summary['linears']} linears: shadow correction on {summary['shadow_inputs']} inputs and "
        f"{summary['shadow_outputs']} outputs, {summary['hot_channels']} hot input channels"
    )
    meta = {
        "pyrt.calibration.source": Path(text_path).name,
        "pyrt.calibration.samples": len(samples),
        "pyrt.calibration.tokens": sum(map(len, samples)),
        "pyrt.calibration.outlier_threshold": float(threshold),
    }
    write_calibrated(src, out, tensors, meta, overwrite, log, quant)
    return summary
