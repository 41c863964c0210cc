"""CPU speed against llama.cpp's llama-bench, same machine, same weights, same threads, one run.

python bench/cpu_vs_llamacpp.py --llama-bench /path/to/llama-bench --out bench/results/cpu-vs-llamacpp
       [--reps 5] [--threads 2] [--models smollm2,random-1b] [--quants f16,q8_0,q4_0,q4_1]

llama-bench is built outside the repo from the llama.cpp that llama-cpp-python's source distribution
vendors (`pip download --no-deps --no-binary :all: llama-cpp-python`; see bench/README.md); its path
comes from --llama-bench or $LLAMA_BENCH. Models: SmolLM2-135M-Instruct (the registry's Q4_1 GGUF,
requantized by pyrt-convert to the other types, so both runtimes read identical files) and a random
Llama with 1B-class layers (hidden 2048, 16 heads, FFN 5632, 4 layers, SmolLM2's vocabulary). Tests
pp128, pp512 (prefill tokens/s) and tg128 (decode tokens/s); each repetition runs ours, then
llama-bench, as separate processes (so peak RSS is measured per process with /usr/bin/time), and the
report gives min/median of the repetitions and the ratios. Also measured: memory bandwidth (numpy
sum) and the resulting decode bound, and the measured peak FMA / int8 rates for the prefill bound.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TESTS = [("pp128", 128, 0), ("pp512", 512, 0), ("pp4096", 4096, 0), ("tg128", 0, 128)]  # pp4096: opt-in (--tests)


def sh(cmd: list[str]) -> tuple[str, int]:
    """Run a command under /usr/bin/time; returns (stdout, peak RSS in KiB)."""
    r = subprocess.run(["/usr/bin/time", "-f", "__RSS__ %M", *cmd], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    rss = int(re.findall(r"__RSS__ (\d+)", r.stderr)[-1])
    return r.stdout, rss


def ours(model: Path, test: tuple[str, int, int], threads: int) -> tuple[float, int]:
    _, n_prompt, n_gen = test
    cmd = [
        sys.executable,
        "-m",
        "pyruntime",
        "bench",
        "-m",
        str(model),
        "-t",
        str(threads),
        "-r",
        "1",
        "--json",
        "-p",
        str(n_prompt),
        "-n",
        str(n_gen),
    ]
    out, rss = sh(cmd)
    return float(json.loads(out.strip().splitlines()[-1])["tok_s"]), rss


def native_bench() -> Path | None:
    """pyrt-bench (apps/pyrt_bench.c): the same runtime through its C ABI, no Python in the process, so
    its peak RSS is the runtime's own. Installed beside the Python module."""
    import pyruntime

    path = Path(pyruntime.__file__).parent / "pyrt-bench"
    return path if path.is_file() else None


def native(exe: Path, model: Path, test: tuple[str, int, int], threads: int) -> tuple[float, int]:
    _, n_prompt, n_gen = test
    cmd = [str(exe), "-m", str(model), "-t", str(threads), "-r", "1", "--json", "-p", str(n_prompt), "-n", str(n_gen)]
    out, rss = sh(cmd)
    return float(json.loads(out.strip().splitlines()[-1])["tok_s"]), rss


def theirs(llama_bench: str, model: Path, test: tuple[str, int, int], threads: int) -> tuple[float, int]:
    _, n_prompt, n_gen = test
    cmd = [
        llama_bench,
        "-m",
        str(model),
        "-t",
        str(threads),
        "-r",
        "1",
        "-o",
        "json",
        "-p",
        str(n_prompt),
        "-n",
        str(n_gen),
    ]
    out, rss = sh(cmd)
    rows = json.loads(out)
    return float(rows[-1]["avg_ts"]), rss


def requantized_smollm2(cache: Path, quant: str) -> Path:
    from pyruntime import registry

    src = registry.pull("smollm2-135m-instruct", progress=None)
    if quant == "q4_1":
        return src
    out = cache / f"smollm2-135m-{quant}.gguf"
    if not out.exists():
        from converters.gguf_requant import requantize_gguf

        requantize_gguf(src, out, quant, False, lambda _m: None)
    return out


