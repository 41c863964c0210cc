"""T5 parity against HF transformers' T5ForConditionalGeneration (SPEC 3.2/3.3), fp32, CPU.

Randomly initialised models in three shapes: t5-small (v1.0: ReLU, tied head with d_model^-0.5),
flan-t5-small (v1.1: gated-GELU, untied head without rescale) and a tiny v1.1 one. Tolerances (SPEC 3.3):
encoder states <= 1e-5 relative to their largest magnitude, logits <= 1e-4 relative (max |dlogit| /
max |logit|), greedy decoding identical for 64 steps, padded encoder batches included.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

import pyruntime
from pyruntime import _core
from tests.conftest import mean_kl

CONFIGS: dict[str, dict[str, Any]] = {
    # t5-small: 512 / 2048 / 8 heads / 6+6, ReLU, tied + rescaled head.
    "t5-small": dict(d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_heads=8, feed_forward_proj="relu"),
    # flan-t5-small: 512 / 1024 / 6 heads / 8+8, gated-GELU, untied head, no rescale.
    "flan-t5-small": dict(
        d_model=512,
        d_kv=64,
        d_ff=1024,
        num_layers=8,
        num_heads=6,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
    ),
    "tiny": dict(
        vocab_size=512,
        d_model=64,
        d_kv=32,
        d_ff=96,
        num_layers=3,
        num_decoder_layers=2,
        num_heads=4,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
    ),
}


def _make_t5(out: Path, seed: int, **cfg_kwargs: Any) -> Any:
    """A random HF T5 saved to `out` (config.json + model.safetensors, no tokenizer). Untied configs
    get a separate random lm_head (transformers 5 would otherwise tie it to `shared`)."""
    import torch
    from safetensors.torch import save_file
    from transformers import T5Config, T5ForConditionalGeneration

    kw: dict[str, Any] = dict(vocab_size=32128, decoder_start_token_id=0)
    kw.update(cfg_kwargs)
    torch.manual_seed(seed)
    cfg = T5Config(**kw)
    model = T5ForConditionalGeneration(cfg).eval()
    if not cfg.scale_decoder_outputs:
        model.lm_head.weight = torch.nn.Parameter(torch.randn_like(model.shared.weight) * cfg.d_model**-0.5)
    out.mkdir(parents=True, exist_ok=True)
    cfg.to_json_file(str(out / "config.json"))
    state = {
        k: v.contiguous()
        for k, v in model.state_dict().items()
        if k not in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")
    }
    if cfg.scale_decoder_outputs:
        state.pop("lm_head.weight", None)
    save_file(state, str(out / "model.safetensors"))
    return model


@pytest.fixture(scope="module", params=list(CONFIGS))
def t5_pair(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, convert: Callable[..., Path]
) -> tuple[Any, Any, str]:
    import torch

    torch.set_num_threads(2)
    name = request.param
    folder = tmp_path_factory.mktemp(name)
    hf = _make_t5(folder / "hf", seed=1, **CONFIGS[name])
    gguf = convert(folder / "hf", folder / "model.gguf", "f32")
    return hf, pyruntime.load(gguf, kv_cache="f32", threads=2), name


def _inputs(vocab: int, lengths: list[int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded batch (pad id 0) of random ids in 2..vocab-1 and its attention mask."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((len(lengths), max(lengths)), dtype=np.int64)
    mask = np.zeros_like(ids)
    for b, n in enumerate(lengths):
        ids[b, :n] = rng.integers(2, vocab, n)
        mask[b, :n] = 1
    return ids, mask


def test_bucket_table_matches_spec_and_hf() -> None:
    import torch
    from transformers.models.t5.modeling_t5 import T5Attention

    # SPEC 3.2 thresholds: bidirectional |rel| -> bucket (+16 for rel > 0), causal distance -> bucket.
    bidir = {0: 0, 7: 7, 8: 8, 12: 9, 16: 10, 23: 11, 32: 12, 46: 13, 64: 14, 91: 15}
    causal = {
        0: 0,
        15: 15,
        16: 16,
        19: 17,
        21: 18,
        24: 19,
        27: 20,
        31: 21,
        35: 22,
        40: 23,
        46: 24,
        52: 25,
        59: 26,
        67: 27,
        77: 28,
        87: 29,
        99: 30,
        113: 31,
    }

    def expected(table: dict[int, int], exact: int, n: int) -> int:  # distances below `exact` are their own bucket
        return n if n < exact else max(b for start, b in table.items() if n >= start)

    rel = np.arange(-300, 301)
    ours_b = np.array([_core.t5_relative_bucket(int(r), True) for r in rel])
    ours_c = np.array([_core.t5_relative_bucket(int(r), False) for r in rel])
    spec_b = np.array([expected(bidir, 8, abs(int(r))) + (16 if r > 0 else 0) for r in rel])
    spec_c = np.array([expected(causal, 16, max(-int(r), 0)) for r in rel])
    np.testing.assert_array_equal(ours_b, spec_b)
    np.testing.assert_array_equal(ours_c, spec_c)
    wide = torch.arange(-2000, 2001)
    for bidirectional, nb, md in ((True, 32, 128), (False, 32, 128), (True, 64, 256), (False, 16, 64)):
        hf = T5Attention._relative_position_bucket(wide, bidirectional=bidirectional, num_buckets=nb, max_distance=md)
        ours = [_core.t5_relative_bucket(int(r), bidirectional, nb, md) for r in wide]
        np.testing.assert_array_equal(np.array(ours), hf.numpy())


def test_encoder_and_logits_match_hf_on_padded_batch(t5_pair: tuple[Any, Any, str]) -> None:
    import torch

    hf, ours, name = t5_pair
    lengths = [512, 37, 1] if name != "tiny" else [200, 9, 1]
    enc_ids, mask = _inputs(ours.vocab_size, lengths, seed=2)
    dec_ids, _ = _inputs(ours.vocab_size, [24] * len(lengths), seed=3)
    dec_ids[:, 0] = ours.decoder_start_token
    with torch.no_grad():
        ref = hf(
            input_ids=torch.tensor(enc_ids), attention_mask=torch.tensor(mask), decoder_input_ids=torch.tensor(dec_ids)
        )
    ref_enc, ref_logits = ref.encoder_last_hidden_state.numpy(), ref.logits.numpy()
    states = ours.encode(enc_ids, attention_mask=mask)
    for b, n in enumerate(lengths):
        scale = np.abs(ref_enc[b, :n]).max()
        enc_err = np.abs(states[b, :n] - ref_enc[b, :n]).max() / scale
        assert enc_err <= 1e-5, f"{name} row {b}: encoder relative error {enc_err}"
        assert not states[b, n:].any(), "padded positions must be zero"
        logits = ours.logits(dec_ids[b], encoder_ids=enc_ids[b, :n])
        err = np.abs(logits - ref_logits[b]).max() / np.abs(ref_logits[b]).max()
        assert err <= 1e-4, f"{name} row {b}: logits relative error {err}"


def test_greedy_64_steps_identical_to_hf_generate(t5_pair: tuple[Any, Any, str]) -> None:
    import torch

    hf, ours, name = t5_pair
    lengths = [40, 13, 3]
    enc_ids, mask = _inputs(ours.vocab_size, lengths, seed=4)
    with torch.no_grad():
        ref = hf.generate(
            input_ids=torch.tensor(enc_ids),
            attention_mask=torch.tensor(mask),
            do_sample=False,
            num_beams=1,
            max_new_tokens=64,
            min_new_tokens=64,
            eos_token_id=None,
            pad_token_id=0,
        ).numpy()
    for b, n in enumerate(lengths):
        sess = ours.session()
        sess.set_encoder(enc_ids[b, :n])
        tok = [ours.decoder_start_token]
        for _ in range(64):
            tok.append(int(sess.feed([tok[-1]])[0].argmax()))
        assert tok == ref[b].tolist(), f"{name} row {b}: greedy tokens differ from HF"


def test_cached_decoding_equals_uncached(t5_pair: tuple[Any, Any, str]) -> None:
    hf, ours, name = t5_pair
    enc_ids, _ = _inputs(ours.vocab_size, [50], seed=5)
    dec, _ = _inputs(ours.vocab_size, [64], seed=6)
    dec[0, 0] = ours.decoder_start_token
    full = ours.logits(dec[0], encoder_ids=enc_ids[0])
    sess = ours.session()
    sess.set_encoder(enc_ids[0])
    steps = np.concatenate([sess.feed([t]) for t in dec[0]])
    assert np.abs(steps - full).max() <= 1e-5
    assert (steps.argmax(-1) == full.argmax(-1)).all()


def test_decoder_prompt_in_chunks_and_packed_encoder_are_bit_exact(t5_pair: tuple[Any, Any, str]) -> None:
    """The encoder-decoder's decoder is an ordinary decoder graph: fixed-size chunked prefill (padded
    last chunk, padding attends nowhere) gives one pass's bits; a padded batch encodes in one packed
    pass with each row's own bits."""
    _, ours, _ = t5_pair
    enc_ids, mask = _inputs(ours.vocab_size, [30, 7, 18], seed=8)
    dec, _ = _inputs(ours.vocab_size, [21], seed=9)
    dec[0, 0] = ours.decoder_start_token
    chunked = pyruntime.load(ours._path, kv_cache="f32", threads=2, chunk=8)
    want = ours.session()
    got = chunked.session()
    want.set_encoder(enc_ids[0])
    got.set_encoder(enc_ids[0])
    np.testing.assert_array_equal(got.feed(dec[0]), want.feed(dec[0]))
    assert got.stats()["placement"]["chunks"] == 3 and got.stats()["placement"]["pad_tokens"] == 3
    packed = ours.encode(enc_ids, attention_mask=mask)
    for b, n in enumerate([30, 7, 18]):
        np.testing.assert_array_equal(packed[b, :n], ours.encode(enc_ids[b, :n]))


