"""HF Llama folder (config.json + *.safetensors [+ tokenizer.json]) -> GGUF, llama.cpp layout."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from converters.common import FILE_TYPE, ConversionError, add_tokenizer, read_config
from converters.hf_tokenizer import convert_tokenizer
from converters.safetensors_reader import load_folder
from converters.writer import AtomicGGUF, quantize_tensor


def permute_rope(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF rotates halves (rotate_half); GGUF llama rotates adjacent pairs. Reorder the output rows of
    Q/K so the adjacent-pair RoPE computes the same thing (what llama.cpp's converter does)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _tensor_map(n_layers: int) -> dict[str, str]:
    m = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    for i in range(n_layers):
        hf, gg = f"model.layers.{i}.", f"blk.{i}."
        m.update(
            {
                hf + "input_layernorm.weight": gg + "attn_norm.weight",
                hf + "post_attention_layernorm.weight": gg + "ffn_norm.weight",
                hf + "self_attn.q_proj.weight": gg + "attn_q.weight",
                hf + "self_attn.k_proj.weight": gg + "attn_k.weight",
                hf + "self_attn.v_proj.weight": gg + "attn_v.weight",
                hf + "self_attn.o_proj.weight": gg + "attn_output.weight",
                hf + "mlp.gate_proj.weight": gg + "ffn_gate.weight",
                hf + "mlp.up_proj.weight": gg + "ffn_up.weight",
                hf + "mlp.down_proj.weight": gg + "ffn_down.weight",
            }
        )
    return m


def convert_hf_llama(folder: Path, out: Path, quant: str, overwrite: bool, log: Callable[[str], None]) -> None:
    cfg_path = folder / "config.json"
    cfg = read_config(folder)
    if cfg.get("model_type") != "llama":
        raise ConversionError(f"{cfg_path}: model_type '{cfg.get('model_type')}' is not supported (supported: llama)")
    for flag in ("attention_bias", "mlp_bias"):
        if cfg.get(flag):
            raise ConversionError(f"{cfg_path}: {flag}=true is not supported by the llama graph yet")
    # transformers >= 5 writes `rope_parameters` (theta inside); 4.x writes `rope_theta` + `rope_scaling`.
    rope_scaling = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    rope_theta = float(rope_scaling.get("rope_theta", cfg.get("rope_theta", 10000.0)))
    rope_kind = rope_scaling.get("rope_type", rope_scaling.get("type"))
    if rope_kind not in (None, "default", "linear"):
        raise ConversionError(f"{cfg_path}: rope_scaling type '{rope_kind}' is not supported yet (linear only)")
    n_layers, n_head = int(cfg["num_hidden_layers"]), int(cfg["num_attention_heads"])
    n_kv = int(cfg.get("num_key_value_heads") or n_head)
    hidden = int(cfg["hidden_size"])
    head_dim = int(cfg.get("head_dim") or hidden // n_head)
    if head_dim * n_head != hidden:
        raise ConversionError(
            f"{cfg_path}: head_dim {head_dim} x heads {n_head} != hidden_size {hidden} (not supported yet)"
        )
    tensors = load_folder(folder)
    names = _tensor_map(n_layers)
    tied = bool(cfg.get("tie_word_embeddings", False)) or "lm_head.weight" not in tensors
    unknown = [k for k in tensors if k not in names and not k.endswith("rotary_emb.inv_freq")]
    if unknown:
        raise ConversionError(f"{folder}: tensors this converter does not know: {unknown[:5]}")
    tok = convert_tokenizer(folder, cfg)
    if tok is None:
        log("note: no tokenizer.json; the converted model works on token ids only")

    with AtomicGGUF(out, "llama", overwrite) as w:
        w.add_name(cfg.get("_name_or_path") or folder.name)
        w.add_file_type(FILE_TYPE[quant])
        w.add_context_length(int(cfg.get("max_position_embeddings", 2048)))
        w.add_embedding_length(hidden)
        w.add_block_count(n_layers)
        w.add_feed_forward_length(int(cfg["intermediate_size"]))
        w.add_head_count(n_head)
        w.add_head_count_kv(n_kv)
        w.add_layer_norm_rms_eps(float(cfg.get("rms_norm_eps", 1e-6)))
        w.add_rope_freq_base(rope_theta)
        w.add_rope_dimension_count(head_dim)
        w.add_vocab_size(int(cfg["vocab_size"]))
        if rope_kind == "linear":
            import gguf

            w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
            w.add_rope_scaling_factor(float(rope_scaling["factor"]))
        if tok is not None:
            add_tokenizer(w, tok)
        for hf_name, arr in tensors.items():
            if hf_name.endswith("rotary_emb.inv_freq") or (hf_name == "lm_head.weight" and tied):
                continue
            gg_name = names[hf_name]
            data = np.asarray(arr, dtype=np.float32)
            if gg_name.endswith("attn_q.weight"):
                data = permute_rope(data, n_head)
            elif gg_name.endswith("attn_k.weight"):
                data = permute_rope(data, n_kv)
            q, raw = quantize_tensor(gg_name, data, quant, log)
            w.add_tensor(gg_name, q, raw_dtype=raw)