def random_1b(cache: Path, quant: str) -> Path:
    """1B-class layers (hidden 2048, 16 heads, FFN 5632) x 4, SmolLM2's tokenizer so llama.cpp loads it."""
    import gguf

    from converters.writer import AtomicGGUF, quantize_tensor
    from pyruntime import registry

    out = cache / f"random-1b-4layers-{quant}.gguf"
    if out.exists():
        return out
    r = gguf.GGUFReader(registry.pull("smollm2-135m-instruct", progress=None))
    rng = np.random.default_rng(0)
    E, H, F, L = 2048, 16, 5632, 4
    with AtomicGGUF(out, "llama", overwrite=True, progress=False) as w:
        for key, field in r.fields.items():
            if key.startswith("tokenizer.") and key != "tokenizer.chat_template":
                sub = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
                w.add_key_value(key, field.contents(), field.types[0], sub_type=sub)
        n_vocab = len(r.get_field("tokenizer.ggml.tokens").contents())
        w.add_file_type({"f16": 1, "q8_0": 7, "q4_0": 2, "q4_1": 3}[quant])
        w.add_context_length(4096)
        w.add_embedding_length(E)
        w.add_block_count(L)
        w.add_feed_forward_length(F)
        w.add_head_count(H)
        w.add_head_count_kv(H)
        w.add_rope_dimension_count(E // H)
        w.add_layer_norm_rms_eps(1e-5)
        w.add_vocab_size(n_vocab)

        def add(name: str, *shape: int) -> None:
            arr = (
                (rng.standard_normal(shape, dtype=np.float32) * 0.02) if len(shape) == 2 else np.ones(shape, np.float32)
            )
            data, raw = quantize_tensor(name, arr, quant, lambda _m: None)
            w.add_tensor(name, data, raw_dtype=raw)

        add("token_embd.weight", n_vocab, E)
        add("output_norm.weight", E)
        for i in range(L):
            p = f"blk.{i}."
            add(p + "attn_norm.weight", E)
            add(p + "ffn_norm.weight", E)
            for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
                add(p + name + ".weight", E, E)
            add(p + "ffn_gate.weight", F, E)
            add(p + "ffn_up.weight", F, E)
            add(p + "ffn_down.weight", E, F)
    return out


def memory_bandwidth_gbs(threads: int) -> float:
    """Streaming read bandwidth of `threads` threads, each summing its own 256 MiB array (numpy releases
    the GIL in the reduction), best of 5: the numerator of the decode bound."""
    from concurrent.futures import ThreadPoolExecutor

    arrays = [np.ones(32 * 1024 * 1024, dtype=np.float64) for _ in range(threads)]
    best = 0.0
    with ThreadPoolExecutor(threads) as ex:
        for _ in range(5):
            t0 = time.perf_counter()
            list(ex.map(lambda x: x.sum(), arrays))
            best = max(best, sum(x.nbytes for x in arrays) / (time.perf_counter() - t0))
    return best / 1e9


def peak_rates(threads: int) -> dict[str, float]:
    """Measured by the runtime's own probes (independent FMA / vpmaddubsw chains): fp32 GFLOP/s and int8
    GOP/s, the numerators of the prefill bound. The bound is what `threads` cores can do, so it is the
    larger of `threads` x one thread's rate and all threads probed together (on a shared VM the latter
    often comes out low while a neighbour holds a core)."""
    from pyruntime import _core

    one = _core.measure_peak(1)
    together = _core.measure_peak(threads)
    return {"fp32_gflops": max(threads * one[0], together[0]), "int8_gops": max(threads * one[1], together[1])}


def machine_limits(threads: int, prior: dict[str, float] | None = None) -> dict[str, float]:
    """Bandwidth and peaks, the best of this measurement and `prior`: on a shared machine a probe can
    only come out low (a neighbour's load), never above what the hardware does."""
    now = {"bandwidth_gbs": memory_bandwidth_gbs(threads), **peak_rates(threads)}
    return {k: max(v, (prior or {}).get(k, 0.0)) for k, v in now.items()}


def model_ops(path: Path) -> dict[str, int]:
    """Multiply-adds per token of the layers' linears, and what attention adds per key."""
    import gguf

    r = gguf.GGUFReader(path)
    linear = sum(int(t.n_elements) for t in r.tensors if t.name.startswith("blk.") and len(t.shape) == 2)
    arch = bytes(r.get_field("general.architecture").parts[-1]).decode()
    n_layer = int(r.get_field(f"{arch}.block_count").parts[-1][0])
    n_embd = int(r.get_field(f"{arch}.embedding_length").parts[-1][0])
    # A prompt's last layer runs its output projection and FFN for the row the head reads only (both
    # runtimes): that much less work for the others.
    last = f"blk.{n_layer - 1}."
    tail = sum(
        int(t.n_elements)
        for t in r.tensors
        if t.name.startswith(last) and t.name.split(".")[2] in ("attn_output", "ffn_gate", "ffn_up", "ffn_down")
    )
    return {"linear_macs": linear, "last_layer_tail_macs": tail, "attn_macs_per_key": 2 * n_layer * n_embd}


def bounds(
    test: tuple[str, int, int], ops: dict[str, int], file_bytes: int, quant: str, bw_gbs: float, peak: dict[str, float]
) -> float:
    """Tokens/s no implementation can beat here: decode reads every weight byte once per token;
    prefill needs 2 ops per multiply-add at the int8 (quantized types) or fp32 (F16) peak, with
    attention over (n + 1) / 2 keys on average and the last layer's output projection and FFN for one
    row of the prompt."""
    _, n_prompt, _ = test
    if n_prompt == 0:
        return bw_gbs * 1e9 / file_bytes
    skipped = ops.get("last_layer_tail_macs", 0) * (n_prompt - 1) / n_prompt
    macs = ops["linear_macs"] - skipped + ops["attn_macs_per_key"] * (n_prompt + 1) / 2
    rate = peak["fp32_gflops"] if quant == "f16" else peak["int8_gops"]
    return rate * 1e9 / (2 * macs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llama-bench", default=os.environ.get("LLAMA_BENCH"))
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cpu-vs-llamacpp")
    ap.add_argument("--cache", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "pyrt-cpu-bench")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", default="smollm2,random-1b")
    ap.add_argument("--quants", default="f16,q8_0,q4_0,q4_1")
    ap.add_argument("--tests", default="pp128,pp512,tg128")
    ap.add_argument(
        "--rebuild", action="store_true", help="only redo the report from the JSON (limits probed again, best kept)"
    )
    a = ap.parse_args()
    out_json = a.out / "cpu_vs_llamacpp.json"
    if a.rebuild:
        doc = json.loads(out_json.read_text())
        m = doc["machine"]
        limits = machine_limits(m["threads"], {k: m[k] for k in ("bandwidth_gbs", "fp32_gflops", "int8_gops")})
        write_report(
            a.out, m["cpu"], m["threads"], limits, doc["commit"], len(doc["rows"][0]["ours_tok_s"]), doc["rows"]
        )
        return 0
    if not a.llama_bench or not shutil.which(a.llama_bench):
        ap.error("give llama-bench with --llama-bench PATH or $LLAMA_BENCH (see bench/README.md for building it)")
    a.out.mkdir(parents=True, exist_ok=True)
    a.cache.mkdir(parents=True, exist_ok=True)
    tests = [t for t in TESTS if t[0] in a.tests.split(",")]
    makers = {"smollm2": requantized_smollm2, "random-1b": random_1b}
    rows: list[dict[str, Any]] = []
    limits = machine_limits(a.threads)  # probed before and after the runs, best kept
    exe = native_bench()
    if exe is None:
        print("pyrt-bench is not built beside the pyruntime module: no native (Python-free) column", flush=True)
    for model_name in a.models.split(","):
        for quant in a.quants.split(","):
            path = makers[model_name](a.cache, quant)
            ops = model_ops(path)
            for test in tests:
                ours_ts, theirs_ts, ours_rss, theirs_rss = [], [], [], []
                native_ts, native_rss = [], []
                for _ in range(a.reps):  # alternate: all see the same machine state
                    ts, rss = ours(path, test, a.threads)
                    ours_ts.append(ts)
                    ours_rss.append(rss)
                    if exe is not None:
                        ts, rss = native(exe, path, test, a.threads)
                        native_ts.append(ts)
                        native_rss.append(rss)
                    ts, rss = theirs(a.llama_bench, path, test, a.threads)
                    theirs_ts.append(ts)
                    theirs_rss.append(rss)
                row = {
                    "model": model_name,
                    "quant": quant,
                    "test": test[0],
                    "file_bytes": path.stat().st_size,
                    **ops,
                    "ours_tok_s": ours_ts,
                    "llamacpp_tok_s": theirs_ts,
                    "ours_median": statistics.median(ours_ts),
                    "llamacpp_median": statistics.median(theirs_ts),
                    "ours_min": min(ours_ts),
                    "llamacpp_min": min(theirs_ts),
                    "ours_peak_rss_kib": max(ours_rss),
                    "llamacpp_peak_rss_kib": max(theirs_rss),
                }
                if native_ts:
                    row |= {
                        "native_tok_s": native_ts,
                        "native_median": statistics.median(native_ts),
                        "native_peak_rss_kib": max(native_rss),
                    }
                row["ratio_median"] = row["ours_median"] / row["llamacpp_median"]
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if not isinstance(v, list)}), flush=True)
    limits = machine_limits(a.threads, limits)
    cpu = platform.processor() or platform.machine()
    try:
        cpu = re.findall(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())[0]
    except (OSError, IndexError):
        pass
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    write_report(a.out, cpu, a.threads, limits, commit, a.reps, rows)
    return 0


