"""The onnxruntime delegate against the reference delegate (same graphs, same chunks), and Python
delegates behind the native interface (availability, errors, output checks)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import pyruntime
from pyruntime import _core

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is an optional extra (pip install 'pyruntime[npu]')")

from pyruntime.delegates.onnx_graph import qdq_linear  # noqa: E402
from pyruntime.delegates.onnxruntime import OnnxRuntimeDelegate  # noqa: E402

from .test_chunked_prefill import prompt, tiny_calibrated, tiny_f32  # noqa: E402,F401


def random_graph(
    rows: int, k: int, n: int, seed: int, per_channel: bool = False
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 0.05, (n, k)).astype(np.float32) * rng.uniform(0.2, 2.0, (n, 1)).astype(np.float32)
    x = rng.normal(0, 4, (rows, k)).astype(np.float32)  # many inputs clip at +-128
    s_x, s_y = 3.0 / 127, 5.0 / 127
    y_q, _, wq, s_w, _ = _core.w8a8_linear(w, x, s_x, s_y, outliers=False, per_channel=per_channel)
    scales = np.asarray(s_w, dtype=np.float32) if per_channel else np.full(n, s_w, dtype=np.float32)
    graph = dict(
        name="g",
        rows=rows,
        in_features=k,
        out_features=n,
        weight=wq,
        weight_scales=scales,
        input_scale=s_x,
        output_scale=s_y,
    )
    return graph, x, y_q


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("rows,k,n", [(1, 16, 8), (7, 33, 17), (64, 576, 192), (128, 1536, 576)])
def test_integer_graph_equals_reference_bit_for_bit(rows: int, k: int, n: int, per_channel: bool) -> None:
    graph, x, y_ref = random_graph(rows, k, n, seed=rows + k, per_channel=per_channel)
    d = OnnxRuntimeDelegate(threads=2, providers=["CPUExecutionProvider"], form="integer")
    h = d.prepare(graph)
    np.testing.assert_array_equal(d.execute(h, x), y_ref)
    d.release(h)


@pytest.mark.parametrize("per_channel", [False, True])
def test_qdq_graph_is_the_same_arithmetic_up_to_float_ties(per_channel: bool) -> None:
    graph, x, y_ref = random_graph(128, 576, 1536, seed=3, per_channel=per_channel)
    d = OnnxRuntimeDelegate(threads=2, providers=["CPUExecutionProvider"], form="qdq")
    y = d.execute(d.prepare(graph), x).astype(np.int16)
    diff = np.abs(y - y_ref)
    # The CPU provider runs the QDQ MatMul in float: results on the other side of a .5 tie move by one.
    assert diff.max() <= 1 and (diff != 0).mean() < 1e-3


def test_qdq_model_structure() -> None:
    import onnx

    graph, _, _ = random_graph(8, 32, 16, seed=4)
    m = onnx.load_from_string(qdq_linear(graph))
    assert [n.op_type for n in m.graph.node] == [
        "QuantizeLinear",
        "DequantizeLinear",
        "DequantizeLinear",
        "MatMul",
        "QuantizeLinear",
    ]
    dims = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [8, 32]  # static shape: one chunk
    with pytest.raises(ValueError, match="unknown ONNX graph form"):
        qdq_linear(graph, "fp8")


def test_model_on_onnxruntime_equals_reference_delegate(tiny_calibrated: Path) -> None:  # noqa: F811
    ids = prompt(150, 300, seed=8)
    out = {}
    for d in ("reference", "onnxruntime"):
        m = pyruntime.load(tiny_calibrated, device="npu", delegate=d, chunk=64, kv_cache="f32")
        s = m.session()
        out[d] = np.concatenate([s.feed(ids), s.feed([4])])
        st = s.stats()["placement"]
        assert st["prefill_linears"] == d and st[d]["linear_calls"] == 3 * 2 * 7
    np.testing.assert_array_equal(out["reference"], out["onnxruntime"])
    assert "onnxruntime: no accelerator on this machine" in st["fallbacks"][0]  # CPU provider only here


class FakeDelegate:
    name = "fake"

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def is_available(self) -> tuple[bool, str]:
        return (self.mode != "missing", "the fake NPU driver is not installed")

    def prepare(self, graph: dict[str, Any]) -> int:
        self.out = getattr(self, "out", []) + [int(graph["out_features"])]
        return 1 if self.mode == "same-handle" else len(self.out)

    def execute(self, handle: int, x: np.ndarray) -> np.ndarray:
        if self.mode == "raises":
            raise RuntimeError("device lost")
        if self.mode == "bad-shape":
            return np.zeros((1, 1), dtype=np.int8)
        return np.zeros((x.shape[0], self.out[handle - 1]), dtype=np.int8)

    def release(self, handle: int) -> None:
        pass

    def runs_on(self) -> str:
        return "fake-npu"


@pytest.mark.parametrize("mode", ["missing", "same-handle", "raises", "bad-shape", "ok"])
def test_python_delegates_fail_cleanly(tiny_calibrated: Path, mode: str) -> None:  # noqa: F811
    _core.register_delegate(f"fake-{mode}", lambda threads, mode=mode: FakeDelegate(mode))
    assert f"fake-{mode}" in pyruntime.delegates.available_delegates()
    if mode == "missing":
        with pytest.raises(pyruntime.UnsupportedError, match="not available: the fake NPU driver is not installed"):
            pyruntime.load(tiny_calibrated, device="npu", delegate=f"fake-{mode}")
        return
    if mode == "same-handle":
        with pytest.raises(pyruntime.PyruntimeError, match="returned handle 1 for a second graph"):
            pyruntime.load(tiny_calibrated, device="npu", delegate=f"fake-{mode}")
        return
    m = pyruntime.load(tiny_calibrated, device="npu", delegate=f"fake-{mode}", chunk=16)
    s = m.session()
    if mode == "raises":
        s.feed([5])  # decode runs on the CPU
        with pytest.raises(RuntimeError, match="device lost"):
            s.feed(prompt(20, 300))
        # the half-fed prompt does not leave a cache that disagrees with n_past: the session starts over
        assert s.n_past == 0 and s.kv_bytes == 0
        assert s.feed([5]).shape == (1, m.vocab_size)
    elif mode == "bad-shape":
        with pytest.raises(pyruntime.PyruntimeError, match="returned the wrong output shape"):
            s.feed(prompt(20, 300))
    else:
        s.feed(prompt(20, 300))
        st = s.stats()["placement"]
        assert st["delegate_runs_on"] == "fake-npu" and st["fallbacks"] == []


def test_converter_exports_every_graph(tiny_calibrated: Path, tiny_f32: Path, tmp_path: Path) -> None:  # noqa: F811
    import json

    from converters.cli import main

    out = tmp_path / "graphs"
    assert main([str(tiny_calibrated), "--export-onnx", str(out), "--chunk", "32", "--onnx-form", "integer"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())["graphs"]
    assert len(manifest) == 2 * 7 and {g["rows"] for g in manifest} == {32}
    # Each exported file computes what the runtime's reference delegate computes for that graph.
    model = pyruntime.load(tiny_calibrated, device="npu", chunk=32)
    graphs = {g["name"]: g for g in model._m.delegate_graphs()}
    rng = np.random.default_rng(13)
    for entry in manifest:
        g = graphs[entry["name"]]
        x = rng.normal(0, 2 * 127 * g["input_scale"] / 3, (32, g["in_features"])).astype(np.float32)
        sess = ort.InferenceSession(str(out / entry["file"]), providers=["CPUExecutionProvider"])
        # the C++ reference delegate on the same int8 weights (W~ * s_w requantizes to W~ exactly)
        w = np.asarray(g["weight"], dtype=np.float32) * np.asarray(g["weight_scales"], dtype=np.float32)[:, None]
        y_ref, _, wq, _, _ = _core.w8a8_linear(
            w, x, g["input_scale"], g["output_scale"], outliers=False, per_channel=True
        )
        np.testing.assert_array_equal(wq, g["weight"])
        np.testing.assert_array_equal(sess.run(None, {"x": x})[0], y_ref)
    # refuses to overwrite, and an uncalibrated file names the fix
    assert main([str(tiny_calibrated), "--export-onnx", str(out)]) == 1
    assert main([str(tiny_f32), "--export-onnx", str(tmp_path / "g2")]) == 1
    assert not (tmp_path / "g2").exists()
