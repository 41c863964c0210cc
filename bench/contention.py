"""Decode and prefill when another process competes for the cores: pyrt-bench and llama-bench, each alone
and as N copies started together (same model, same threads), alternating.

python bench/contention.py --llama-bench PATH --model MODEL.gguf --out bench/results/contention [--copies 2]

A runtime whose threads spin while they wait can lose far more than its share of the cores when the
thread it waits for is descheduled; this shows each runtime's tokens/s per copy against its own
tokens/s alone.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def together(cmd: list[str], parse: str, copies: int) -> list[float]:
    """Starts `copies` processes at once; their tokens/s (pyrt-bench's or llama-bench's JSON)."""
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(copies)]
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=900)
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{stderr[-2000:]}")
        if parse == "pyrt":
            out.append(float(json.loads(stdout.strip().splitlines()[-1])["tok_s"]))
        else:
            out.append(float(json.loads(stdout)[-1]["avg_ts"]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama-bench", default=os.environ.get("LLAMA_BENCH"))
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--copies", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    import pyruntime

    pyrt_bench = Path(pyruntime.__file__).parent / "pyrt-bench"
    tests = {"pp512": (512, 0), "tg128": (0, 128)}
    rows: list[dict[str, Any]] = []
    for test, (p, n) in tests.items():
        common = ["-m", str(a.model), "-t", str(a.threads), "-p", str(p), "-n", str(n), "-r", "1"]
        cmds = {
            "pyruntime": ([str(pyrt_bench), *common, "--json"], "pyrt"),
            "llama.cpp": ([a.llama_bench, *common, "-o", "json"], "llama"),
        }
        alone: dict[str, list[float]] = {k: [] for k in cmds}
        shared: dict[str, list[float]] = {k: [] for k in cmds}
        for _ in range(a.reps):  # alternating runtimes and modes
            for name, (cmd, parse) in cmds.items():
                alone[name] += together(cmd, parse, 1)
                shared[name] += together(cmd, parse, a.copies)
        for name in cmds:
            row = {
                "runtime": name,
                "test": test,
                "copies": a.copies,
                "alone_median": statistics.median(alone[name]),
                "per_copy_median": statistics.median(shared[name]),
            }
            row["per_copy_vs_alone"] = row["per_copy_median"] / row["alone_median"]
            rows.append(row)
            print(json.dumps(row), flush=True)
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    doc = {"model": a.model.name, "threads": a.threads, "commit": commit.stdout.strip(), "rows": rows}
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "contention.json").write_text(json.dumps(doc, indent=1))
    lines = [
        f"{a.model.name}, {a.threads} threads per process, {a.copies} processes started together vs alone, "
        f"median of {a.reps} alternating runs (commit {doc['commit']}). Fair share per copy: 1/{a.copies} of alone.",
        "",
        "| runtime | test | alone tok/s | per copy tok/s | per copy / alone |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['runtime']} | {r['test']} | {r['alone_median']:.1f} | {r['per_copy_median']:.1f} | "
            f"{r['per_copy_vs_alone']:.2f} |"
        )
    (a.out / "contention.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
