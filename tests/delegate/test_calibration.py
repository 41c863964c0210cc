"""W8A8 calibration (SPEC 5.3, 5.5 test 3): our streaming statistics against numpy over activations
captured with forward hooks on the HF model, the clip/hot-channel policy, and the converter CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

import pyruntime
from converters.calibrate import calibration_samples, calibration_tensors, decide, hot_channels, outlier_limit
from converters.cli import main

BOTCHAN = Path(__file__).resolve().parents[3] / "shared" / "testdata" / "text" / "botchan.txt"
HF_TO_GGUF = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


@pytest.fixture(scope="module")
def tiny(
    make_hf_llama: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory, convert: Callable[..., Path]
) -> tuple[Path, Path]:
    hf = make_hf_llama("calib", num_hidden_layers=2)
    return hf, convert(hf, tmp_path_factory.mktemp("calib") / "tiny.gguf", "f32")


def hf_activations(hf: Path, samples: list[list[int]]) -> dict[str, dict[str, np.ndarray]]:
    """Every linear's |input| and |output| over all samples, from HF forward hooks (rows of [T, width])."""
    import torch
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(hf, torch_dtype=torch.float32).eval()
    acts: dict[str, dict[str, list[np.ndarray]]] = {}
    hooks = []
    for i, layer in enumerate(model.model.layers):
        for hf_name, ours in HF_TO_GGUF.items():
            mod = layer.get_submodule(hf_name)
            key = f"blk.{i}.{ours}"

            def hook(_m: Any, inp: Any, out: Any, key: str = key) -> None:
                d = acts.setdefault(key, {"input": [], "output": []})
                d["input"].append(np.abs(inp[0][0].detach().numpy()))
                d["output"].append(np.abs(out[0].detach().numpy()))

            hooks.append(mod.register_forward_hook(hook))
    with torch.no_grad():
        for s in samples:
            model(torch.tensor([s]))
    for h in hooks:
        h.remove()
    return {k: {side: np.concatenate(v[side]) for side in v} for k, v in acts.items()}


