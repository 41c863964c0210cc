"""Chunked prefill with fixed-size, padded chunks (SPEC 5.4, 5.5 tests 4-5), CPU float path and the
W8A8 delegate path on a calibrated random Llama."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

import pyruntime
from pyruntime import _core
from pyruntime.model import Model

BOTCHAN = Path(__file__).resolve().parents[3] / "shared" / "testdata" / "text" / "botchan.txt"


@pytest.fixture(scope="module")
def tiny_f32(
    make_hf_llama: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory, convert: Callable[..., Path]
) -> Path:
    hf = make_hf_llama("chunk", num_hidden_layers=2, max_position_embeddings=2048)
    return convert(hf, tmp_path_factory.mktemp("chunk") / "tiny.gguf", "f32")


@pytest.fixture(scope="module")
def tiny_calibrated(tiny_f32: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from converters.cli import main

    out = tmp_path_factory.mktemp("cal") / "tiny-cal.gguf"
    text = tmp_path_factory.mktemp("caltext") / "calib.txt"
    text.write_text(BOTCHAN.read_text(encoding="utf-8")[:20000], encoding="utf-8")
    assert (
        main(
            [
                str(tiny_f32),
                "-o",
                str(out),
                "--calibrate",
                str(text),
                "--calibration-samples",
                "4",
                "--outlier-threshold",
                "2",
            ]
        )
        == 0
    )
    return out


def load_raw(path: Path, **kw: Any) -> Model:
    """pyruntime.Model over _core.Model.load, for options the SDK does not expose (pad_token)."""
    return Model(_core.Model.load(str(path), 2, "f32", "f32", 0, "f32", **kw), str(path), ("f32", "f32"), "cpu")


def prompt(n: int, vocab: int, seed: int = 0) -> list[int]:
    return [int(i) for i in np.random.default_rng(seed).integers(1, vocab, n)]


@pytest.mark.parametrize("T", [1, 63, 64, 65, 1000])
@pytest.mark.parametrize("C", [1, 7, 64, 256])
def test_chunked_equals_full_prefill_f32(tiny_f32: Path, C: int, T: int) -> None:
    full = load_raw(tiny_f32)
    chunked = load_raw(tiny_f32, chunk=C)
    ids = prompt(T, full.vocab_size, seed=T)
    a, b = full.session(), chunked.session()
    la, lb = a.feed(ids), b.feed(ids)
    scale = np.abs(la).max()
    assert np.abs(la - lb).max() <= 1e-5 * scale  # every position's logits, the last one included
    for layer in range(2):
        for keys in (True, False):
            ka, kb = a._s.cached_rows(layer, keys), b._s.cached_rows(layer, keys)
            assert ka.shape == kb.shape == (T, 32)  # 2 KV heads x 16: no padded rows were kept
            assert np.abs(ka - kb).max() <= 1e-5 * max(np.abs(ka).max(), 1e-30)
    st = b.stats()["placement"]
    if T > 1:
        assert st["chunks"] == -(-T // C) and st["pad_tokens"] == -(-T // C) * C - T
    # decoding after the chunked prefill continues identically
    np.testing.assert_allclose(a.feed([5]), b.feed([5]), rtol=0, atol=1e-5 * scale)


@pytest.mark.parametrize("npu", [False, True])
def test_pad_tokens_never_change_results(tiny_f32: Path, tiny_calibrated: Path, npu: bool) -> None:
    path = tiny_calibrated if npu else tiny_f32
    extra = {"delegate": "reference"} if npu else {}
    ids = prompt(70, 300, seed=5)  # 70 = 64 + 6: the second chunk is mostly padding
    outs = []
    for pad in (0, 1, 299):
        m = load_raw(path, chunk=64, pad_token=pad, **extra)
        s = m.session()
        last = s.feed(ids)[-1]
        steps = [s.feed([t])[0] for t in (7, 8, 9)]
        outs.append(np.stack([last, *steps]))
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])


def test_static_scales_make_the_npu_path_chunking_invariant(tiny_calibrated: Path) -> None:
    ids = prompt(200, 300, seed=6)
    logits = {}
    for C in (7, 64, 256):
        m = pyruntime.load(tiny_calibrated, device="npu", chunk=C, kv_cache="f32", activations="f32")
        logits[C] = m.session().feed(ids)
    # Static per-tensor scales: every int8 tensor, hence every float after it, is the same for any chunking.
    np.testing.assert_array_equal(logits[7], logits[64])
    np.testing.assert_array_equal(logits[7], logits[256])


def test_npu_placement_and_quality(tiny_calibrated: Path) -> None:
    ids = prompt(150, 300, seed=7)
    ref = pyruntime.load(tiny_calibrated, kv_cache="f32", activations="f32").session().feed(ids)
    m = pyruntime.load(tiny_calibrated, device="npu", chunk=64, kv_cache="f32")
    s = m.session()
    out = s.feed(ids)
    s.feed([3])  # decode: CPU
    st = s.stats()["placement"]
    assert st["prefill_linears"] == "reference" and st["decode"] == "cpu" and st["attention"] == "cpu"
    assert st["fallbacks"] == []
    assert st["reference"]["linear_calls"] == 3 * 2 * 7  # 3 chunks x 2 layers x 7 linears
    assert st["chunks"] == 3 and st["pad_tokens"] == 42
    assert st["cpu"]["linear_calls"] == 2 * 7  # the decode step
    # int8 prefill is close to float, not equal
    rel = np.abs(out - ref).max() / np.abs(ref).max()
    assert 0 < rel < 0.1


def test_npu_needs_calibration(tiny_f32: Path) -> None:
    with pytest.raises(pyruntime.FormatError, match=r"blk\.0\.attn_q\.input_scale.*--calibrate"):
        pyruntime.load(tiny_f32, device="npu")


def test_bad_npu_options(tiny_calibrated: Path) -> None:
    with pytest.raises(pyruntime.UnsupportedError, match="unknown delegate 'tpu'"):
        pyruntime.load(tiny_calibrated, device="npu", delegate="tpu")
    with pytest.raises(pyruntime.InvalidArgumentError, match="chunk must be in 1..4096"):
        pyruntime.load(tiny_calibrated, device="npu", chunk=0)
    with pytest.raises(pyruntime.InvalidArgumentError, match="outliers must be"):
        pyruntime.load(tiny_calibrated, device="npu", outliers="maybe")
    with pytest.raises(pyruntime.InvalidArgumentError, match="needs device='npu'"):
        pyruntime.load(tiny_calibrated, delegate="reference")


def test_overlapped_schedule_equals_sequential_and_writes_a_trace(tiny_calibrated: Path, tmp_path: Path) -> None:
    import json

    ids = prompt(300, 300, seed=9)  # 5 chunks of 64
    out = {}
    for overlap in (False, True):
        m = pyruntime.load(tiny_calibrated, device="npu", chunk=64, kv_cache="f32", overlap=overlap)
        s = m.session()
        out[overlap] = np.concatenate([s.feed(ids), s.feed([2])])
        s.save_trace(tmp_path / f"trace-{overlap}.json")
        st = s.stats()["placement"]
        assert st["overlap"] == int(overlap) and st["prefill_wall_s"] > 0 and st["cpu"]["busy_s"] > 0
    # Out-of-order execution changes when each task runs, never what it computes.
    np.testing.assert_array_equal(out[False], out[True])
    trace = json.loads((tmp_path / "trace-True.json").read_text())
    events = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    # per chunk: embed; per layer 9 stages + 4 input-outlier tasks (CPU, beside the delegate's); logits
    assert len(events) == 5 * (1 + 2 * (9 + 4) + 1)
    rows = {e["tid"]: set() for e in events}
    for e in events:
        rows[e["tid"]].add(e["name"])
    assert rows[1] == {"qkv", "attn_output", "gate_up", "ffn_down"}  # delegate row: linears only
    assert "attention" in rows[0] and "outliers_qkv" in rows[0] and not rows[0] & rows[1]
    assert {e["args"]["chunk"] for e in events} == set(range(5))
    names = {e["args"]["name"] for e in trace["traceEvents"] if e["ph"] == "M"}
    assert names == {"CPU", "delegate"}
    with pytest.raises(pyruntime.UnsupportedError, match="no delegated prefill"):
        pyruntime.load(tiny_calibrated).session().save_trace(tmp_path / "none.json")