def test_cross_attention_kv_computed_once_and_reused() -> None:
    """Cross K/V are computed once per encoder input (the session counts it) and equal K/V recomputed
    from Model.encode at step 50: the logits of both sessions are bit-identical."""
    ours = pyruntime.load(_tiny_gguf(), kv_cache="f32", threads=2)
    enc_ids, _ = _inputs(ours.vocab_size, [30], seed=7)
    a = ours.session()
    a.set_encoder(enc_ids[0])
    computed = a.stats()["cross_kv_computations"]
    assert computed == 1
    tokens = [ours.decoder_start_token]
    for _ in range(50):
        tokens.append(int(a.feed([tokens[-1]])[0].argmax()))
    assert a.stats()["cross_kv_computations"] == 1, "50 decoder steps must not recompute cross-attention K/V"
    b = ours.session()
    b.set_encoder_states(ours.encode(enc_ids[0]))
    b.feed(tokens[:50])
    a_next, b_next = a.feed([tokens[50]]), b.feed([tokens[50]])
    np.testing.assert_array_equal(a_next, b_next)


_TINY: dict[str, Path] = {}


def _tiny_gguf(quant: str = "f32") -> Path:
    """The tiny v1.1 config converted once per process (tests that need no HF model in memory)."""
    import tempfile

    from converters.cli import main

    if quant not in _TINY:
        root = Path(tempfile.mkdtemp(prefix="t5tiny"))
        if "hf" not in _TINY:
            _make_t5(root / "hf", seed=1, **CONFIGS["tiny"])
            _TINY["hf"] = root / "hf"
        assert main([str(_TINY["hf"]), "-o", str(root / f"{quant}.gguf"), "--quant", quant]) == 0
        _TINY[quant] = root / f"{quant}.gguf"
    return _TINY[quant]


