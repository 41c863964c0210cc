"""device="cuda" for T5 (encoder-decoder): on a GPU when there is one and on the CUDA simulator
everywhere. References: HF transformers' T5ForConditionalGeneration (fp32) and the CPU runtime on the
same file. Tolerances: the GPU rounds prompt activations and attention probabilities to fp16 (about
1e-3 of the logit range); T5's unscaled attention scores make it a little looser than Llama's."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import numpy as np
import pytest

import pyruntime as pr
from tests.conftest import mean_kl
from tests.parity.test_t5_hf import _make_t5

SHAPES: dict[str, dict[str, Any]] = {
    # v1.1 / FLAN: gated GELU, untied head; head dim 64 (the CUDA kernels' smallest)
    "v1.1": dict(
        vocab_size=320,
        d_model=128,
        d_kv=64,
        d_ff=256,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=2,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
    ),
    # v1.0: ReLU, tied head with the d_model^-0.5 logit scale
    "v1.0": dict(vocab_size=320, d_model=128, d_kv=64, d_ff=256, num_layers=2, num_heads=2, feed_forward_proj="relu"),
}


def device_of(cu: ModuleType) -> str:
    return "cuda-sim" if cu.simulated else "cuda"


@pytest.fixture(scope="module", params=list(SHAPES))
def t5(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, convert: Callable[..., Path]
) -> tuple[Any, Path]:
    folder = tmp_path_factory.mktemp("t5gpu")
    hf = _make_t5(folder / "hf", seed=3, **SHAPES[request.param])
    return hf, convert(folder / "hf", folder / "model.gguf", "f16")


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_t5_matches_transformers_and_the_cpu(cu: ModuleType, t5: tuple[Any, Path]) -> None:
    import torch

    hf, gguf = t5
    with torch.no_grad():  # the f16 file's weights exactly
        for p in hf.parameters():
            if p.ndim == 2:
                p.copy_(p.half().float())
    rng = np.random.default_rng(2)
    enc = [int(i) for i in rng.integers(2, 320, 37)]
    dec = [0] + [int(i) for i in rng.integers(2, 320, 11)]
    with torch.no_grad():
        out = hf(input_ids=torch.tensor([enc]), decoder_input_ids=torch.tensor([dec]))
        ref_logits = out.logits[0].numpy()
        ref_states = out.encoder_last_hidden_state[0].numpy()
    gpu = pr.load(gguf, device=device_of(cu), context=64)
    cpu = pr.load(gguf, activations="f32", kv_cache="f16")
    states = gpu.encode(enc)
    assert rel_err(states, ref_states) < 1e-2
    s = gpu.session()
    s.set_encoder(enc)
    assert s.encoder_length == 37
    prompt_logits = s.feed(dec[:6])  # a decoder prompt (GEMM, FlashAttention with the causal bias)
    steps = np.stack([s.feed([t])[0] for t in dec[6:]])  # then single steps (GEMV, Sq = 1)
    got = np.concatenate([prompt_logits, steps])
    assert rel_err(got, ref_logits) < 2e-2 and mean_kl(ref_logits, got) < 1e-4
    c = cpu.session()
    c.set_encoder(enc)
    want = c.feed(dec)
    assert rel_err(got, want) < 2e-2 and mean_kl(want, got) < 1e-4
    st = s.stats()
    assert st["encoder_length"] == 37 and st["tokens_fed"] == 12 and st["placement"]["all"].startswith(device_of(cu))


def test_t5_encoder_batch_is_padding_free(cu: ModuleType, t5: tuple[Any, Path]) -> None:
    """SPEC 6.5.1 in the model: a right-padded batch of mixed lengths (an empty row too) encoded in one
    packed pass equals each row encoded alone on the CPU runtime; pad rows are exactly 0."""
    _, gguf = t5
    gpu = pr.load(gguf, device=device_of(cu), context=64)
    cpu = pr.load(gguf, activations="f32", kv_cache="f16")
    lengths = [1, 15, 0, 37, 24]
    rng = np.random.default_rng(4)
    ids = np.zeros((len(lengths), max(lengths)), np.int64)
    mask = np.zeros_like(ids)
    for b, n in enumerate(lengths):
        ids[b, :n], mask[b, :n] = rng.integers(2, 320, n), 1
    got = gpu.encode(ids, attention_mask=mask)
    assert got.shape == (5, 37, 128)
    for b, n in enumerate(lengths):
        assert (got[b, n:] == 0).all()
        if n:
            want = cpu.encode(ids[b, :n])
            assert rel_err(got[b, :n], want) < 1e-2, b
        if n > 16:  # alone, up to 16 rows take the GEMV (fp32 activations), in a batch the fp16 GEMM
            np.testing.assert_allclose(got[b, :n], gpu.encode(ids[b, :n]), rtol=0, atol=1e-5 * np.abs(want).max())


def test_t5_generate_on_the_device(cu: ModuleType, t5: tuple[Any, Path]) -> None:
    _, gguf = t5
    gpu = pr.load(gguf, device=device_of(cu), context=64)
    cpu = pr.load(gguf, activations="f32", kv_cache="f16")
    ids = [5, 17, 99, 3, 250, 7]
    got, want = gpu.generate(ids, max_new_tokens=8), cpu.generate(ids, max_new_tokens=8)
    assert isinstance(got, pr.Completion) and isinstance(want, pr.Completion)
    assert got.token_ids == want.token_ids
    s = gpu.session()
    with pytest.raises(pr.InvalidArgumentError, match="encoder input"):
        s.feed([0])
    # Encoder states from elsewhere (Model.encode) work on the device as they do on the CPU.
    s.set_encoder_states(gpu.encode(ids))
    c = cpu.session()
    c.set_encoder(ids)
    start = int(gpu.decoder_start_token or 0)
    assert rel_err(s.feed([start]), c.feed([start])) < 1e-2
