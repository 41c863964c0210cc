"""Mu ("Return of the Encoder") against the original authors' code: ../shared/golden/encdec_mu holds
the repo's Mu on random weights (fp32) and its outputs. Tolerances (golden README, SPEC 3.3): encoder
states and logits <= 1e-4 absolute; greedy generation token-identical; GQA head mapping h % n_kv.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

import pyruntime
from converters.safetensors_reader import iter_tensors
from tests.conftest import SHARED

GOLDEN = SHARED / "golden" / "encdec_mu"
PAD, BOS, EOS = 0, 1, 2


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    return dict(iter_tensors(GOLDEN / "golden.safetensors"))


@pytest.fixture(scope="module")
def mu_gguf(tmp_path_factory: pytest.TempPathFactory, convert: Callable[..., Path]) -> Path:
    return convert(GOLDEN, tmp_path_factory.mktemp("mu") / "mu.gguf", "f32")


@pytest.fixture(scope="module")
def mu(mu_gguf: Path) -> Any:
    return pyruntime.load(mu_gguf, kv_cache="f32", threads=2)


def test_model_shape(mu: Any) -> None:
    assert mu.is_encoder_decoder and mu.decoder_start_token == BOS
    assert mu.info["n_params"] == 760576  # the reference's count; lm_head is the tied wte, stored once
    assert mu._m.metadata["mu.attention.head_count_kv"] == 3


def test_encoder_and_teacher_forced_logits(mu: Any, golden: dict[str, np.ndarray]) -> None:
    enc_ids, dec_ids = golden["fwd.encoder_input_ids"], golden["fwd.decoder_input_ids"]
    states = mu.encode(enc_ids, attention_mask=enc_ids != PAD)
    for b in range(enc_ids.shape[0]):
        n = int((enc_ids[b] != PAD).sum())
        assert np.abs(states[b, :n] - golden["fwd.encoder_hidden"][b, :n]).max() <= 1e-4
        m = int((dec_ids[b] != PAD).sum())
        logits = mu.logits(dec_ids[b, :m], encoder_ids=enc_ids[b, :n])
        assert np.abs(logits - golden["fwd.logits"][b, :m]).max() <= 1e-4
    # Row 1 encoded alone (the reference's own unpadded run).
    alone = golden["fwd.encoder_hidden_row1_alone"][0]
    assert np.abs(mu.encode(enc_ids[1, : alone.shape[0]]) - alone).max() <= 1e-4


@pytest.mark.parametrize("j", [0, 1, 2])
def test_greedy_generation_matches_reference(mu: Any, golden: dict[str, np.ndarray], j: int) -> None:
    inp, out, step_logits = (
        golden[f"gen{j}.input_ids"][0],
        golden[f"gen{j}.output_ids"][0],
        golden[f"gen{j}.step_logits"],
    )
    sess = mu.session()
    sess.set_encoder(inp)
    tokens = [BOS]
    for t in range(16):
        logits = sess.feed([tokens[-1]])[0]
        assert np.abs(logits - step_logits[t]).max() <= 1e-4, f"step {t}"
        tokens.append(int(logits.argmax()))
    assert tokens == out.tolist()
    # The SDK's generate (greedy by default) gives the same tokens; the reference never produced EOS here.
    assert mu.generate(inp.tolist(), max_new_tokens=16).token_ids == out[1:].tolist()


def test_batched_reference_generation_equals_per_row(mu: Any, golden: dict[str, np.ndarray]) -> None:
    batch, expected = golden["gen_batched.input_ids"], golden["gen_batched.output_ids"]
    for b in range(batch.shape[0]):
        row = batch[b][batch[b] != PAD]
        assert [BOS, *mu.generate(row.tolist(), max_new_tokens=16).token_ids] == expected[b].tolist()


def test_cached_decoding_equals_uncached(mu: Any, golden: dict[str, np.ndarray]) -> None:
    inp, out = golden["gen2.input_ids"][0], golden["gen2.output_ids"][0]
    full = mu.logits(out[:-1], encoder_ids=inp)
    sess = mu.session()
    sess.set_encoder(inp)
    steps = np.concatenate([sess.feed([t]) for t in out[:-1]])
    assert np.abs(steps - full).max() <= 1e-5


def test_head_mapping_h_mod_nkv_is_required(mu_gguf: Path, tmp_path: Path, golden: dict[str, np.ndarray]) -> None:
    """Flipping the file to HF-style repeat_interleave (h // G) must break parity (the SPEC's trap)."""
    import gguf

    from converters.writer import AtomicGGUF

    r = gguf.GGUFReader(mu_gguf)
    flipped = tmp_path / "grouped.gguf"
    with AtomicGGUF(flipped, "mu", overwrite=False, progress=False) as w:
        for key, field in r.fields.items():
            if key.startswith("GGUF.") or key == "general.architecture":
                continue
            value = False if key == "mu.attention.kv_head_tiled" else field.contents()
            sub = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
            w.add_key_value(key, value, field.types[0], sub_type=sub)
        for t in r.tensors:
            w.add_tensor(t.name, np.asarray(t.data).reshape([int(d) for d in reversed(t.shape.tolist())]))
    grouped = pyruntime.load(flipped, kv_cache="f32", threads=2)
    enc_ids, dec_ids = golden["fwd.encoder_input_ids"][0], golden["fwd.decoder_input_ids"][0]
    err = np.abs(grouped.logits(dec_ids, encoder_ids=enc_ids) - golden["fwd.logits"][0]).max()
    assert err > 1.0, f"h // G mapping should be far off, got {err}"


def test_quantized_weights(
    tmp_path: Path, mu: Any, golden: dict[str, np.ndarray], convert: Callable[..., Path]
) -> None:
    from tests.conftest import mean_kl

    # head_dim 16 is below one q8_0 block, so the KV cache stays f16 here (the T5 tests cover quantized KV).
    path = convert(GOLDEN, tmp_path / "mu_q8.gguf", "q8_0")
    inp, out = golden["gen1.input_ids"][0], golden["gen1.output_ids"][0]
    ref = mu.logits(out[:-1], encoder_ids=inp)
    for activations, bound in (("f32", 1e-2), ("q8", 2e-2)):  # weight rounding alone, then + 8-bit activations
        q8 = pyruntime.load(path, threads=2, activations=activations)
        assert q8.info["tensor_types"].get("Q8_0", 0) > 0
        kl = mean_kl(ref, q8.logits(out[:-1], encoder_ids=inp))
        assert kl <= bound, f"q8_0 weights, {activations} activations: mean KL {kl}"
