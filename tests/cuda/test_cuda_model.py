"""device="cuda": whole decoder-only Llama models on the project's CUDA kernels, on a GPU when there is
one and on the CUDA simulator everywhere (the `cu` fixture). References: HF transformers on the same
(fp16-rounded) weights, and the CPU runtime (float activations) on every quantization type, so the
kernels are isolated from quantization error. Tolerances: the GPU path rounds prompt activations to
fp16 for the tensor-core GEMM and attention probabilities to fp16, about 1e-3 of the logit range."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import numpy as np
import pytest

import pyruntime as pr
from tests.conftest import assert_decode_batch_checks, mean_kl

VOCAB = 384
CFG = dict(hidden_size=256, intermediate_size=256, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2)


def device_of(cu: ModuleType) -> str:
    return "cuda-sim" if cu.simulated else "cuda"


@pytest.fixture(scope="module")
def hf_dir(make_hf_llama: Callable[..., Path]) -> Path:
    return make_hf_llama("cuda_model", with_tokenizer=True, **CFG)  # head dim 64: the CUDA kernels' smallest


@pytest.fixture(scope="module")
def gguf(hf_dir: Path, convert: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    out = tmp_path_factory.mktemp("cuda_gguf")
    cache: dict[str, Path] = {}

    def get(quant: str) -> Path:
        if quant not in cache:
            cache[quant] = convert(hf_dir, out / f"m-{quant}.gguf", quant)
        return cache[quant]

    return get


def prompt(n: int, seed: int = 1) -> list[int]:
    return [int(i) for i in np.random.default_rng(seed).integers(0, VOCAB, n)]


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_f16_model_matches_transformers(cu: ModuleType, hf_dir: Path, gguf: Callable[[str], Path]) -> None:
    import torch
    from transformers import LlamaForCausalLM

    hf = LlamaForCausalLM.from_pretrained(hf_dir, torch_dtype=torch.float32).eval()
    with torch.no_grad():
        for p in hf.parameters():  # the f16 file's weights exactly (norms stay f32 in the file too)
            if p.ndim == 2:
                p.copy_(p.half().float())
    ids = prompt(40)
    with torch.no_grad():
        ref = hf(torch.tensor([ids])).logits[0].numpy()
    sess = pr.load(gguf("f16"), device=device_of(cu), context=128).session()
    got = sess.feed(ids)
    assert rel_err(got, ref) < 1e-2
    assert mean_kl(ref, got) < 1e-4
    assert (got.argmax(-1) == ref.argmax(-1)).mean() >= 0.95


@pytest.mark.parametrize(
    "quant,kv",
    [
        ("f16", "f16"),
        ("q8_0", "f16"),
        ("q4_0", "f16"),
        ("q4_1", "f16"),
        ("q8_0", "q8_0"),
        ("q4_1", "q4_0"),
        ("q8_0", "kivi4-g32-r32"),  # window of 32: the 40-token prompt and the steps move tokens out
        ("f16", "kivi2-g32-r32"),
    ],
)
def test_prefill_and_decode_match_the_cpu_runtime(
    cu: ModuleType, gguf: Callable[[str], Path], quant: str, kv: str
) -> None:
    """A 40-token prompt (GEMM + FlashAttention over the cache) then 6 decode steps (GEMV + split-K
    decode attention) against the CPU runtime with float activations on the same file and KV format.
    Quantized caches use the same quantizer on both sides, but the GPU's fp16 activations can move a
    key across a rounding step: there the bound is a tenth of what the format itself costs (KL of
    the CPU's quantized-cache logits from its f16-cache logits), and never tighter than f16's."""
    path = gguf(quant)
    gpu = pr.load(path, device=device_of(cu), context=128, kv_cache=kv).session()
    cpu = pr.load(path, activations="f32", kv_cache=kv).session()
    cpu_f16 = pr.load(path, activations="f32").session()
    ids = prompt(40)
    a, b, r = gpu.feed(ids), cpu.feed(ids), cpu_f16.feed(ids)
    assert a.shape == b.shape == (40, VOCAB)
    assert mean_kl(b, a) < max(1e-4, 0.1 * mean_kl(r, b))
    coarse = kv == "q4_0" or kv.startswith("kivi")  # 2-4 bit codes: a rounding step is a visible change
    assert coarse or rel_err(a, b) < 1e-2
    for tok in (5, 17, 300, 2, 9, 383):  # KIVI quantizes during these: the format's cost appears here
        a, b, r = gpu.feed([tok]), cpu.feed([tok]), cpu_f16.feed([tok])
        assert mean_kl(b, a) < max(1e-4, 0.1 * mean_kl(r, b)), tok
        assert coarse or rel_err(a, b) < 1e-2, tok
    st = gpu.stats()
    assert st["n_past"] == 46 and st["prefill_tokens"] == 40 and st["decode_tokens"] == 6
    assert st["placement"]["all"].startswith(device_of(cu)) and st["placement"]["fallbacks"] == []


def test_prompt_in_pieces_equals_one_pass(cu: ModuleType, gguf: Callable[[str], Path]) -> None:
    """A prompt fed in pieces (each later piece attends to the cached ones: causal bottom-right over
    the cache) gives the one-pass logits; so does a prompt longer than one pass (512 rows). (Pieces of up
    to 16 tokens go through the GEMV with fp32 activations instead, so they are only within the decode
    tolerance of the same tokens inside a prompt.)"""
    model = pr.load(gguf("q8_0"), device=device_of(cu), context=640)
    ids = prompt(75, seed=3)
    whole = model.session().feed(ids)
    s = model.session()
    parts = np.concatenate([s.feed(ids[:30]), s.feed(ids[30:])])
    np.testing.assert_allclose(parts, whole, rtol=0, atol=1e-5 * np.abs(whole).max())
    long_ids = prompt(530, seed=4)
    s = model.session()
    last = s.feed(long_ids)[-1]
    assert s.stats()["gpu_passes"] == 2
    s2 = model.session()
    s2.feed(long_ids[:510])
    np.testing.assert_allclose(s2.feed(long_ids[510:])[-1], last, rtol=0, atol=1e-5 * np.abs(last).max())


def test_batched_prefill_is_padding_free_and_equals_one_by_one(cu: ModuleType, gguf: Callable[[str], Path]) -> None:
    """Model.prefill of prompts of mixed lengths in one packed pass: each session's last logits and its
    cache (seen through the next decode steps) equal those of the prompt fed alone."""
    model = pr.load(gguf("q4_1"), device=device_of(cu), context=96)
    prompts = [prompt(20, seed=10), prompt(70, seed=11), prompt(1, seed=12), prompt(33, seed=13)]
    batched = [model.session() for _ in prompts]
    got = model.prefill(batched, prompts)
    for s, ids, last in zip(batched, prompts, got):
        alone = model.session()
        want = alone._feed(ids, all_logits=False).reshape(-1)  # the last row's logits only, as generation asks
        atol = 1e-5 * np.abs(want).max()
        if len(ids) > 16:  # up to 16 rows alone take the GEMV (fp32 activations), batched the fp16 GEMM
            np.testing.assert_allclose(last, want, rtol=0, atol=atol)
            for tok in (7, 250):
                np.testing.assert_allclose(s.feed([tok])[0], alone.feed([tok])[0], rtol=0, atol=atol)
        else:
            assert rel_err(last, want) < 1e-2
        assert s.stats()["n_past"] == len(ids) + (2 if len(ids) > 1 else 0)
        assert s.stats()["batched_prefills"] == 1
    # Sessions that already hold tokens pack too: the prompt continues each one's cache.
    more = [prompt(4, seed=14), prompt(20, seed=15)]
    cont = model.prefill(batched[:2], more)
    for s in batched[:2]:
        assert s.stats()["batched_prefills"] == 2
    ref = model.session()
    ref.feed(prompts[0] + [7, 250])
    assert rel_err(cont[0], ref._feed(more[0], all_logits=False)) < 1e-2


@pytest.mark.parametrize("quant,kv", [("q4_1", "f16"), ("q8_0", "q8_0"), ("f16", "q4_0"), ("q8_0", "kivi4-g32-r32")])
def test_batched_decode_equals_each_session_alone(
    cu: ModuleType, gguf: Callable[[str], Path], quant: str, kv: str
) -> None:
    """Model.decode steps 11 sessions at once (more than the GEMV's 8 rows: two reads of the weights) over
    caches of ragged lengths (1 to 70 tokens, one empty): every session's logits, and its cache
    through later steps, equal the same session stepped alone (feed of one token: split-K decode
    attention where the batch takes Lean Attention, so the sums merge in another order, and a value
    that differs in its last fp32 bit can round to the neighbouring fp16 in the cache: 1e-4 of the
    range, a tenth of the fp16 tolerance). KIVI's window of 32 moves tokens to 4-bit groups during
    the steps."""
    model = pr.load(gguf(quant), device=device_of(cu), context=96, kv_cache=kv)
    lengths = [12, 70, 1, 33, 0, 5, 64, 2, 40, 9, 31]
    batched = [model.session() for _ in lengths]
    alone = [model.session() for _ in lengths]
    for i, n in enumerate(lengths):
        if n:
            batched[i].feed(prompt(n, seed=20 + i))
            alone[i].feed(prompt(n, seed=20 + i))
    rng = np.random.default_rng(7)
    for step in range(3):
        toks = [int(t) for t in rng.integers(0, VOCAB, len(lengths))]
        got = model.decode(batched, toks)
        assert len(got) == len(lengths)
        for i, tok in enumerate(toks):
            want = alone[i].feed([tok])[0]
            assert got[i].shape == (VOCAB,)
            atol = 1e-4 * np.abs(want).max()
            np.testing.assert_allclose(got[i], want, rtol=0, atol=atol, err_msg=f"step {step} session {i}")
    for s, n in zip(batched, lengths):
        st = s.stats()
        assert st["n_past"] == n + 3 and st["batched_decodes"] == 3
        assert st["decode_tokens"] == 3 + (n == 1)  # a one-token prompt is a decode step too


def test_batched_decode_rejects_bad_batches(cu: ModuleType, gguf: Callable[[str], Path]) -> None:
    """Clear errors, and nothing is fed when one session of the batch is at fault."""
    model = pr.load(gguf("q8_0"), device=device_of(cu), context=8)
    a, b = model.session(), model.session()
    a.feed(prompt(8))
    b.feed(prompt(3))
    other = pr.load(gguf("q8_0"), device=device_of(cu), context=8, kv_cache="q4_0")
    assert_decode_batch_checks(model, other, a, b, VOCAB)


def test_errors_are_clear(cu: ModuleType, gguf: Callable[[str], Path]) -> None:
    model = pr.load(gguf("q8_0"), device=device_of(cu), context=16)
    s = model.session()
    with pytest.raises(pr.TokenOutOfRangeError, match="outside the vocabulary"):
        s.feed([VOCAB])
    s.feed(prompt(10))
    with pytest.raises(pr.ContextOverflowError, match="exceed the context of 16"):
        s.feed(prompt(7))
    assert s.stats()["n_past"] == 10  # the failed feed changed nothing
    with pytest.raises(pr.UnsupportedError, match="one of f16, q8_0, q4_0, kivi"):
        pr.load(gguf("q8_0"), device=device_of(cu), kv_cache="f32")


def test_generate_runs_on_the_device(cu: ModuleType, gguf: Callable[[str], Path]) -> None:
    model = pr.load(gguf("q4_0"), device=device_of(cu), context=64)
    cpu = pr.load(gguf("q4_0"), activations="f32")
    opts: dict[str, Any] = dict(max_new_tokens=6, temperature=0.0)
    got = model.generate("The cat", **opts)
    want = cpu.generate("The cat", **opts)
    assert isinstance(got, pr.Completion) and isinstance(want, pr.Completion)
    assert got.token_ids == want.token_ids  # greedy on logits within 1e-3 of each other: same tokens here
    assert got.text == want.text and len(got.token_ids) == 6


@pytest.mark.parametrize("kv", ["f16", "q8_0"])
def test_generate_batch_steps_the_sessions_together(cu: ModuleType, gguf: Callable[[str], Path], kv: str) -> None:
    """generate_batch on the device: one padding-free prefill (any cache format), then batched decode
    steps (sessions leave the batch as they finish). Greedy tokens equal each prompt's generate() on
    the device."""
    model = pr.load(gguf("q4_0"), device=device_of(cu), context=64, kv_cache=kv)
    prompts: list[Any] = ["The cat", prompt(30, seed=5), prompt(3, seed=6), "A"]
    got = model.generate_batch(prompts, max_new_tokens=9)
    for p, c in zip(prompts, got):
        want = model.generate(p, max_new_tokens=9)
        assert isinstance(want, pr.Completion)
        assert c.token_ids == want.token_ids
    if all(c.stats["finish_reason"] == "length" for c in got):  # all four stepped together to the end:
        assert [c.stats["batched_steps"] for c in got] == [9] * 4  # the packed prefill and 8 decode steps
    short = model.generate_batch(prompts, max_new_tokens=0)
    assert [c.token_ids for c in short] == [[]] * 4


def test_cuda_without_a_gpu_says_why() -> None:
    from tests.cuda.conftest import cuda_module

    try:
        mod = cuda_module()
    except pytest.skip.Exception:
        mod = None
    if mod is not None and mod.device_count() > 0:
        pytest.skip("this machine has a GPU: device='cuda' loads")
    with pytest.raises(pr.UnsupportedError, match="device 'cuda': (this build has no CUDA kernels|no CUDA GPU)"):
        pr.load(Path(__file__), device="cuda")
