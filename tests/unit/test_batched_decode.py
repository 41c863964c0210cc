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


@pytest.mark.parametrize("quant,kv", [("q8_0", "f16"), ("q4_0", "q8_0")])
def test_encoder_decoder_batched_decode_equals_each_session_alone(
    tmp_path: Path, convert: Callable[..., Path], quant: str, kv: str
) -> None:
    """T5: a batched step runs the decoder's linears once over the sessions' rows, self-attention over
    each session's own cache (its own relative-position bias) and cross-attention over its own encoder
    output; quantized weights: each session gets exactly its own feed's bits. Sessions without an
    encoder input are refused."""
    from tests.parity.test_t5_hf import _make_t5

    hf = tmp_path / "t5"
    _make_t5(hf, seed=3, vocab_size=320, d_model=128, d_kv=32, d_ff=256, num_layers=2, num_heads=4)
    model = pr.load(convert(hf, tmp_path / "t5.gguf", quant), threads=2, kv_cache=kv, context=64)
    assert model._batches_decode()
    inputs = [[5, 17, 99, 3], [250, 7, 8, 9, 10, 11, 12, 13, 14, 2], [42]]
    prefixes = [[0, 5, 6], [0], [0, 9, 9, 9, 9, 9]]  # decoder tokens fed before the batched steps
    batched = [model.session() for _ in inputs]
    alone = [model.session() for _ in inputs]
    for group in (batched, alone):
        for s, ids, pre in zip(group, inputs, prefixes):
            s.set_encoder(ids)
            s.feed(pre)
    rng = np.random.default_rng(4)
    for step in range(3):
        toks = [int(t) for t in rng.integers(2, 320, len(inputs))]
        got = model.decode(batched, toks)
        for i, tok in enumerate(toks):
            np.testing.assert_array_equal(got[i], alone[i].feed([tok])[0], err_msg=f"step {step} session {i}")
    assert [s.stats()["batched_decodes"] for s in batched] == [3, 3, 3]
    assert [s.n_past for s in batched] == [len(p) + 3 for p in prefixes]
    fresh = model.session()
    with pytest.raises(pr.InvalidArgumentError, match="session 1 has no encoder input"):
        model.decode([batched[0], fresh], [1, 2])
    together = model.generate_batch(inputs, max_new_tokens=5)  # each encodes once, decodes in one batch
    for ids, c in zip(inputs, together):
        want = model.generate(ids, max_new_tokens=5)
        assert isinstance(want, pr.Completion) and c.token_ids == want.token_ids
