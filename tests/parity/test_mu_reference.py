"""The Mu encoder-decoder against a small PyTorch reference written here from SPEC 3.1 (float64), on
shapes the golden data does not cover (head_dim 64, 8 query / 2 KV heads, longer inputs): pre-norm
RMSNorm, biased linears, NeoX RoPE on the full head with centred encoder positions, no RoPE in
cross-attention, tiled GQA (query head h reads KV head h % n_kv), masking before the 1/sqrt(d)
scaling, tanh-GELU MLP, tied head without rescale. Tolerances: fp32 runtime vs float64 reference,
encoder states and logits <= 1e-5 relative to their largest magnitude; greedy tokens identical;
padded batch == single rows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

import pyruntime
from tests.conftest import mean_kl

CFG = dict(
    n_encoder_layer=4,
    n_decoder_layer=2,
    n_embd=256,
    qkv_embd=512,
    n_head=8,
    n_kv_head=2,
    hidden_dim=512,
    vocab_size=300,
    rope_theta=10000,
    rope_factor=1.0,
    block_size=1024,
    pad_token_id=0,
    is_interleaved=False,
)
PAD, BOS, EOS = 0, 1, 2


def _weights(seed: int) -> dict[str, Any]:
    import torch

    g = torch.Generator().manual_seed(seed)
    E, Q, F, V = CFG["n_embd"], CFG["qkv_embd"], CFG["hidden_dim"], CFG["vocab_size"]
    KV = Q // CFG["n_head"] * CFG["n_kv_head"]
    sd: dict[str, Any] = {"transformer.wte.weight": torch.randn(V, E, generator=g, dtype=torch.float64) * 0.25}

    def lin(name: str, out: int, inp: int, gain: float = 1.0) -> None:
        sd[name + ".weight"] = torch.randn(out, inp, generator=g, dtype=torch.float64) * gain / inp**0.5
        sd[name + ".bias"] = torch.randn(out, generator=g, dtype=torch.float64) * 0.05

    def attn(p: str) -> None:
        lin(p + ".q_linear", Q, E, 2.0)
        lin(p + ".k_linear", KV, E, 2.0)
        lin(p + ".v_linear", KV, E)
        lin(p + ".out_linear", E, Q, 1.5)

    def norm(name: str) -> None:
        sd[name + ".weight"] = 1 + 0.1 * torch.randn(E, generator=g, dtype=torch.float64)

    for i in range(CFG["n_encoder_layer"]):
        p = f"transformer.e.{i}"
        norm(p + ".ln1"), norm(p + ".ln2"), attn(p + ".attn")
        lin(p + ".mlp.fc1", F, E), lin(p + ".mlp.fc2", E, F, 1.5)
    for i in range(CFG["n_decoder_layer"]):
        p = f"transformer.h.{i}"
        norm(p + ".ln1"), norm(p + ".ln2"), norm(p + ".ln3"), attn(p + ".causal_attn"), attn(p + ".cross_attn")
        lin(p + ".mlp.fc1", F, E), lin(p + ".mlp.fc2", E, F, 1.5)
    norm("transformer.ln_e"), norm("transformer.ln_f")
    return sd


class Reference:
    """SPEC 3.1 in float64 torch, batch-first with a key-padding mask from ids == pad."""

    def __init__(self, sd: dict[str, Any]) -> None:
        self.sd = sd
        self.h, self.kv = CFG["n_head"], CFG["n_kv_head"]
        self.d = CFG["qkv_embd"] // self.h

    def rms(self, x: Any, name: str) -> Any:
        return x * (x.pow(2).mean(-1, keepdim=True) + 1e-6).rsqrt() * self.sd[name + ".weight"]

    def lin(self, x: Any, name: str) -> Any:
        return x @ self.sd[name + ".weight"].T + self.sd[name + ".bias"]

    def rope(self, x: Any, pos: Any) -> Any:  # x [B, H, T, d], NeoX rotate-half on the full head
        import torch

        inv = 1.0 / CFG["rope_theta"] ** (torch.arange(0, self.d, 2, dtype=torch.float64) / self.d)
        ang = pos[:, None].double() * inv[None]
        cos, sin = torch.cat([ang.cos(), ang.cos()], -1), torch.cat([ang.sin(), ang.sin()], -1)
        half = self.d // 2
        rot = torch.cat([-x[..., half:], x[..., :half]], -1)
        return x * cos + rot * sin

    def attention(self, xq: Any, xkv: Any, p: str, key_mask: Any, causal: bool, qpos: Any, kpos: Any) -> Any:
        import torch

        B, T, _ = xq.shape
        S = xkv.shape[1]
        q = self.lin(xq, p + ".q_linear").view(B, T, self.h, self.d).transpose(1, 2)
        k = self.lin(xkv, p + ".k_linear").view(B, S, self.kv, self.d).transpose(1, 2)
        v = self.lin(xkv, p + ".v_linear").view(B, S, self.kv, self.d).transpose(1, 2)
        if qpos is not None:
            q, k = self.rope(q, qpos), self.rope(k, kpos)
        rep = self.h // self.kv
        k, v = torch.cat([k] * rep, 1), torch.cat([v] * rep, 1)  # tiled: head h reads KV head h % n_kv
        s = q @ k.transpose(-1, -2)
        mask = key_mask[:, None, None, :].expand(B, 1, T, S)
        if causal:
            mask = mask & torch.ones(T, S, dtype=torch.bool).tril()[None, None]
        s = s.masked_fill(~mask, torch.finfo(s.dtype).min) / self.d**0.5
        o = (s.softmax(-1) @ v).transpose(1, 2).reshape(B, T, self.h * self.d)
        return self.lin(o, p + ".out_linear")

    def mlp(self, x: Any, p: str) -> Any:
        import torch

        return self.lin(torch.nn.functional.gelu(self.lin(x, p + ".fc1"), approximate="tanh"), p + ".fc2")

    def encode(self, ids: Any) -> Any:
        import torch

        S = ids.shape[1]
        pos = torch.arange(S) - (S - 1) // 2
        x = self.sd["transformer.wte.weight"][ids]
        mask = ids != PAD
        for i in range(CFG["n_encoder_layer"]):
            p = f"transformer.e.{i}"
            h = self.rms(x, p + ".ln1")
            x = x + self.attention(h, h, p + ".attn", mask, False, pos, pos)
            x = x + self.mlp(self.rms(x, p + ".ln2"), p + ".mlp")
        return self.rms(x, "transformer.ln_e"), mask

    def decode(self, dec_ids: Any, enc: Any, enc_mask: Any) -> Any:
        import torch

        T = dec_ids.shape[1]
        pos = torch.arange(T)
        x = self.sd["transformer.wte.weight"][dec_ids]
        for i in range(CFG["n_decoder_layer"]):
            p = f"transformer.h.{i}"
            h = self.rms(x, p + ".ln1")
            x = x + self.attention(h, h, p + ".causal_attn", dec_ids != PAD, True, pos, pos)
            x = x + self.attention(self.rms(x, p + ".ln2"), enc, p + ".cross_attn", enc_mask, False, None, None)
            x = x + self.mlp(self.rms(x, p + ".ln3"), p + ".mlp")
        return self.rms(x, "transformer.ln_f") @ self.sd["transformer.wte.weight"].T


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, convert: Callable[..., Path]) -> tuple[Reference, Any, Path]:
    from safetensors.torch import save_file

    sd = _weights(seed=3)
    folder = tmp_path_factory.mktemp("mu_ref")
    save_file({k: v.float().contiguous() for k, v in sd.items()}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"mu_config": CFG, "bos_token_id": BOS, "eos_token_id": EOS}))
    gguf = convert(folder, folder / "mu.gguf", "f32")
    # The reference uses the fp32-rounded weights the runtime sees, in float64 arithmetic.
    ref = Reference({k: v.float().double() for k, v in sd.items()})
    return ref, pyruntime.load(gguf, kv_cache="f32", threads=2), folder


def _batch(lengths: list[int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ids = np.zeros((len(lengths), max(lengths)), dtype=np.int64)
    for b, n in enumerate(lengths):
        ids[b, :n] = rng.integers(3, CFG["vocab_size"], n)
    return ids


def test_encoder_and_logits_match_reference_on_padded_batch(pair: tuple[Reference, Any, Path]) -> None:
    import torch

    ref, ours, _ = pair
    enc_ids, dec_ids = _batch([300, 41, 2], seed=1), _batch([20, 20, 20], seed=2)
    dec_ids[:, 0] = BOS
    with torch.no_grad():
        enc, mask = ref.encode(torch.tensor(enc_ids))
        logits = ref.decode(torch.tensor(dec_ids), enc, mask)
    states = ours.encode(enc_ids, attention_mask=enc_ids != PAD)  # padded batch, row by row
    for b in range(enc_ids.shape[0]):
        n = int((enc_ids[b] != PAD).sum())
        ref_enc = enc[b, :n].numpy()
        assert np.abs(states[b, :n] - ref_enc).max() <= 1e-5 * np.abs(ref_enc).max()
        single = ours.encode(enc_ids[b, :n])  # batch == single
        np.testing.assert_array_equal(single, states[b, :n])
        got = ours.logits(dec_ids[b], encoder_ids=enc_ids[b, :n])
        ref_logits = logits[b].numpy()
        assert np.abs(got - ref_logits).max() <= 1e-5 * np.abs(ref_logits).max()


def test_greedy_and_cached_decoding(pair: tuple[Reference, Any, Path]) -> None:
    import torch

    ref, ours, _ = pair
    enc_ids = _batch([60], seed=3)
    with torch.no_grad():
        enc, mask = ref.encode(torch.tensor(enc_ids))
        tokens = [BOS]
        for _ in range(24):  # the reference re-runs the whole decoder every step (no cache), like the repo
            tokens.append(int(ref.decode(torch.tensor([tokens]), enc, mask)[0, -1].argmax()))
    s = ours.session()
    s.set_encoder(enc_ids[0])
    steps = np.concatenate([s.feed([t]) for t in tokens[:-1]])
    assert steps.argmax(-1).tolist() == tokens[1:]
    uncached = ours.logits(tokens[:-1], encoder_ids=enc_ids[0])
    assert np.abs(steps - uncached).max() <= 1e-5


def test_q8_0_weights_and_kv_cache(pair: tuple[Reference, Any, Path], convert: Callable[..., Path]) -> None:
    """q8_0 weights compute exactly the model of their dequantized values (this random model's sharp
    attention makes weight rounding itself cost KL ~0.08, which is not the runtime's doing); a q8_0 KV
    cache costs little KL against f32."""
    _, ours, folder = pair
    q8_path = convert(folder, folder / "mu-q8.gguf", "q8_0")
    q8 = pyruntime.load(q8_path, kv_cache="f32", threads=2, activations="f32")
    dequantized = pyruntime.load(convert(q8_path, folder / "mu-q8-as-f32.gguf", "f32"), kv_cache="f32", threads=2)
    enc_ids, dec_ids = _batch([200], seed=4), _batch([32], seed=5)
    a = dequantized.logits(dec_ids[0], encoder_ids=enc_ids[0])
    assert np.abs(q8.logits(dec_ids[0], encoder_ids=enc_ids[0]) - a).max() <= 1e-5 * np.abs(a).max()
    kv8 = pyruntime.load(folder / "mu.gguf", kv_cache="q8_0", threads=2)
    kl = mean_kl(ours.logits(dec_ids[0], encoder_ids=enc_ids[0]), kv8.logits(dec_ids[0], encoder_ids=enc_ids[0]))
    assert kl <= 5e-3, f"q8_0 KV cache: mean KL {kl}"
