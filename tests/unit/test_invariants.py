"""Invariants of the decoder: cached == uncached, any chunking of the prompt == one pass, reset."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest

import pyruntime


@pytest.fixture(scope="module")
def tiny(
    make_hf_llama: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory, convert: Callable[..., Path]
) -> Path:
    hf = make_hf_llama("inv", num_hidden_layers=3)
    return convert(hf, tmp_path_factory.mktemp("inv") / "tiny.gguf", "q8_0")


@pytest.mark.parametrize("kv", ["f32", "f16"])
def test_token_by_token_equals_full_forward(tiny: Path, kv: str) -> None:
    model = pyruntime.load(tiny, kv_cache=kv, threads=2)
    ids = [int(i) for i in np.random.default_rng(0).integers(1, model.vocab_size, 70)]
    full = model.logits(ids)
    s = model.session()
    steps = np.concatenate([s.feed([i]) for i in ids])
    # Same cache contents either way (f16 rounding is per element), so the same tolerance holds.
    assert np.abs(full - steps).max() <= 1e-4
    assert s.n_past == len(ids)


@pytest.mark.parametrize("chunk", [1, 3, 7, 64])
def test_chunked_prefill_equals_single_pass(tiny: Path, chunk: int) -> None:
    model = pyruntime.load(tiny, kv_cache="f32", threads=2)
    ids = [int(i) for i in np.random.default_rng(1).integers(1, model.vocab_size, 100)]
    full = model.logits(ids)
    s = model.session()
    parts = np.concatenate([s.feed(ids[k : k + chunk]) for k in range(0, len(ids), chunk)])
    assert np.abs(full - parts).max() <= 1e-4


@pytest.mark.parametrize("table", ["generic", "avx2"])
@pytest.mark.parametrize("kv", ["f32", "f16"])
def test_prefill_is_bit_identical_to_decode(tiny: Path, kv: str, table: str) -> None:
    """Every kernel a prompt takes (packed GEMM panels, attention rows) has a token's arithmetic fixed
    whatever the batch, so any split of a 300-token prompt (GQA, several panels and key quads) gives
    the same bits as one pass. 8-bit activation rounding would amplify any difference."""
    from pyruntime import _core

    if not _core.set_kernels(table):
        pytest.skip(f"this CPU has no {table} kernels")
    try:
        model = pyruntime.load(tiny, kv_cache=kv, threads=2)
        ids = [int(i) for i in np.random.default_rng(2).integers(1, model.vocab_size, 300)]
        full = model.logits(ids)
        for chunk in (1, 5, 128):
            s = model.session()
            parts = np.concatenate([s.feed(ids[k : k + chunk]) for k in range(0, len(ids), chunk)])
            np.testing.assert_array_equal(parts, full, err_msg=f"chunk {chunk}")
    finally:
        _core.set_kernels("auto")


@pytest.mark.parametrize("chunk", [None, 16])
def test_last_row_only_prefill_keeps_bits_and_cache(tiny: Path, chunk: int | None) -> None:
    """A prompt fed for its last logits only runs the last layer's output projection and FFN for that
    row (and, chunked, not at all for earlier chunks): the logits keep the full pass's bits (8-bit
    activations: per-row arithmetic whatever the row count), and the cache still holds every token, so
    what follows matches the full pass too."""
    model = pyruntime.load(tiny, kv_cache="f16", threads=2, chunk=chunk)
    ids = [int(i) for i in np.random.default_rng(3).integers(1, model.vocab_size, 70)]
    full = model.logits(ids)
    s = model.session()
    last = s._feed(ids[:60], all_logits=False)
    assert last.shape[0] == 1
    np.testing.assert_array_equal(last[0], full[59])
    np.testing.assert_array_equal(s.feed(ids[60:]), full[60:])


def test_reset_and_kv_bytes(tiny: Path) -> None:
    model = pyruntime.load(tiny, kv_cache="f16")
    s = model.session()
    assert s.kv_bytes == 0
    a = s.feed([5, 6, 7])
    assert s.kv_bytes > 0 and s.n_past == 3
    st = s.stats()
    assert st["n_past"] == 3 and st["kv_cache"] == "f16" and st["placement"]["all"] == "cpu"
    assert st["placement"]["fallbacks"] == []
    s.reset()
    assert s.n_past == 0 and s.kv_bytes == 0
    np.testing.assert_array_equal(s.feed([5, 6, 7]), a)


def test_f32_cache_is_twice_f16(tiny: Path) -> None:
    s16 = pyruntime.load(tiny, kv_cache="f16").session()
    s32 = pyruntime.load(tiny, kv_cache="f32").session()
    s16.feed([1] * 10)
    s32.feed([1] * 10)
    assert s32.kv_bytes == 2 * s16.kv_bytes


def test_sessions_are_independent(tiny: Path) -> None:
    model = pyruntime.load(tiny)
    a, b = model.session(), model.session()
    la = a.feed([1, 2, 3])
    b.feed([9, 9, 9, 9])
    np.testing.assert_allclose(a.feed([4]), model.logits([1, 2, 3, 4])[-1:], atol=1e-4)
    assert la.shape == (3, model.vocab_size)


def test_long_prompt_runs_in_micro_batches_with_one_pass_bits(tiny: Path) -> None:
    """A prompt over 512 tokens goes through the layers in even micro-batches (bounded activation
    memory, as llama.cpp's n_ubatch): 1300 tokens make 3 passes of at most 434 rows, and the logits and
    what follows are the bits of feeding the same prompt in other splits."""
    model = pyruntime.load(tiny, kv_cache="f16", threads=2, context=1400)
    ids = [int(i) for i in np.random.default_rng(6).integers(1, model.vocab_size, 1310)]
    s = model.session()
    full = s.feed(ids[:1300])
    assert s.stats()["cpu_passes"] == 3
    np.testing.assert_array_equal(s.feed(ids[1300:]), model.logits(ids)[1300:])
    parts = model.session()
    pieces = np.concatenate([parts.feed(ids[k : min(k + 400, 1300)]) for k in range(0, 1300, 400)])
    np.testing.assert_array_equal(pieces, full)
    last = model.session()._feed(ids[:1300], all_logits=False)
    np.testing.assert_array_equal(last[0], full[-1])
    kivi = pyruntime.load(tiny, kv_cache="kivi4-g16-r32", threads=2, context=1400).session()
    kivi.feed(ids[:1300])
    assert kivi.stats()["cpu_passes"] == 1  # KIVI's prefill attends the whole prompt in fp16: one pass
