"""Mu encoder-decoder ("Return of the Encoder", microsoft/encoder-decoder-slm) -> GGUF "mu".

Input: a folder with config.json (MuConfig fields at the top level or under "mu_config", plus
pad/bos/eos ids) and the repo's state dict as model*.safetensors (or model.pt, read with torch when
it is installed: ``torch.load(...)["model_state_dict"]``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from converters.common import FILE_TYPE, ConversionError, read_config
from converters.safetensors_reader import iter_tensors
from converters.writer import AtomicGGUF, quantize_tensor

_LINEAR = {"q_linear": "q", "k_linear": "k", "v_linear": "v", "out_linear": "o"}


def is_mu_config(cfg: dict[str, Any]) -> bool:
    return "mu_config" in cfg or ("n_encoder_layer" in cfg and "qkv_embd" in cfg)


def _tensor_map(n_enc: int, n_dec: int) -> dict[str, str]:
    m = {
        "transformer.wte.weight": "token_embd.weight",
        "transformer.ln_e.weight": "enc.output_norm.weight",
        "transformer.ln_f.weight": "dec.output_norm.weight",
    }
    stacks = (
        ("e", "enc", n_enc, {"attn": "attn"}, {"ln1": "attn_norm", "ln2": "ffn_norm"}),
        (
            "h",
            "dec",
            n_dec,
            {"causal_attn": "attn", "cross_attn": "cross_attn"},
            {"ln1": "attn_norm", "ln2": "cross_attn_norm", "ln3": "ffn_norm"},
        ),
    )
    for hf_stack, gg_stack, n, attns, norms in stacks:
        for i in range(n):
            hf, gg = f"transformer.{hf_stack}.{i}.", f"{gg_stack}.blk.{i}."
            for a, b in norms.items():
                m[f"{hf}{a}.weight"] = f"{gg}{b}.weight"
            for attn, prefix in attns.items():
                for lin, short in _LINEAR.items():
                    for kind in ("weight", "bias"):
                        m[f"{hf}{attn}.{lin}.{kind}"] = f"{gg}{prefix}_{short}.{kind}"
            for lin, short in (("fc1", "ffn_up"), ("fc2", "ffn_down")):
                for kind in ("weight", "bias"):
                    m[f"{hf}mlp.{lin}.{kind}"] = f"{gg}{short}.{kind}"
    return m


def _load_state(folder: Path) -> dict[str, np.ndarray]:
    shards = sorted(folder.glob("model*.safetensors"))  # the folder may hold other safetensors (test data)
    if shards:
        out: dict[str, np.ndarray] = {}
        for f in shards:
            out.update(iter_tensors(f))
        return out
    pt = folder / "model.pt"
    if not pt.is_file():
        raise ConversionError(f"{folder}: neither *.safetensors nor model.pt")
    try:
        import torch
    except ImportError as e:
        raise ConversionError(f"{pt}: reading a .pt checkpoint needs torch (pip install torch==2.13.0)") from e
    ckpt = torch.load(pt, map_location="cpu", weights_only=True)
    state = ckpt.get("model_state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise ConversionError(f"{pt}: expected a state dict (optionally under 'model_state_dict')")
    return {k: v.float().numpy() for k, v in state.items()}


def convert_mu(folder: Path, out: Path, quant: str, overwrite: bool, log: Callable[[str], None]) -> None:
    top = read_config(folder)
    cfg: dict[str, Any] = dict(top.get("mu_config", top))
    try:
        n_enc, n_dec = int(cfg["n_encoder_layer"]), int(cfg["n_decoder_layer"])
        n_embd, qkv, n_head = int(cfg["n_embd"]), int(cfg["qkv_embd"]), int(cfg["n_head"])
        n_kv = int(cfg.get("n_kv_head") or n_head)
        hidden, vocab = int(cfg["hidden_dim"]), int(cfg["vocab_size"])
    except KeyError as e:
        raise ConversionError(f"{folder / 'config.json'}: MuConfig field {e} is missing") from e
    if qkv % n_head:
        raise ConversionError(f"{folder / 'config.json'}: qkv_embd {qkv} is not a multiple of n_head {n_head}")
    if float(cfg.get("rope_factor", 1.0)) != 1.0:
        raise ConversionError(f"{folder / 'config.json'}: rope_factor != 1 (NTK scaling) is not supported yet")
    tensors = _load_state(folder)
    names = _tensor_map(n_enc, n_dec)
    wte = tensors.get("transformer.wte.weight")
    if wte is None:
        raise ConversionError(f"{folder}: tensor 'transformer.wte.weight' is missing")
    head = tensors.pop("lm_head.weight", None)
    if head is not None and not np.array_equal(head, wte):
        raise ConversionError(f"{folder}: lm_head.weight differs from transformer.wte.weight (Mu ties them)")
    unknown = [k for k in tensors if k not in names]
    if unknown:
        raise ConversionError(f"{folder}: tensors this converter does not know: {unknown[:5]}")
    missing = [k for k in names if k not in tensors and not k.endswith(".bias")]
    if missing:
        raise ConversionError(f"{folder}: tensors missing: {missing[:5]}")
    log("note: no tokenizer in the folder; the converted model works on token ids only")

    with AtomicGGUF(out, "mu", overwrite) as w:
        w.add_name(str(top.get("name") or folder.name))
        w.add_file_type(FILE_TYPE[quant])
        w.add_context_length(int(cfg.get("block_size", 1024)))
        w.add_embedding_length(n_embd)
        w.add_feed_forward_length(hidden)
        w.add_block_count(n_enc)
        w.add_uint32("mu.decoder_block_count", n_dec)
        w.add_head_count(n_head)
        w.add_head_count_kv(n_kv)
        w.add_key_length(qkv // n_head)
        w.add_value_length(qkv // n_head)
        w.add_layer_norm_rms_eps(float(cfg.get("rms_norm_eps", 1e-6)))
        w.add_rope_freq_base(float(cfg.get("rope_theta", 10000.0)))
        w.add_bool("mu.attention.kv_head_tiled", not bool(cfg.get("is_interleaved", False)))
        w.add_uint32("mu.decoder_start_token_id", int(top.get("bos_token_id", 1)))
        w.add_vocab_size(vocab)
        for key, fn in (
            ("bos_token_id", w.add_bos_token_id),
            ("eos_token_id", w.add_eos_token_id),
            ("pad_token_id", w.add_pad_token_id),
        ):
            v = top.get(key, cfg.get(key))
            if isinstance(v, int):
                fn(v)
        for name, arr in tensors.items():
            gg_name = names[name]
            q, raw = quantize_tensor(gg_name, np.asarray(arr, dtype=np.float32), quant, log)
            w.add_tensor(gg_name, q, raw_dtype=raw)
