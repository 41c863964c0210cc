"""Encoder-decoders other than T5 on the device: the Mu graph (biased linears, NeoX RoPE with centred,
negative encoder positions, bidirectional encoder attention, cross-attention, tanh-GELU) on the CUDA
backend against the CPU runtime on the same file. Mu with fewer KV heads than query heads tiles them
(query head h reads KV head h % n_kv), which the GPU attention kernels do not do: a clear error."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any, Callable
from unittest import mock

import numpy as np
import pytest

import pyruntime as pr
from tests.parity import test_mu_reference as mu_ref


def device_of(cu: ModuleType) -> str:
    return "cuda-sim" if cu.simulated else "cuda"


def mu_gguf(folder: Path, convert: Callable[..., Path], n_kv_head: int) -> Path:
    from safetensors.torch import save_file

    cfg = dict(mu_ref.CFG, n_kv_head=n_kv_head, n_encoder_layer=2)
    with mock.patch.dict(mu_ref.CFG, cfg):
        sd = mu_ref._weights(seed=5)
    save_file({k: v.float().contiguous() for k, v in sd.items()}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(
        json.dumps({"mu_config": cfg, "bos_token_id": mu_ref.BOS, "eos_token_id": mu_ref.EOS})
    )
    return convert(folder, folder / "mu.gguf", "f16")


def rel_err(a: Any, b: Any) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())


def test_mu_on_the_device_matches_the_cpu(cu: ModuleType, tmp_path: Path, convert: Callable[..., Path]) -> None:
    path = mu_gguf(tmp_path, convert, n_kv_head=8)  # 8 of 8: tiled = grouped
    gpu = pr.load(path, device=device_of(cu), context=64)
    cpu = pr.load(path, activations="f32", kv_cache="f16")
    enc = [int(i) for i in np.random.default_rng(2).integers(3, 300, 23)]
    assert rel_err(gpu.encode(enc), cpu.encode(enc)) < 1e-2
    sg, sc = gpu.session(), cpu.session()
    sg.set_encoder(enc)
    sc.set_encoder(enc)
    dec = [mu_ref.BOS, 7, 99, 250, 3]
    assert rel_err(sg.feed(dec), sc.feed(dec)) < 1e-2
    for tok in (11, 42):
        assert rel_err(sg.feed([tok]), sc.feed([tok])) < 1e-2
    st = sg.stats()
    assert st["encoder_length"] == 23 and st["n_past"] == 7 and st["placement"]["all"] == device_of(cu)


def test_tiled_kv_heads_say_they_need_the_cpu(cu: ModuleType, tmp_path: Path, convert: Callable[..., Path]) -> None:
    path = mu_gguf(tmp_path, convert, n_kv_head=2)
    s = pr.load(path, device=device_of(cu), context=32).session()
    with pytest.raises(pr.UnsupportedError, match="tiled KV heads"):
        s.set_encoder([5, 6, 7])
