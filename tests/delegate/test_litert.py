"""The litert delegate (int8 TFLite models written without TensorFlow) against the reference delegate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import pyruntime

pytest.importorskip("ai_edge_litert", reason="ai-edge-litert is an optional extra (pip install 'pyruntime[npu]')")

from pyruntime.delegates.litert import LiteRtDelegate  # noqa: E402

from .test_chunked_prefill import prompt, tiny_calibrated, tiny_f32  # noqa: E402,F401
from .test_onnxruntime import random_graph  # noqa: E402


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("rows,k,n", [(1, 16, 8), (7, 33, 17), (64, 576, 192), (128, 1536, 576)])
def test_tflite_graph_matches_reference(rows: int, k: int, n: int, per_channel: bool) -> None:
    graph, x, y_ref = random_graph(rows, k, n, seed=rows * 7 + n, per_channel=per_channel)
    d = LiteRtDelegate(threads=2)
    assert d.is_available() == (True, "")
    y = d.execute(d.prepare(graph), x).astype(np.int16)
    assert y.shape == (rows, n)
    diff = np.abs(y - y_ref)
    # fixed-point requantization in TFLite: a result on a rounding tie may move by one step
    assert diff.max() <= 1 and (diff != 0).mean() < 1e-3


def test_tflite_model_structure() -> None:
    from ai_edge_litert import schema_py_generated as fb

    from pyruntime.delegates.tflite_graph import int8_linear

    graph, _, _ = random_graph(8, 32, 16, seed=5)
    blob = int8_linear(graph)
    assert blob[4:8] == b"TFL3"
    m = fb.ModelT.InitFromObj(fb.Model.GetRootAs(blob, 0))
    sg = m.subgraphs[0]
    assert [m.operatorCodes[op.opcodeIndex].builtinCode for op in sg.operators] == [
        fb.BuiltinOperator.QUANTIZE,
        fb.BuiltinOperator.FULLY_CONNECTED,
    ]
    assert list(sg.tensors[0].shape) == [8, 32] and list(sg.tensors[3].shape) == [8, 16]
    assert sg.tensors[1].type == fb.TensorType.INT8


def test_model_on_litert_tracks_reference(tiny_calibrated: Path) -> None:  # noqa: F811
    ids = prompt(150, 300, seed=14)
    ref = pyruntime.load(tiny_calibrated, device="npu", chunk=64, kv_cache="f32").session().feed(ids)
    f32 = pyruntime.load(tiny_calibrated, kv_cache="f32", activations="f32").session().feed(ids)
    s = pyruntime.load(tiny_calibrated, device="npu", delegate="litert", chunk=64, kv_cache="f32").session()
    out = s.feed(ids)
    st = s.stats()["placement"]
    assert st["prefill_linears"] == "litert" and st["litert"]["linear_calls"] == 3 * 2 * 7
    assert "litert: no accelerator on this machine" in st["fallbacks"][0]
    # ties aside it is the reference arithmetic: far closer to it than int8 is to float
    assert np.abs(out - ref).mean() <= 0.1 * np.abs(ref - f32).mean()
