"""KV cache formats on SmolLM2-135M: memory, quality (KL / perplexity vs the f32 cache), decode speed.

python bench/kv_cache.py --out bench/results/kv-cache [--tokens 4096] [--threads 2]
Quality: prefill a short prefix of botchan.txt, then feed the text token by token, so the compressed
cache is what later tokens attend to; every format runs in lockstep with the f32 reference.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyruntime  # noqa: E402
from pyruntime import _core  # noqa: E402

# kivi4 / kivi2 are the defaults (4-token fp16 sink; key clipping at 2 bits); -s0-noclip is the paper's KIVI.
FORMATS = ["f16", "q8_0", "q4_0", "kivi4", "kivi2", "kivi4-s0-noclip", "kivi2-s0-noclip"]
BOTCHAN = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "text" / "botchan.txt"


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64) - x.max()
    return x - np.log(np.exp(x).sum())


def memory_table(n_layers: int, n_kv_heads: int, head_dim: int) -> list[dict[str, Any]]:
    rows = []
    for T in (4096, 32768):
        data = np.random.default_rng(0).standard_normal((T, n_kv_heads * head_dim)).astype(np.float32)
        f16_total = None
        for spec in ["f32", *FORMATS]:
            per_layer = 0
            for keys in (True, False):
                st = _core.KvStore(spec, keys, n_kv_heads, head_dim)
                st.append(data)
                st.finish_step()
                per_layer += st.bytes
            total = per_layer * n_layers
            f16_total = total if spec == "f16" else f16_total
            rows.append({"context": T, "kv": spec, "total_bytes": total, "bytes_per_token": total / T})
        for r in rows:
            if r["context"] == T:
                r["vs_f16"] = r["total_bytes"] / f16_total
    return rows


def quality(model_path: Path, n_tokens: int, threads: int, prefix: int = 64) -> list[dict[str, Any]]:
    """Float activations (the exact path) isolate the cache's error: with 8-bit activations any change
    in the attention output, however small, re-rolls the activations' rounding, and the KL between two
    such re-rolls (~4e-3 on this model, whatever the cache) would swamp q8_0's and f16's."""
    text = BOTCHAN.read_text(encoding="utf-8")
    ref_model = pyruntime.load(model_path, kv_cache="f32", threads=threads, activations="f32")
    ids = ref_model.tokenize(text, add_special=False)[: n_tokens + prefix + 1]
    models = {spec: pyruntime.load(model_path, kv_cache=spec, threads=threads, activations="f32") for spec in FORMATS}
    sessions = {"f32": ref_model.session(), **{s: m.session() for s, m in models.items()}}
    kl = {s: 0.0 for s in FORMATS}
    nll = {s: 0.0 for s in ["f32", *FORMATS]}
    logits = {s: sess.feed(ids[:prefix])[-1] for s, sess in sessions.items()}
    t0 = time.time()
    for i in range(prefix, prefix + n_tokens):
        target = ids[i]
        lp_ref = log_softmax(logits["f32"])
        nll["f32"] -= lp_ref[target]
        p_ref = np.exp(lp_ref)
        for s in FORMATS:
            lp = log_softmax(logits[s])
            kl[s] += float((p_ref * (lp_ref - lp)).sum())
            nll[s] -= lp[target]
        logits = {s: sess.feed([target])[-1] for s, sess in sessions.items()}
        if (i - prefix) % 512 == 511:
            print(f"  {i - prefix + 1}/{n_tokens} tokens, {time.time() - t0:.0f} s", flush=True)
    rows = []
    for s in ["f32", *FORMATS]:
        ppl = float(np.exp(nll[s] / n_tokens))
        rows.append(
            {
                "kv": s,
                "tokens": n_tokens,
                "prefix": prefix,
                "mean_kl_vs_f32": kl.get(s, 0.0) / n_tokens,
                "perplexity": ppl,
                "kv_bytes": sessions[s].kv_bytes,
            }
        )
    base = rows[0]["perplexity"]
    for r in rows:
        r["ppl_vs_f32"] = r["perplexity"] / base - 1.0
    return rows


def speed(
    model_path: Path, threads: int, contexts: list[int], n_decode: int = 32, reps: int = 5
) -> list[dict[str, Any]]:
    """Decode tokens/s with the context filled to each length, every format's session alive at once and
    the repetitions alternating between formats, so they all see the same machine state."""
    rows = []
    rng = np.random.default_rng(1)
    specs = ["f16", *[f for f in FORMATS if f != "f16"]]
    models = {spec: pyruntime.load(model_path, kv_cache=spec, threads=threads) for spec in specs}
    sessions = {spec: m.session() for spec, m in models.items()}
    vocab = models["f16"].vocab_size
    filled = 0
    for ctx in contexts:
        # Fill so that the decoded tokens end at `ctx`: the model's context (8192) is a hard limit.
        ctx = min(ctx, models["f16"].context_length) - n_decode * reps
        ids = rng.integers(0, vocab, max(ctx - filled, 1)).tolist()
        for s in sessions.values():
            for k in range(0, len(ids), 512):
                s.feed(ids[k : k + 512])
        filled = ctx
        rates: dict[str, list[float]] = {spec: [] for spec in specs}
        for _ in range(reps):  # measured in place: each context grows by n_decode per repetition
            toks = rng.integers(0, vocab, n_decode).tolist()
            for spec, s in sessions.items():
                t0 = time.perf_counter()
                for tok in toks:
                    s._feed([tok], all_logits=False)
                rates[spec].append(n_decode / (time.perf_counter() - t0))
        filled += n_decode * reps
        for spec in specs:
            rows.append(
                {
                    "kv": spec,
                    "context": ctx,
                    "decode_tok_s_median": float(np.median(rates[spec])),
                    "decode_tok_s_min": float(np.min(rates[spec])),
                    "vs_f16": float(np.median(rates[spec]) / np.median(rates["f16"])),
                    "kv_bytes": sessions[spec].kv_bytes,
                }
            )
            print(f"  {spec:6} ctx {ctx:5}: {np.median(rates[spec]):6.2f} tok/s", flush=True)
    return rows


def markdown(result: dict[str, Any]) -> str:
    m = result["meta"]
    lines = [f"# KV cache formats: SmolLM2-135M-Instruct Q4_1 ({m['cpu']}, {m['threads']} threads)", ""]
    lines += [
        "## Memory (30 layers, 3 KV heads, d=64)",
        "",
        "| format | bytes/token | total at 4k | total at 32k | vs f16 at 32k |",
        "|---|---|---|---|---|",
    ]
    by = {(r["kv"], r["context"]): r for r in result["memory"]}
    for spec in ["f32", *FORMATS]:
        a, b = by[(spec, 4096)], by[(spec, 32768)]
        lines.append(
            f"| {spec} | {b['bytes_per_token']:.0f} | {a['total_bytes'] / 2**20:.1f} MiB | "
            f"{b['total_bytes'] / 2**20:.1f} MiB | {b['vs_f16']:.3f} |"
        )
    q = result["quality"]
    lines += [
        "",
        f"## Quality: botchan.txt, {q[0]['prefix']}-token prefix then {q[0]['tokens']} tokens fed one by one "
        "(float activations, so only the cache differs)",
        "",
        "| format | mean KL vs f32 cache | perplexity | vs f32 |",
        "|---|---|---|---|",
    ]
    for r in q:
        lines.append(f"| {r['kv']} | {r['mean_kl_vs_f32']:.2e} | {r['perplexity']:.3f} | {r['ppl_vs_f32']:+.2%} |")
    if "speed" in result:
        ctxs = sorted({r["context"] for r in result["speed"]})
        lines += [
            "",
            f"## Decode speed (tokens/s, median of 5 x 32 tokens, formats alternating) by context "
            f"(commit {m.get('commit', '?')})",
            "",
            "| format | " + " | ".join(str(c) for c in ctxs) + " |",
            "|---|" + "---|" * len(ctxs),
        ]
        f16 = {r["context"]: r["decode_tok_s_median"] for r in result["speed"] if r["kv"] == "f16"}
        for spec in sorted({r["kv"] for r in result["speed"]}, key=lambda s: ["f16", *FORMATS].index(s)):
            cells = []
            for c in ctxs:
                r = next(x for x in result["speed"] if x["kv"] == spec and x["context"] == c)
                cells.append(f"{r['decode_tok_s_median']:.1f} ({r['decode_tok_s_median'] / f16[c]:.2f}x)")
            lines.append(f"| {spec} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    mem = [r for r in result["memory"] if r["context"] == 32768]
    axes[0].bar([r["kv"] for r in mem], [r["vs_f16"] for r in mem])
    axes[0].set_title("KV bytes vs f16 (32k context)")
    q = [r for r in result["quality"] if r["kv"] != "f32"]
    axes[1].bar([r["kv"] for r in q], [r["mean_kl_vs_f32"] for r in q])
    axes[1].set_yscale("log")
    axes[1].set_title(f"mean KL vs f32 cache ({q[0]['tokens']} tokens)")
    for ax in axes[:2]:
        ax.tick_params(axis="x", labelrotation=35)
    for spec in sorted({r["kv"] for r in result["speed"]}):
        rs = [r for r in result["speed"] if r["kv"] == spec]
        axes[2].plot([r["context"] for r in rs], [r["decode_tok_s_median"] for r in rs], "o-", label=spec)
    axes[2].set_xlabel("context")
    axes[2].set_ylabel("decode tok/s")
    axes[2].legend()
    axes[2].set_title("decode speed")
    fig.suptitle(f"KV cache formats, SmolLM2-135M Q4_1, {result['meta']['cpu']}, {result['meta']['threads']} threads")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--contexts", default="1024,4096,8192")
    ap.add_argument(
        "--parts", default="memory,quality,speed", help="which parts to (re)run; others are kept from the JSON"
    )
    a = ap.parse_args()
    parts = set(a.parts.split(","))
    from pyruntime import registry
    from pyruntime.cli import machine_info

    a.out.mkdir(parents=True, exist_ok=True)
    path = registry.pull("smollm2-135m-instruct", progress=None)
    out_json = a.out / "kv_cache.json"
    result: dict[str, Any] = json.loads(out_json.read_text()) if out_json.exists() else {}
    commit = subprocess.run(
        ["git", "-C", str(Path(__file__).resolve().parents[1]), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    result["meta"] = {
        **machine_info(),
        "threads": a.threads,
        "model": path.name,
        "python": platform.python_version(),
        "commit": commit,
    }
    if "memory" in parts:
        result["memory"] = memory_table(30, 3, 64)
        print("memory done", flush=True)
    if "quality" in parts:
        result["quality"] = quality(path, a.tokens, a.threads)
        for r in result["quality"]:
            print(f"  {r['kv']:6} KL {r['mean_kl_vs_f32']:.2e}  ppl {r['perplexity']:.3f} ({r['ppl_vs_f32']:+.2%})")
        out_json.write_text(json.dumps(result, indent=1))
    if "speed" in parts:
        result["speed"] = speed(path, a.threads, [int(c) for c in a.contexts.split(",")])
    out_json.write_text(json.dumps(result, indent=1))
    if {"memory", "quality"} <= set(result):
        (a.out / "kv_cache.md").write_text(markdown(result))
    if {"memory", "quality", "speed"} <= set(result):
        plot(result, a.out / "kv_cache.png")


if __name__ == "__main__":
    main()
