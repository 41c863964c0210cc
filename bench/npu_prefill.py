"""NPU-style prefill on SmolLM2-135M: W8A8 quality with and without shadow outlier correction, and
prefill time of the CPU path vs a delegate (sequential and overlapped), with a timeline picture.

python bench/npu_prefill.py --out bench/results/npu-prefill [--threads 2] [--reps 3]

Calibration text: the first 110k characters of botchan.txt; evaluation: 4 x 512 tokens from 200k on
(held out). On a machine without an NPU the delegates compute on the same CPU cores; the table then
also gives the projection max(CPU busy, delegate busy) for hardware where the delegate is separate.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyruntime  # noqa: E402
from converters.calibrate import calibration_for, calibration_samples, write_calibrated  # noqa: E402

BOTCHAN = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "text" / "botchan.txt"
THRESHOLDS = [5.0, 1.5, 1.0]


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def quality(paths: dict[float, Path], windows: list[list[int]], threads: int) -> list[dict[str, Any]]:
    first = next(iter(paths.values()))
    ref_model = pyruntime.load(first, activations="f32", kv_cache="f32", threads=threads)
    ref = [log_softmax(ref_model.session().feed(w)) for w in windows]

    def score(model: pyruntime.Model) -> tuple[float, float]:
        kls, nll = [], []
        for w, lp in zip(windows, ref):
            lq = log_softmax(model.session().feed(w))
            kls.append(float((np.exp(lp) * (lp - lq)).sum(-1).mean()))
            nll += list(-lq[np.arange(len(w) - 1), w[1:]])
        return float(np.mean(kls)), float(np.exp(np.mean(nll)))

    ref_nll = [float(-lp[np.arange(len(w) - 1), w[1:]].mean()) for w, lp in zip(windows, ref)]
    rows = [{"config": "f32 (reference)", "kl": 0.0, "ppl": float(np.exp(np.mean(ref_nll)))}]
    kl, ppl = score(pyruntime.load(first, threads=threads))
    rows.append({"config": "CPU path (q8 activations, default)", "kl": kl, "ppl": ppl})
    for tau, path in paths.items():
        for scales in ("per-tensor", "per-channel"):
            for outliers in ("off", "on"):
                m = pyruntime.load(
                    path, device="npu", outliers=outliers, weight_scales=scales, kv_cache="f32", threads=threads
                )
                kl, ppl = score(m)
                rows.append(
                    {
                        "config": f"W8A8 {scales} weights, tau={tau:g}, outliers {outliers}",
                        "tau": tau,
                        "weights": scales,
                        "outliers": outliers,
                        "kl": kl,
                        "ppl": ppl,
                    }
                )
    for r in rows:
        r["ppl_vs_f32"] = r["ppl"] / rows[0]["ppl"] - 1
    return rows


def prefill_time(path: Path, ids: list[int], threads: int, reps: int) -> list[dict[str, Any]]:
    configs: list[tuple[str, dict[str, Any]]] = [
        ("CPU path", dict(threads=threads)),
        ("reference delegate, sequential", dict(device="npu", threads=threads, overlap=False)),
        (
            "reference delegate, overlapped",
            dict(device="npu", threads=max(1, threads // 2), delegate_threads=max(1, threads // 2), overlap=True),
        ),
        (
            "onnxruntime delegate, sequential",
            dict(device="npu", delegate="onnxruntime", threads=threads, overlap=False),
        ),
    ]
    rows = []
    for n in (64, 256, 1024):
        prompt = np.asarray(ids[:n], dtype=np.int64)
        for name, kw in configs:
            model = pyruntime.load(path, **kw)
            vocab = model.vocab_size
            times, last = [], None
            model.session()._s.feed(prompt, False, vocab)  # warm-up (and profiled latencies)
            for _ in range(reps):
                s = model.session()
                t0 = time.perf_counter()
                s._s.feed(prompt, False, vocab)
                times.append(time.perf_counter() - t0)
                last = s
            assert last is not None
            row: dict[str, Any] = {
                "tokens": n,
                "config": name,
                "min_s": min(times),
                "median_s": statistics.median(times),
                "tok_per_s": n / min(times),
            }
            p = last.stats()["placement"]
            d = model.delegate
            if d:
                head_macs = n * 576 * 49152  # output head (CPU), only the last row's logits are needed
                del_macs = p[d]["linear_macs"]
                row.update(
                    delegate_busy_s=p[d]["busy_s"],
                    cpu_busy_s=p["cpu"]["busy_s"],
                    attention_s=p["cpu"]["attention_s"],
                    shadow_s=p["cpu"]["shadow_s"],
                    wall_s=p["prefill_wall_s"],
                    linear_share_on_delegate=del_macs / (del_macs + head_macs / n),
                    padded_macs_share=p["pad_tokens"] / (p["chunks"] * model.prefill_chunk),
                    projected_separate_npu_s=max(p[d]["busy_s"], p["cpu"]["busy_s"]),
                )
                if name.endswith("overlapped") and n == 1024:
                    last.save_trace(OUT / "trace_1024.json")
            rows.append(row)
            print(row, flush=True)
    return rows


def plot_timeline(trace_path: Path, png: Path) -> None:
    """The whole prefill, and a 120 ms window from its middle where the interleaving is visible."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    events = [e for e in json.loads(trace_path.read_text())["traceEvents"] if e["ph"] == "X"]
    colors = {
        "attention": "tab:red",
        "qkv": "tab:blue",
        "attn_output": "tab:cyan",
        "gate_up": "tab:green",
        "ffn_down": "tab:olive",
    }
    end_ms = max(e["ts"] + e["dur"] for e in events) / 1e3
    mid = end_ms / 2
    fig, axes = plt.subplots(2, 1, figsize=(12, 5))
    for ax, (lo, hi) in zip(axes, [(0.0, end_ms), (mid, mid + 120.0)]):
        for e in events:
            a, d = e["ts"] / 1e3, e["dur"] / 1e3
            if a + d < lo or a > hi:
                continue
            shade = 0.45 + 0.55 * ((e["args"]["chunk"] % 2) == 0)
            ax.barh(1 - e["tid"], d, left=a, color=colors.get(e["name"], "tab:gray"), alpha=shade, edgecolor="none")
        ax.set_xlim(lo, hi)
        ax.set_yticks([1, 0], ["CPU", "delegate"])
    axes[0].set_title("Overlapped prefill, 1024 tokens in chunks of 128 (alternate chunks shaded); below: 120 ms zoom")
    axes[1].set_xlabel("ms")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colors.values()] + [
        plt.Rectangle((0, 0), 1, 1, color="tab:gray")
    ]
    axes[0].legend(handles, [*colors.keys(), "norms/residual/shadow"], ncol=6, fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(png, dpi=120)


def write_markdown(out: Path, q: list[dict[str, Any]], t: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    lines = [
        f"# NPU-style prefill: SmolLM2-135M-Instruct Q4_1 ({meta['machine']}, {meta['threads']} threads, "
        f"commit {meta['commit']}; timing commit {meta.get('time_commit', meta['commit'])})",
        "",
        "No NPU here: the delegates compute on the same CPU cores as the runtime (stats say so).",
        "",
        "## Quality: W8A8 static (SPEC 5.1; weights per tensor or per output channel) vs f32, "
        "4 x 512 held-out tokens of botchan.txt",
        "",
        "| config | mean KL vs f32 | perplexity | vs f32 |",
        "|---|---|---|---|",
    ]
    for r in q:
        lines.append(f"| {r['config']} | {r['kl']:.4f} | {r['ppl']:.2f} | {r['ppl_vs_f32'] * 100:+.1f}% |")
    lines += [
        "",
        "## Prefill time (min of reps; tokens/s in brackets)",
        "",
        "| tokens | config | min s | median s | delegate busy s | CPU busy s | attention s | shadow s | "
        "projected, separate NPU s | linear MACs on delegate |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in t:
        extra = (
            f"{r['delegate_busy_s']:.3f} | {r['cpu_busy_s']:.3f} | {r['attention_s']:.3f} | {r['shadow_s']:.3f} | "
            f"{r['projected_separate_npu_s']:.3f} | {r['linear_share_on_delegate'] * 100:.1f}%"
            if "delegate_busy_s" in r
            else "- | - | - | - | - | 0%"
        )
        lines.append(
            f"| {r['tokens']} | {r['config']} | {r['min_s']:.3f} ({r['tok_per_s']:.0f}) | "
            f"{r['median_s']:.3f} | {extra} |"
        )
    lines += ["", "![timeline](timeline_1024.png)", ""]
    (out / "npu_prefill.md").write_text("\n".join(lines), encoding="utf-8")


def main() -> None:
    global OUT
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("bench/results/npu-prefill"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--samples", type=int, default=40)
    ap.add_argument("--time-only", action="store_true", help="keep the recorded quality table; rerun the timing part")
    a = ap.parse_args()
    OUT = a.out
    a.out.mkdir(parents=True, exist_ok=True)
    src = Path(pyruntime.registry.pull("smollm2-135m-instruct", progress=None))
    text = BOTCHAN.read_text(encoding="utf-8")
    if a.time_only:
        old = json.loads((a.out / "npu_prefill.json").read_text())
        tok = pyruntime.load(src).tokenizer
        assert tok is not None
        ids = tok.encode(text[200_000:], add_special=False)
        t = prefill_time(Path("/tmp/smollm2-calibrated-tau1.5.gguf"), ids, a.threads, a.reps)
        plot_timeline(a.out / "trace_1024.json", a.out / "timeline_1024.png")
        meta = old["meta"]
        meta["time_commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        (a.out / "npu_prefill.json").write_text(
            json.dumps({"meta": meta, "quality": old["quality"], "time": t}, indent=1)
        )
        write_markdown(a.out, old["quality"], t, meta)
        return
    # One statistics pass shared by every threshold (what pyrt-convert --calibrate does per threshold).
    fp = pyruntime.load(src, activations="f32", kv_cache="f32", threads=a.threads)
    samples = calibration_samples(fp, text[:110_000], a.samples, 512)
    linears = fp._m.calibrate_linears(samples)
    paths, summaries = {}, {}
    for tau in THRESHOLDS:
        p = Path("/tmp") / f"smollm2-calibrated-tau{tau:g}.gguf"
        tensors, summaries[tau] = calibration_for(fp, samples, linears, tau)
        meta = {"pyrt.calibration.source": "botchan.txt[:110000]", "pyrt.calibration.outlier_threshold": tau}
        write_calibrated(src, p, tensors, meta, True, lambda m: None)
        print(tau, summaries[tau], flush=True)
        paths[tau] = p
    tok = pyruntime.load(src).tokenizer
    assert tok is not None
    ids = tok.encode(text[200_000:], add_special=False)
    windows = [ids[i * 512 : (i + 1) * 512] for i in range(4)]
    q = quality(paths, windows, a.threads)
    t = prefill_time(paths[1.5], ids, a.threads, a.reps)
    plot_timeline(a.out / "trace_1024.json", a.out / "timeline_1024.png")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    meta = {"machine": platform.processor() or platform.machine(), "threads": a.threads, "commit": commit}
    try:
        meta["machine"] = next(
            line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    meta["calibration"] = {f"{k:g}": v for k, v in summaries.items()}
    meta["calibration_tokens"] = sum(map(len, samples))
    (a.out / "npu_prefill.json").write_text(json.dumps({"meta": meta, "quality": q, "time": t}, indent=1))
    write_markdown(a.out, q, t, meta)


OUT = Path(".")

if __name__ == "__main__":
    main()
