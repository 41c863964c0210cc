"""End-to-end tokens/s on the GPU: pyruntime device="cuda" vs Hugging Face transformers (PyTorch, fp16,
eager) on the same randomly initialised Llama, measured in the same run.

python bench/cuda_e2e.py --out bench/results/cuda-e2e            (needs a CUDA GPU, torch, transformers)
python bench/cuda_e2e.py --out /tmp/x --small --device cuda-sim --torch-device cpu   (smoke test, no GPU)

The model is 1B-shaped (hidden 2048, 16 heads, 4 KV heads, intermediate 5632; --layers, default 4, as
in the CPU benchmark), converted with pyrt-convert to each --quant. Prefill: tokens/s of one prompt of
128 / 512 tokens into an empty cache. Decode: 128 single-token steps after a 128-token prompt.
Batched decode (tgNxB): B conversations of different lengths (prompts of 128 / 2 to 128 tokens) step N
times together, tokens/s over all of them: ours Model.decode (weights read once per 8 sessions, Lean
Attention over the ragged caches), transformers one forward of the B rows (left-padded to one
length, with their attention mask: what it needs for ragged batches). Each
figure is min / median over --reps runs; each rep runs both sides (alternating). transformers runs the fp16
weights (it has no Q8_0/Q4_0 kernels): for quantized files the ratio compares our quantized path with
its fp16 one. Writes cuda_e2e.json and cuda_e2e.png.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np


def timed(fn: Callable[[], Any], sync: Callable[[], None]) -> float:
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def build_model(out: Path, small: bool, layers: int, seed: int = 0) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if small:
        shape: dict[str, Any] = dict(hidden_size=256, intermediate_size=512, num_attention_heads=4, vocab_size=512)
        shape["num_key_value_heads"] = 2
    else:
        shape = dict(hidden_size=2048, intermediate_size=5632, num_attention_heads=16, vocab_size=32000)
        shape["num_key_value_heads"] = 4
    cfg = LlamaConfig(num_hidden_layers=layers, max_position_embeddings=2048, tie_word_embeddings=False, **shape)
    torch.manual_seed(seed)
    LlamaForCausalLM(cfg).save_pretrained(out)
    return out


def parse_test(test: str) -> tuple[int, int]:
    """ppN / tgN / tgNxB -> (N, B)."""
    n, _, b = test[2:].partition("x")
    return int(n), int(b or 1)


def ragged_lengths(n: int, batch: int) -> list[int]:
    """Prompt lengths of a ragged batch: the first n tokens, then shorter ones down to n / batch."""
    return [max(2, n - b * n // batch) for b in range(batch)]


class Ours:
    def __init__(self, path: Path, device: str) -> None:
        import pyruntime as pr

        self.model = pr.load(path, device=device, context=1024)

    def run(self, test: str, ids: list[int]) -> float:
        """tokens/s of one run of `test` (ppN: N-token prompt; tgN: N steps after the ids as prompt;
        tgNxB: N steps of B sessions together after prompts of ragged_lengths)."""
        n, batch = parse_test(test)
        if batch > 1:
            sessions = [self.model.session() for _ in range(batch)]
            self.model.prefill(sessions, [ids[:length] for length in ragged_lengths(len(ids), batch)])
            t0 = time.perf_counter()
            for i in range(n):
                self.model.decode(sessions, [ids[(i + b) % len(ids)] for b in range(batch)])
            return batch * n / (time.perf_counter() - t0)
        s = self.model.session()
        if test.startswith("pp"):
            t0 = time.perf_counter()
            s._feed_rows(ids[:n], all_logits=False)
            return n / (time.perf_counter() - t0)
        s._feed_rows(ids, all_logits=False)
        t0 = time.perf_counter()
        for i in range(n):
            s._feed_rows([ids[i % len(ids)]], all_logits=False)
        return n / (time.perf_counter() - t0)


class Theirs:
    def __init__(self, hf_dir: Path, torch_device: str) -> None:
        import torch
        from transformers import LlamaForCausalLM

        self.torch, self.device = torch, torch_device
        dtype = torch.float16 if torch_device == "cuda" else torch.float32  # CPU fp16 matmuls are no peer
        self.model = LlamaForCausalLM.from_pretrained(hf_dir, torch_dtype=dtype).to(torch_device).eval()

    def sync(self) -> None:
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def run(self, test: str, ids: list[int]) -> float:
        torch, model = self.torch, self.model
        n, batch = parse_test(test)
        if batch > 1:
            return self.run_batch(n, batch, ids)
        with torch.inference_mode():
            x = torch.tensor([ids[:n] if test.startswith("pp") else ids], device=self.device)
            if test.startswith("pp"):
                return n / timed(lambda: model(x, use_cache=True), self.sync)
            past = model(x, use_cache=True).past_key_values

            def steps(past: Any = past) -> None:
                for i in range(n):
                    tok = torch.tensor([[ids[i % len(ids)]]], device=self.device)
                    past = model(tok, past_key_values=past, use_cache=True).past_key_values

            return n / timed(steps, self.sync)

    def run_batch(self, n: int, batch: int, ids: list[int]) -> float:
        """B ragged prompts left-padded to one length (the attention mask hides the pads), then n
        steps of all B rows: what transformers does for a batch of conversations."""
        torch, model = self.torch, self.model
        lengths = ragged_lengths(len(ids), batch)
        width = max(lengths)
        x = torch.zeros((batch, width), dtype=torch.long, device=self.device)
        mask = torch.zeros((batch, width), dtype=torch.long, device=self.device)
        for b, length in enumerate(lengths):
            x[b, width - length :] = torch.tensor(ids[:length], device=self.device)
            mask[b, width - length :] = 1
        with torch.inference_mode():
            past = model(x, attention_mask=mask, use_cache=True).past_key_values

            def steps(past: Any = past, mask: Any = mask) -> None:
                for i in range(n):
                    tok = torch.tensor([[ids[(i + b) % len(ids)]] for b in range(batch)], device=self.device)
                    mask = torch.cat([mask, torch.ones((batch, 1), dtype=mask.dtype, device=self.device)], dim=1)
                    past = model(tok, attention_mask=mask, past_key_values=past, use_cache=True).past_key_values

            return batch * n / timed(steps, self.sync)


def plot(rows: list[dict[str, Any]], path: Path, device: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    labels = [f"{r['quant']} {r['test']}" for r in rows]
    x = np.arange(len(rows))
    ax.bar(x - 0.2, [r["ours_median"] for r in rows], 0.4, label="pyruntime device=cuda")
    ax.bar(x + 0.2, [r["theirs_median"] for r in rows], 0.4, label="transformers (fp16, eager)")
    ax.set_xticks(x, labels, rotation=30, ha="right")
    ax.set_ylabel("tokens/s (median)")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title(f"end-to-end on {device}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--quants", default="f16,q8_0,q4_0")
    ap.add_argument("--tests", default="pp128,pp512,tg128,tg64x4,tg64x8,tg64x16")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--small", action="store_true", help="a tiny model (smoke test)")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cuda-sim"])
    ap.add_argument("--torch-device", default="cuda")
    ap.add_argument("--no-plot", action="store_true", help="JSON only (no matplotlib)")
    a = ap.parse_args()
    import torch

    from converters.cli import main as convert

    tests = a.tests.split(",")
    quants = a.quants.split(",")
    a.out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        hf_dir = build_model(Path(tmp) / "hf", a.small, a.layers)
        vocab = json.loads((hf_dir / "config.json").read_text())["vocab_size"]
        peer = Theirs(hf_dir, a.torch_device)
        mine = {}
        for quant in quants:
            gguf = Path(tmp) / f"m-{quant}.gguf"
            if convert([str(hf_dir), "-o", str(gguf), "--quant", quant, "--force"]) != 0:
                raise SystemExit(f"conversion to {quant} failed")
            mine[quant] = Ours(gguf, a.device)
        ids = [int(i) for i in np.random.default_rng(1).integers(0, vocab, 512)]
        theirs_runs: dict[str, list[float]] = {t: [] for t in tests}
        ours_runs: dict[tuple[str, str], list[float]] = {(q, t): [] for q in quants for t in tests}
        for _ in range(a.reps):  # alternating: every rep runs each side once, so both see the same machine
            for t in tests:
                theirs_runs[t].append(peer.run(t, ids[:128] if t.startswith("tg") else ids))
                for q in quants:
                    ours_runs[q, t].append(mine[q].run(t, ids[:128] if t.startswith("tg") else ids))
        for q in quants:
            for t in tests:
                row = {
                    "quant": q,
                    "test": t,
                    "ours_min": min(ours_runs[q, t]),
                    "ours_median": float(np.median(ours_runs[q, t])),
                    "theirs_min": min(theirs_runs[t]),
                    "theirs_median": float(np.median(theirs_runs[t])),
                }
                row["ratio_median"] = row["ours_median"] / row["theirs_median"]
                rows.append(row)
                print(
                    f"{q:5} {t:6}: ours {row['ours_median']:9.1f} tok/s  transformers {row['theirs_median']:9.1f}"
                    f"  ratio {row['ratio_median']:5.2f}x",
                    flush=True,
                )
    if a.device == "cuda":
        from pyruntime import _cuda

        device = _cuda.device_name()
    else:
        device = "CUDA simulator on the CPU (smoke test: timings mean nothing)"
    r = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True)
    meta = {
        "device": device,
        "torch": torch.__version__,
        "torch_device": a.torch_device,
        "layers": a.layers,
        "small": a.small,
        "reps": a.reps,
        "python": platform.python_version(),
        "commit": r.stdout.strip() if r.returncode == 0 else "unknown",
        "note": "transformers runs fp16 weights for every row (no quantized kernels); alternating runs",
    }
    (a.out / "cuda_e2e.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    if not a.no_plot:
        plot(rows, a.out / "cuda_e2e.png", device)


if __name__ == "__main__":
    main()
