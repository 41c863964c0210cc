"""Model.decode on the CPU: one step of several conversations as one batched pass (each linear over the
sessions' rows, so every weight is read once for all of them; attention per session over its own
cache). With quantized weights and 8-bit activations every output follows one per-block formula, so
each session must get exactly the bits of its own feed(); F16 rows go through a different GEMM from 4
rows on (another summation order), and a key or value that differs in its last fp32 bit can round to
the neighbouring fp16 in the cache, so there the bound is 1e-4 of the logit range."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest

import pyruntime as pr
from tests.conftest import assert_decode_batch_checks

VOCAB = 384


@pytest.fixture(scope="module")
def hf_dir(make_hf_llama: Callable[..., Path]) -> Path:
    return make_hf_llama("batched_decode", hidden_size=128, intermediate_size=256, num_key_value_heads=2)


def prompt(n: int, seed: int) -> list[int]:
    return [int(i) for i in np.random.default_rng(seed).integers(0, VOCAB, n)]


@pytest.mark.parametrize("quant,kv", [("q8_0", "f16"), ("q4_1", "q8_0"), ("q4_0", "kivi4-g32-r32"), ("f16", "f16")])
@pytest.mark.parametrize("n_sessions", [2, 6, 9])  # up to 7 rows: the decode GEMV; from 8: the packed tiles
def test_batched_decode_equals_each_session_alone(
    hf_dir: Path, convert: Callable[..., Path], tmp_path: Path, quant: str, kv: str, n_sessions: int
) -> None:
    path = convert(hf_dir, tmp_path / f"m-{quant}.gguf", quant)
    model = pr.load(path, threads=2, kv_cache=kv, context=96)
    assert model._batches_decode()
    lengths = [11, 40, 1, 0, 33, 7, 20, 2, 5][:n_sessions]  # ragged caches, one empty
    batched = [model.session() for _ in lengths]
    alone = [model.session() for _ in lengths]
    for i, n in enumerate(lengths):
        if n:
            batched[i].feed(prompt(n, seed=i))
            alone[i].feed(prompt(n, seed=i))
    rng = np.random.default_rng(3)
    for step in range(4):  # KIVI's window of 32 moves tokens into 4-bit groups along the way
        toks = [int(t) for t in rng.integers(0, VOCAB, len(lengths))]
        got = model.decode(batched, toks)
        for i, tok in enumerate(toks):
            want = alone[i].feed([tok])[0]
            if quant == "f16":
                np.testing.assert_allclose(got[i], want, rtol=0, atol=1e-4 * np.abs(want).max())
            else:
                np.testing.assert_array_equal(got[i], want, err_msg=f"step {step} session {i}")
    for s, n in zip(batched, lengths):
        st = s.stats()
        assert st["n_past"] == n + 4 and st["batched_decodes"] == 4


def test_batched_decode_checks_before_feeding(hf_dir: Path, convert: Callable[..., Path], tmp_path: Path) -> None:
    path = convert(hf_dir, tmp_path / "m.gguf", "q8_0")
    model = pr.load(path, threads=2, context=8)
    a, b = model.session(), model.session()
    a.feed(prompt(8, seed=1))
    b.feed(prompt(3, seed=2))
    assert_decode_batch_checks(model, pr.load(path, threads=2, context=8), a, b, VOCAB)