def test_dropping_the_tied_rescale_breaks_parity(tmp_path: Path, convert: Callable[..., Path]) -> None:
    """Guards the v1.0 flag: the same t5-small-style weights without logit_scale must fail test 2."""
    import torch

    hf = _make_t5(tmp_path / "hf", seed=3, vocab_size=1000, d_model=128, d_kv=32, d_ff=256, num_layers=2, num_heads=4)
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert cfg["scale_decoder_outputs"] is True
    good = pyruntime.load(convert(tmp_path / "hf", tmp_path / "good.gguf"), kv_cache="f32", threads=2)
    cfg["scale_decoder_outputs"] = False
    (tmp_path / "hf" / "config.json").write_text(json.dumps(cfg))
    bad = pyruntime.load(convert(tmp_path / "hf", tmp_path / "bad.gguf"), kv_cache="f32", threads=2)
    enc, _ = _inputs(1000, [20], seed=8)
    dec = np.array([0, 5, 9, 300])
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(enc), decoder_input_ids=torch.tensor(dec[None])).logits[0].numpy()
    rel = lambda x: np.abs(x - ref).max() / np.abs(ref).max()  # noqa: E731
    assert rel(good.logits(dec, encoder_ids=enc[0])) <= 1e-4
    assert rel(bad.logits(dec, encoder_ids=enc[0])) > 1e-1