def write_report(
    out: Path, cpu: str, threads: int, limits: dict[str, float], commit: str, reps: int, rows: list[dict[str, Any]]
) -> None:
    bw, peak = limits["bandwidth_gbs"], limits
    for r in rows:
        test = next(t for t in TESTS if t[0] == r["test"])
        r["bound_tok_s"] = bounds(test, r, r["file_bytes"], r["quant"], bw, peak)
        r["ours_of_bound"] = r["ours_median"] / r["bound_tok_s"]
        r["llamacpp_of_bound"] = r["llamacpp_median"] / r["bound_tok_s"]
    doc = {"machine": {"cpu": cpu, "threads": threads, **limits}, "commit": commit, "rows": rows}
    (out / "cpu_vs_llamacpp.json").write_text(json.dumps(doc, indent=1))
    lines = [
        f"Machine: {cpu}, {threads} threads; read bandwidth {bw:.1f} GB/s; measured peak fp32 "
        f"{peak['fp32_gflops']:.0f} GFLOP/s (FMA), int8 {peak['int8_gops']:.0f} GOP/s (vpmaddubsw); "
        f"commit {commit}. Median (min) of {reps} alternating runs. Bound: decode = bandwidth / file "
        "bytes; prefill = peak / (2 x multiply-adds per token, attention included); bandwidth and peaks are the best "
        "of the probes taken with the runs and when the report was (re)built; peak = threads x one core, or all "
        "threads together if higher.",
        "",
        "pyruntime = the Python SDK (`pyrt bench`); native = pyrt-bench, the same runtime through the C ABI "
        "with no Python in the process (its RSS is the runtime's own; the SDK's adds the interpreter, about 15 MiB: "
        "text generation never imports numpy).",
        "",
        "| model | type | test | pyruntime tok/s | llama.cpp tok/s | ratio | native tok/s | bound tok/s "
        "| ours / llama.cpp of bound | peak RSS SDK / native / llama.cpp (MiB) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        has_native = "native_median" in r
        lines.append(
            f"| {r['model']} | {r['quant']} | {r['test']} | {r['ours_median']:.1f} ({r['ours_min']:.1f}) | "
            f"{r['llamacpp_median']:.1f} ({r['llamacpp_min']:.1f}) | {r['ratio_median']:.2f} | "
            + (f"{r['native_median']:.1f} | " if has_native else "- | ")
            + f"{r['bound_tok_s']:.0f} | {100 * r['ours_of_bound']:.0f}% / {100 * r['llamacpp_of_bound']:.0f}% | "
            f"{r['ours_peak_rss_kib'] / 1024:.0f} / "
            + (f"{r['native_peak_rss_kib'] / 1024:.0f}" if has_native else "-")
            + f" / {r['llamacpp_peak_rss_kib'] / 1024:.0f} |"
        )
    (out / "cpu_vs_llamacpp.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        labels = [f"{r['model']}\n{r['quant']} {r['test']}" for r in rows]
        x = np.arange(len(rows))
        fig, ax = plt.subplots(figsize=(max(8, len(rows) * 0.6), 4.5))
        ax.bar(x - 0.2, [r["ours_median"] for r in rows], 0.4, label="pyruntime")
        ax.bar(x + 0.2, [r["llamacpp_median"] for r in rows], 0.4, label="llama.cpp")
        ax.set_xticks(x, labels, rotation=90, fontsize=7)
        ax.set_yscale("log")
        ax.set_ylabel("tokens/s (median)")
        ax.set_title(f"pyruntime vs llama.cpp, {cpu}, {threads} threads, commit {commit}")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "cpu_vs_llamacpp.png", dpi=110)
    except ImportError:
        print("matplotlib not installed: no plot")


if __name__ == "__main__":
    sys.exit(main())
