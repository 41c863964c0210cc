"""HF T5 / T5 v1.1 / FLAN-T5 folder (config.json + *.safetensors [+ tokenizer]) -> GGUF in llama.cpp's
"t5" layout (enc.blk.* / dec.blk.*). Folders without tokenizer files convert too (ids-only models)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from converters.common import FILE_TYPE, ConversionError, add_tokenizer, read_config
from converters.hf_tokenizer import convert_tokenizer
from converters.safetensors_reader import load_folder
from converters.writer import AtomicGGUF, quantize_tensor

_ATTN = {"q": "q", "k": "k", "v": "v", "o": "o"}
_FFN = {"wi": "ffn_up", "wi_0": "ffn_gate", "wi_1": "ffn_up", "wo": "ffn_down"}


def _tensor_map(n_enc: int, n_dec: int) -> dict[str, str]:
    m = {
        "shared.weight": "token_embd.weight",
        "lm_head.weight": "output.weight",
        "encoder.final_layer_norm.weight": "enc.output_norm.weight",
        "decoder.final_layer_norm.weight": "dec.output_norm.weight",
    }
    stacks = (
        ("encoder", "enc", n_enc, ("SelfAttention",)),
        ("decoder", "dec", n_dec, ("SelfAttention", "EncDecAttention")),
    )
    for hf_stack, gg_stack, n, attns in stacks:
        for i in range(n):
            hf, gg = f"{hf_stack}.block.{i}.layer.", f"{gg_stack}.blk.{i}."
            for j, attn in enumerate(attns):
                prefix = "attn" if attn == "SelfAttention" else "cross_attn"
                m[f"{hf}{j}.layer_norm.weight"] = f"{gg}{prefix}_norm.weight"
                for a, b in _ATTN.items():
                    m[f"{hf}{j}.{attn}.{a}.weight"] = f"{gg}{prefix}_{b}.weight"
                if i == 0 and attn == "SelfAttention":
                    m[f"{hf}{j}.{attn}.relative_attention_bias.weight"] = f"{gg}attn_rel_b.weight"
            f = len(attns)
            m[f"{hf}{f}.layer_norm.weight"] = f"{gg}ffn_norm.weight"
            for a, b in _FFN.items():
                m[f"{hf}{f}.DenseReluDense.{a}.weight"] = f"{gg}{b}.weight"
    return m


def _activation(cfg: dict[str, Any], cfg_path: Path) -> tuple[bool, str]:
    proj = str(cfg.get("feed_forward_proj", "relu"))
    parts = proj.split("-")
    gated = parts[0] == "gated" and len(parts) == 2
    act = parts[-1]
    if proj == "gated-gelu":
        act = "gelu_new"  # HF's backwards-compatible meaning
    names = {"relu": "relu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu", "silu": "silu"}
    if act not in names or (len(parts) > 1 and not gated):
        raise ConversionError(
            f"{cfg_path}: feed_forward_proj '{proj}' is not supported (relu, gated-gelu, gelu_new, silu)"
        )
    return gated, names[act]


def convert_hf_t5(folder: Path, out: Path, quant: str, overwrite: bool, log: Callable[[str], None]) -> None:
    cfg_path = folder / "config.json"
    cfg = read_config(folder)
    if cfg.get("model_type") not in ("t5", "mt5"):
        raise ConversionError(f"{cfg_path}: model_type '{cfg.get('model_type')}' is not a T5 model")
    d_model, n_heads = int(cfg["d_model"]), int(cfg["num_heads"])
    d_kv = int(cfg.get("d_kv", d_model // n_heads))
    n_enc = int(cfg["num_layers"])
    n_dec = int(cfg.get("num_decoder_layers") or n_enc)
    gated, act = _activation(cfg, cfg_path)
    # transformers 5 writes scale_decoder_outputs; 4.x configs say tie_word_embeddings (v1.0: true, v1.1: false).
    scale = bool(cfg.get("scale_decoder_outputs", cfg.get("tie_word_embeddings", True)))

    tensors = load_folder(folder)
    names = _tensor_map(n_enc, n_dec)
    shared = tensors.get("shared.weight")
    if shared is None:
        raise ConversionError(f"{folder}: tensor 'shared.weight' is missing")
    skip = set()
    for alias in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight"):
        if alias in tensors and np.array_equal(tensors[alias], shared):
            skip.add(alias)  # tied copies of the shared embedding
    for alias in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):
        if alias in tensors and alias not in skip:
            raise ConversionError(
                f"{folder}: '{alias}' differs from 'shared.weight' (untied input embeddings are not T5)"
            )
    unknown = [k for k in tensors if k not in names and k not in skip]
    if unknown:
        raise ConversionError(f"{folder}: tensors this converter does not know: {unknown[:5]}")
    tok = convert_tokenizer(folder, cfg)
    if tok is None:
        log("note: no tokenizer.json; the converted model works on token ids only")

    with AtomicGGUF(out, "t5", overwrite) as w:
        w.add_name(cfg.get("_name_or_path") or folder.name)
        w.add_file_type(FILE_TYPE[quant])
        w.add_context_length(int(cfg.get("n_positions", 512)))
        w.add_embedding_length(d_model)
        w.add_feed_forward_length(int(cfg["d_ff"]))
        w.add_block_count(n_enc)
        w.add_uint32("t5.decoder_block_count", n_dec)
        w.add_head_count(n_heads)
        w.add_key_length(d_kv)
        w.add_value_length(d_kv)
        w.add_layer_norm_rms_eps(float(cfg.get("layer_norm_epsilon", 1e-6)))
        w.add_relative_attn_buckets_count(int(cfg.get("relative_attention_num_buckets", 32)))
        w.add_uint32("t5.attention.relative_max_distance", int(cfg.get("relative_attention_max_distance", 128)))
        w.add_uint32("t5.decoder_start_token_id", int(cfg.get("decoder_start_token_id") or 0))
        w.add_string("t5.feed_forward_activation", act)
        if scale:
            w.add_float32("t5.logit_scale", float(d_model) ** -0.5)
        w.add_vocab_size(int(cfg["vocab_size"]))
        if tok is not None:
            add_tokenizer(w, tok)
        else:  # ids-only models still say when generation ends
            for key, fn in (("eos_token_id", w.add_eos_token_id), ("pad_token_id", w.add_pad_token_id)):
                if isinstance(cfg.get(key), int):
                    fn(cfg[key])
        for hf_name, arr in tensors.items():
            if hf_name in skip:
                continue
            gg_name = names[hf_name]
            if gg_name.endswith("ffn_gate.weight") and not gated:
                raise ConversionError(f"{folder}: '{hf_name}' present but feed_forward_proj is not gated")
            q, raw = quantize_tensor(gg_name, np.asarray(arr, dtype=np.float32), quant, log)
            w.add_tensor(gg_name, q, raw_dtype=raw)