def test_statistics_match_numpy_on_hf_activations(tiny: tuple[Path, Path]) -> None:
    hf, gguf_path = tiny
    model = pyruntime.load(gguf_path, activations="f32", kv_cache="f32")
    samples = calibration_samples(model, BOTCHAN.read_text(encoding="utf-8")[:30000], 3, 200)
    assert [len(s) for s in samples] == [200, 200, 200]
    ours = {lin["name"]: lin for lin in model._m.calibrate_linears(samples)}
    ref = hf_activations(hf, samples)
    assert set(ours) == set(ref) and len(ours) == 14
    for name, sides in ref.items():
        for side, a in sides.items():
            flat = a.reshape(-1)
            k = max(1, flat.size // 1000)
            st = ours[name][side]
            assert st["count"] == flat.size
            assert st["max"] == pytest.approx(flat.max(), rel=1e-4)
            assert st["top_0_1"] == pytest.approx(np.partition(flat, -k)[-k], rel=1e-4), (name, side)
            ours_ch, ref_ch = np.asarray(st["channel_max"]), a.max(axis=0)
            if side == "output" and name.endswith(("attn_q", "attn_k")):  # rows permuted for RoPE pairs
                ours_ch, ref_ch = np.sort(ours_ch), np.sort(ref_ch)
            np.testing.assert_allclose(ours_ch, ref_ch, rtol=1e-4, atol=1e-6)
    # second pass: per-channel outlier counts against numpy at each linear's limit
    limits = {n: 0.5 * float(ours[n]["input"]["max"]) for n in ours}
    counts = model._m.count_input_outliers(samples, limits)
    for name, lim in limits.items():
        a = ref[name]["input"]
        exact = (a > lim).sum(axis=0)
        near = np.abs(a - lim) <= 1e-4 * lim  # values at the limit may fall either side (f32 vs torch)
        assert np.all(np.abs(np.asarray(counts[name]) - exact) <= near.sum(axis=0))


def test_clip_decision_and_hot_channels() -> None:
    assert decide({"max": 10.0, "top_0_1": 4.0}, 5.0) == (10.0, True)  # mild tail: clip at the max
    assert decide({"max": 100.0, "top_0_1": 4.0}, 5.0) == (4.0, False)  # extreme tail: shadow beyond top
    assert decide({"max": 0.0, "top_0_1": 0.0}, 5.0)[1] is True
    np.testing.assert_array_equal(hot_channels(np.array([0, 50, 1, 40, 9]), 0.9), [1, 3])
    np.testing.assert_array_equal(hot_channels(np.zeros(4, dtype=np.int64), 0.9), np.zeros(0))
    assert round(outlier_limit(127.0) / 1.0, 6) == 127.5
    lin = {"name": "blk.0.attn_q", "input": {"max": 100.0, "top_0_1": 4.0}, "output": {"max": 2.0, "top_0_1": 1.9}}
    t, summary = calibration_tensors([lin], 5.0, {"blk.0.attn_q": np.array([0, 7, 0, 1])})
    assert t["blk.0.attn_q.input_scale"][0] == pytest.approx(4.0 / 127)
    assert t["blk.0.attn_q.output_scale"][0] == pytest.approx(2.0 / 127)
    assert t["blk.0.attn_q.clip_input"][0] == 0.0 and t["blk.0.attn_q.clip_output"][0] == 1.0
    np.testing.assert_array_equal(t["blk.0.attn_q.hot_channels"], [1, 3])
    assert summary == {"linears": 1, "shadow_inputs": 1, "shadow_outputs": 0, "hot_channels": 2}


def test_cli_calibration_is_reproducible_and_keeps_the_weights(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    import gguf

    _, src = tiny
    text = tmp_path / "t.txt"
    text.write_text(BOTCHAN.read_text(encoding="utf-8")[:8000], encoding="utf-8")
    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    for out in (a, b):
        assert main([str(src), "-o", str(out), "--calibrate", str(text), "--calibration-samples", "2"]) == 0
    assert a.read_bytes() == b.read_bytes()
    ra, rs = gguf.GGUFReader(a), gguf.GGUFReader(src)
    src_tensors = {t.name: t for t in rs.tensors}
    for t in ra.tensors:
        if t.name in src_tensors:
            np.testing.assert_array_equal(t.data, src_tensors[t.name].data)
    names = {t.name for t in ra.tensors}
    for i in range(2):
        for lin in HF_TO_GGUF.values():
            assert {f"blk.{i}.{lin}.{s}" for s in ("input_scale", "output_scale", "clip_input", "clip_output")} <= names
    assert str(ra.get_field("pyrt.calibration.source").contents()) == "t.txt"
    # recalibrating a calibrated file replaces the old tensors instead of duplicating them
    c = tmp_path / "c.gguf"
    assert main([str(a), "-o", str(c), "--calibrate", str(text), "--calibration-samples", "2"]) == 0
    assert c.read_bytes() == a.read_bytes()


def test_cli_calibration_errors(tiny: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, src = tiny
    out = tmp_path / "o.gguf"
    assert main([str(src), "-o", str(out), "--calibrate", str(tmp_path / "missing.txt")]) == 1
    assert "missing.txt: calibration text not found" in capsys.readouterr().err
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    assert main([str(src), "-o", str(out), "--calibrate", str(empty)]) == 1
    assert "empty after tokenization" in capsys.readouterr().err
    text = tmp_path / "t.txt"
    text.write_text("hello world " * 50, encoding="utf-8")
    assert main([str(src), "-o", str(out), "--calibrate", str(text), "--outlier-threshold", "0.5"]) == 1
    assert "--outlier-threshold must be >= 1" in capsys.readouterr().err
    assert not out.exists()
    out.write_bytes(b"mine")
    assert main([str(src), "-o", str(out), "--calibrate", str(text)]) == 1
    assert out.read_bytes() == b"mine"  # nothing the user owns is overwritten without --force
