"""Encoder-decoder vs decoder-only at equal parameter count, in this runtime ("Return of the Encoder").

python bench/encdec_vs_decoder.py --out bench/results/encdec [--threads 2] [--reps 5]

Both models have random weights (speed does not depend on the values): a Mu-style encoder-decoder
(2/3 of the layers in the encoder, GQA, tied head) and a Llama-style decoder-only model whose layer
count and FFN width are chosen so that the parameter counts match within 2%. Both are stored Q8_0 and
use the default f16 KV cache. One run measures, for 256-token inputs and 32- / 128-token outputs:
first-token latency (encoder + first decoder step vs prefill of the whole input), decode tokens/s,
and KV-cache bytes. Reports min/median of --reps runs, the ratios beside the paper's claims (~47%
lower first-token latency, ~4.7x throughput on edge devices), a markdown table, JSON and a plot.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyruntime  # noqa: E402
from pyruntime import _core  # noqa: E402

VOCAB, E, HEADS, KV_HEADS, HEAD_DIM = 32128, 768, 12, 4, 64
MU_FF, MU_ENC, MU_DEC = 3072, 12, 6
INPUT_LEN, OUTPUTS = 256, (32, 128)


def mu_params() -> int:
    q, kv = HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM
    attn = E * q + 2 * E * kv + q * E + q + 2 * kv + E
    mlp = 2 * E * MU_FF + MU_FF + E
    return VOCAB * E + MU_ENC * (attn + mlp + 2 * E) + MU_DEC * (2 * attn + mlp + 3 * E) + 2 * E


def llama_params(layers: int, ff: int) -> int:
    q, kv = HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM
    return 2 * VOCAB * E + layers * (E * q + 2 * E * kv + q * E + 3 * E * ff + 2 * E) + E  # untied head


def matched_llama() -> tuple[int, int]:
    target = mu_params()
    best = min(
        ((L, ff) for L in range(8, 40) for ff in range(1024, 8193, 256)),
        key=lambda c: (
            abs(llama_params(*c) / target - 1) > 0.02,
            abs(c[1] - 4 * E * 2 // 3),
            abs(llama_params(*c) - target),
        ),
    )
    return best


def _rand(rng: np.random.Generator, *shape: int, scale: float = 0.02) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def write_models(folder: Path) -> tuple[Path, Path, dict[str, Any]]:
    import gguf

    from converters.writer import AtomicGGUF, quantize_tensor

    rng = np.random.default_rng(0)
    q, kv = HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM

    def add(w: Any, name: str, arr: np.ndarray) -> None:
        data, raw = quantize_tensor(name, arr, "q8_0", lambda _m: None)
        w.add_tensor(name, data, raw_dtype=raw)

    mu_path = folder / "mu-random-q8_0.gguf"
    if not mu_path.exists():
        with AtomicGGUF(mu_path, "mu", overwrite=True, progress=False) as w:
            w.add_file_type(7)
            w.add_context_length(2048)
            w.add_embedding_length(E)
            w.add_feed_forward_length(MU_FF)
            w.add_block_count(MU_ENC)
            w.add_uint32("mu.decoder_block_count", MU_DEC)
            w.add_head_count(HEADS)
            w.add_head_count_kv(KV_HEADS)
            w.add_key_length(HEAD_DIM)
            w.add_uint32("mu.decoder_start_token_id", 1)
            add(w, "token_embd.weight", _rand(rng, VOCAB, E, scale=0.25))
            for stack, n, attns in (("enc", MU_ENC, ("attn",)), ("dec", MU_DEC, ("attn", "cross_attn"))):
                add(w, f"{stack}.output_norm.weight", np.ones(E, np.float32))
                for i in range(n):
                    p = f"{stack}.blk.{i}."
                    for a in attns:
                        add(w, p + f"{a}_norm.weight", np.ones(E, np.float32))
                        for part, rows in (("q", q), ("k", kv), ("v", kv)):
                            add(w, p + f"{a}_{part}.weight", _rand(rng, rows, E))
                            add(w, p + f"{a}_{part}.bias", np.zeros(rows, np.float32))
                        add(w, p + f"{a}_o.weight", _rand(rng, E, q))
                        add(w, p + f"{a}_o.bias", np.zeros(E, np.float32))
                    add(w, p + "ffn_norm.weight", np.ones(E, np.float32))
                    add(w, p + "ffn_up.weight", _rand(rng, MU_FF, E))
                    add(w, p + "ffn_up.bias", np.zeros(MU_FF, np.float32))
                    add(w, p + "ffn_down.weight", _rand(rng, E, MU_FF))
                    add(w, p + "ffn_down.bias", np.zeros(E, np.float32))
    layers, ff = matched_llama()
    llama_path = folder / f"llama-random-L{layers}-ff{ff}-q8_0.gguf"
    if not llama_path.exists():
        with AtomicGGUF(llama_path, "llama", overwrite=True, progress=False) as w:
            w.add_file_type(7)
            w.add_context_length(2048)
            w.add_embedding_length(E)
            w.add_feed_forward_length(ff)
            w.add_block_count(layers)
            w.add_head_count(HEADS)
            w.add_head_count_kv(KV_HEADS)
            w.add_rope_dimension_count(HEAD_DIM)
            w.add_layer_norm_rms_eps(1e-5)
            add(w, "token_embd.weight", _rand(rng, VOCAB, E, scale=0.25))
            add(w, "output.weight", _rand(rng, VOCAB, E))
            add(w, "output_norm.weight", np.ones(E, np.float32))
            for i in range(layers):
                p = f"blk.{i}."
                add(w, p + "attn_norm.weight", np.ones(E, np.float32))
                add(w, p + "ffn_norm.weight", np.ones(E, np.float32))
                for part, rows in (("q", q), ("k", kv), ("v", kv)):
                    add(w, p + f"attn_{part}.weight", _rand(rng, rows, E))
                add(w, p + "attn_output.weight", _rand(rng, E, q))
                add(w, p + "ffn_gate.weight", _rand(rng, ff, E))
                add(w, p + "ffn_up.weight", _rand(rng, ff, E))
                add(w, p + "ffn_down.weight", _rand(rng, E, ff))
    _ = gguf  # the writer needs the gguf package
    return mu_path, llama_path, {"llama_layers": layers, "llama_ff": ff}


def run_once(model: Any, ids: list[int], n_out: int) -> dict[str, float]:
    s = model.session()
    t0 = time.perf_counter()
    if model.is_encoder_decoder:
        s.set_encoder(ids)
        logits = s.feed([model.decoder_start_token])[-1]
    else:
        logits = s.feed(ids)[-1]
    t1 = time.perf_counter()
    token = int(logits.argmax())
    for _ in range(n_out - 1):
        token = int(s.feed([token])[-1].argmax())
    t2 = time.perf_counter()
    return {"first_token_s": t1 - t0, "decode_tok_s": (n_out - 1) / (t2 - t1), "kv_bytes": s.kv_bytes}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("bench/results/encdec"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--models", type=Path, default=Path(tempfile.gettempdir()) / "pyrt-encdec-bench")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    a.models.mkdir(parents=True, exist_ok=True)
    mu_path, llama_path, shape = write_models(a.models)
    models = {
        "encoder-decoder (Mu-style)": pyruntime.load(mu_path, threads=a.threads),
        "decoder-only (Llama-style)": pyruntime.load(llama_path, threads=a.threads),
    }
    ids = np.random.default_rng(1).integers(3, VOCAB, INPUT_LEN).tolist()
    results: dict[str, Any] = {}
    for n_out in OUTPUTS:
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in models}
        for _ in range(a.reps):  # alternate the two models so both see the same machine state
            for name, m in models.items():
                runs[name].append(run_once(m, ids, n_out))
        for name, rs in runs.items():
            ft = [r["first_token_s"] for r in rs]
            tps = [r["decode_tok_s"] for r in rs]
            results[f"{name} | out {n_out}"] = {
                "model": name,
                "n_out": n_out,
                "n_params": models[name].info["n_params"],
                "first_token_s_min": min(ft),
                "first_token_s_median": statistics.median(ft),
                "decode_tok_s_max": max(tps),
                "decode_tok_s_median": statistics.median(tps),
                "kv_bytes": rs[-1]["kv_bytes"],
                "file_bytes": models[name].info["file_bytes"],
            }
            print(json.dumps(results[f"{name} | out {n_out}"]), flush=True)
    ed, do = list(models)
    ratios = {}
    for n_out in OUTPUTS:
        e, d = results[f"{ed} | out {n_out}"], results[f"{do} | out {n_out}"]
        ratios[n_out] = {
            "first_token_latency_reduction": 1 - e["first_token_s_median"] / d["first_token_s_median"],
            "decode_throughput_ratio": e["decode_tok_s_median"] / d["decode_tok_s_median"],
            "kv_bytes_ratio": e["kv_bytes"] / d["kv_bytes"],
        }
    machine = {"cpu": platform.processor() or platform.machine(), "threads": a.threads, "kernels": _core.kernels_name()}
    try:
        machine["cpu"] = next(
            line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    doc = {
        "machine": machine,
        "input_tokens": INPUT_LEN,
        "shape": shape,
        "results": results,
        "ratios": ratios,
        "note": "random weights (speed only); Q8_0 weights, f16 KV cache",
    }
    (a.out / "encdec_vs_decoder.json").write_text(json.dumps(doc, indent=1))
    lines = [
        f"Machine: {machine['cpu']}, {a.threads} threads, kernels {machine['kernels']}. Random weights, Q8_0, f16 KV.",
        f"Input {INPUT_LEN} tokens; min/median of {a.reps} alternating runs.",
        "",
        "| model | params | output | first token (median / min) | decode tok/s (median / max) | KV bytes |",
        "|---|---|---|---|---|---|",
    ]
    for r in results.values():
        lines.append(
            f"| {r['model']} | {r['n_params'] / 1e6:.1f} M | {r['n_out']} | {r['first_token_s_median'] * 1e3:.0f} / "
            f"{r['first_token_s_min'] * 1e3:.0f} ms | {r['decode_tok_s_median']:.1f} / {r['decode_tok_s_max']:.1f} | "
            f"{r['kv_bytes'] / 1e6:.2f} MB |"
        )
    lines += [
        "",
        "| output | first-token latency reduction (paper ~47%) | decode throughput ratio (paper ~4.7x) "
        "| KV bytes ratio |",
        "|---|---|---|---|",
    ]
    for n_out, r in ratios.items():
        lines.append(
            f"| {n_out} | {r['first_token_latency_reduction'] * 100:.0f}% | {r['decode_throughput_ratio']:.2f}x | "
            f"{r['kv_bytes_ratio']:.2f} |"
        )
    (a.out / "encdec_vs_decoder.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for ax, key, label in (
            (axes[0], "first_token_s_median", "first-token latency (ms)"),
            (axes[1], "decode_tok_s_median", "decode tokens/s"),
        ):
            for k, name in enumerate(models):
                vals = [results[f"{name} | out {n}"][key] * (1e3 if "latency" in label else 1) for n in OUTPUTS]
                ax.bar(np.arange(len(OUTPUTS)) + k * 0.38, vals, width=0.38, label=name)
            ax.set_xticks(np.arange(len(OUTPUTS)) + 0.19, [f"{INPUT_LEN} in / {n} out" for n in OUTPUTS])
            ax.set_title(label)
        axes[0].legend(fontsize=8, loc="lower left")
        fig.suptitle(f"Equal-parameter enc-dec vs decoder-only, {machine['cpu']}, {a.threads} threads")
        fig.tight_layout()
        fig.savefig(a.out / "encdec_vs_decoder.png", dpi=110)
    except ImportError:
        print("matplotlib not installed: no plot")
    return 0


if __name__ == "__main__":
    sys.exit(main())