@pytest.mark.parametrize("quant,max_kl", [("q8_0", 2e-3), ("q4_0", 5e-2)])
def test_quantized_weights(quant: str, max_kl: float) -> None:
    """q8_0/q4_0 weights run the same graph: next-token distributions stay close to fp32."""
    ref = pyruntime.load(_tiny_gguf("f32"), kv_cache="f32", threads=2)
    q = pyruntime.load(_tiny_gguf(quant), kv_cache="f32", threads=2)
    assert q.info["tensor_types"].get(quant.upper(), 0) > 0
    enc, _ = _inputs(ref.vocab_size, [60], seed=9)
    dec, _ = _inputs(ref.vocab_size, [32], seed=10)
    kl = mean_kl(ref.logits(dec[0], encoder_ids=enc[0]), q.logits(dec[0], encoder_ids=enc[0]))
    assert kl <= max_kl, f"{quant}: mean KL {kl}"


@pytest.mark.parametrize("kv,max_kl", [("f16", 1e-5), ("q8_0", 1e-3), ("kivi4", 2e-2)])
def test_quantized_kv_cache_covers_cross_attention(kv: str, max_kl: float) -> None:
    ref = pyruntime.load(_tiny_gguf("f32"), kv_cache="f32", threads=2)
    q = pyruntime.load(_tiny_gguf("f32"), kv_cache=kv, threads=2)
    enc, _ = _inputs(ref.vocab_size, [300], seed=11)
    dec, _ = _inputs(ref.vocab_size, [40], seed=12)
    s_ref, s_q = ref.session(), q.session()
    s_ref.set_encoder(enc[0])
    s_q.set_encoder(enc[0])
    assert s_q.stats()["kv_cross_bytes"] < s_ref.stats()["kv_cross_bytes"], (
        "cross-attention cache must be compressed too"
    )
    a = np.concatenate([s_ref.feed([t]) for t in dec[0]])
    b = np.concatenate([s_q.feed([t]) for t in dec[0]])
    kl = mean_kl(a, b)
    assert kl <= max_kl, f"kv {kv}: mean KL {kl}"


def test_encoder_decoder_errors() -> None:
    from pyruntime.errors import InvalidArgumentError

    ours = pyruntime.load(_tiny_gguf(), threads=2)
    s = ours.session()
    with pytest.raises(InvalidArgumentError, match="no encoder input"):
        s.feed([0])
    with pytest.raises(InvalidArgumentError, match="encoder_ids"):
        ours.logits([0])
    with pytest.raises(InvalidArgumentError, match="width 7"):
        s.set_encoder_states(np.zeros((3, 7), dtype=np.float32))
    with pytest.raises(pyruntime.errors.TokenOutOfRangeError, match="outside the vocabulary"):
        s.set_encoder([1, 2, ours.vocab_size])


def test_generate_stops_at_eos_and_reports_encoder_prompt() -> None:
    ours = pyruntime.load(_tiny_gguf(), threads=2)
    out = ours.generate([5, 6, 7, 8], max_new_tokens=12)
    assert isinstance(out, pyruntime.Completion)
    assert out.stats["prompt_tokens"] == 4
    assert 1 <= len(out.token_ids) <= 12
    # Same tokens as a manual greedy loop over a session.
    s = ours.session()
    s.set_encoder([5, 6, 7, 8])
    tok = [ours.decoder_start_token]
    for _ in range(len(out.token_ids)):
        tok.append(int(s.feed([tok[-1]])[0].argmax()))
    eos = 1
    expected = [t for t in tok[1:]]
    if eos in expected:
        expected = expected[: expected.index(eos)]
    assert out.token_ids == expected


def test_t5_folder_with_sentencepiece_tokenizer(
    spm_unigram_model: Path, tmp_path: Path, convert: Callable[..., Path]
) -> None:
    """An HF T5 folder with spiece.model converts with its Unigram tokenizer: text in, text out."""
    import shutil

    import sentencepiece as spm
    import torch

    hf = _make_t5(tmp_path / "hf", seed=5, **{**CONFIGS["tiny"], "vocab_size": 1000})
    shutil.copy(spm_unigram_model, tmp_path / "hf" / "spiece.model")
    model = pyruntime.load(convert(tmp_path / "hf", tmp_path / "t5.gguf"), kv_cache="f32", threads=2)
    sp = spm.SentencePieceProcessor(model_file=str(spm_unigram_model))
    text = "I don't know what you mean, said he."
    ids = model.tokenize(text)
    assert ids == sp.encode(text) + [1]
    out = model.generate(text, max_new_tokens=8)
    with torch.no_grad():
        ref = hf.generate(input_ids=torch.tensor([ids]), do_sample=False, num_beams=1, max_new_tokens=8).numpy()[0]
    expected = [int(t) for t in ref[1:]]
    if 1 in expected:
        expected = expected[: expected.index(1)]
    assert out.token_ids == expected
    assert out.text == sp.decode(expected)
