"""Sampling: greedy, temperature, top-k, top-p, min-p, repetition penalty, seeds."""

from __future__ import annotations

import numpy as np
import pytest

from pyruntime import _core
from pyruntime.errors import InvalidArgumentError


def draws(logits: np.ndarray, n: int, **kw: float) -> np.ndarray:
    s = _core.Sampler(**kw)
    return np.array([s.sample(logits) for _ in range(n)])


def test_greedy_is_argmax_with_lowest_id_on_ties() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        logits = rng.standard_normal(1000).astype(np.float32)
        assert _core.Sampler().sample(logits) == int(np.argmax(logits))
    assert _core.Sampler().sample(np.array([1.0, 3.0, 3.0], np.float32)) == 1


def test_temperature_matches_softmax_frequencies() -> None:
    logits = np.log(np.array([0.1, 0.2, 0.3, 0.4], np.float32))
    n = 40_000
    counts = np.bincount(draws(logits, n, temperature=1.0, seed=5), minlength=4) / n
    np.testing.assert_allclose(counts, [0.1, 0.2, 0.3, 0.4], atol=0.01)
    # temperature 0.5 squares the probabilities (then renormalises)
    p = np.array([0.1, 0.2, 0.3, 0.4]) ** 2
    counts = np.bincount(draws(logits, n, temperature=0.5, seed=6), minlength=4) / n
    np.testing.assert_allclose(counts, p / p.sum(), atol=0.01)


def test_top_k_top_p_min_p_restrict_support() -> None:
    logits = np.log(np.array([0.05, 0.5, 0.3, 0.15], np.float32))
    assert set(draws(logits, 3000, temperature=1.0, top_k=2, seed=1)) == {1, 2}
    # top_p 0.75: 0.5 + 0.3 reach it, 0.15 and 0.05 are cut
    assert set(draws(logits, 3000, temperature=1.0, top_p=0.75, seed=2)) == {1, 2}
    # min_p 0.5: keep tokens with p >= 0.25 (half of the top 0.5)
    assert set(draws(logits, 3000, temperature=1.0, min_p=0.5, seed=3)) == {1, 2}
    assert set(draws(logits, 500, temperature=1.0, top_k=1, seed=4)) == {1}


def test_seed_reproducible_and_different_seeds_differ() -> None:
    logits = np.zeros(5000, np.float32)
    a = draws(logits, 200, temperature=1.0, seed=42)
    b = draws(logits, 200, temperature=1.0, seed=42)
    c = draws(logits, 200, temperature=1.0, seed=43)
    assert (a == b).all() and (a != c).any()


def test_repetition_penalty() -> None:
    logits = np.array([2.0, 1.9, -1.0], np.float32)
    s = _core.Sampler(repeat_penalty=1.5)
    assert s.sample(logits) == 0
    s.accept(0)
    assert s.sample(logits) == 1  # 2.0 / 1.5 < 1.9
    s.reset()
    assert s.sample(logits) == 0


@pytest.mark.parametrize(
    "kw",
    [
        dict(top_p=0.0),
        dict(top_p=1.5),
        dict(min_p=-0.1),
        dict(top_k=-1),
        dict(repeat_penalty=0.0),
        dict(temperature=float("nan")),
    ],
)
def test_invalid_parameters(kw: dict[str, float]) -> None:
    with pytest.raises(InvalidArgumentError):
        _core.Sampler(**kw)
