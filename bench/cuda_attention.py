"""GPU attention benchmark: pyruntime's kernels vs PyTorch scaled_dot_product_attention, same run.

python bench/cuda_attention.py --out bench/results/cuda   (needs a CUDA GPU and torch)
Writes JSON (every measurement: median ms over 20 timed runs after warm-up, CUDA events) and a PNG.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np


def torch_ms(fn: Callable[[], Any], iters: int = 20) -> float:
    import torch

    for _ in range(3):
        fn()
    times = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return float(np.median(times))


def prefill(cu: Any, lengths: list[int], heads: int, kv_heads: int, d: int) -> list[dict[str, Any]]:
    import torch
    import torch.nn.functional as F

    rows = []
    for n in lengths:
        rng = np.random.default_rng(n)
        q = rng.standard_normal((1, heads, n, d)).astype(np.float16)
        k = rng.standard_normal((1, kv_heads, n, d)).astype(np.float16)
        v = rng.standard_normal((1, kv_heads, n, d)).astype(np.float16)
        _, _, ours = cu.flash_attn(q.view(np.uint16), k.view(np.uint16), v.view(np.uint16), True, d**-0.5, iters=20)
        tq, tk, tv = (torch.from_numpy(a).cuda() for a in (q, k, v))
        theirs = torch_ms(
            functools.partial(F.scaled_dot_product_attention, tq, tk, tv, is_causal=True, enable_gqa=True)
        )
        flops = 4 * heads * n * n * d / 2  # causal: half of QK^T and PV
        rows.append(
            {
                "test": "prefill_causal",
                "seq": n,
                "heads": heads,
                "kv_heads": kv_heads,
                "d": d,
                "ours_ms": ours,
                "torch_sdpa_ms": theirs,
                "speedup": theirs / ours,
                "ours_tflops": flops / ours / 1e9,
            }
        )
        print(f"prefill L={n:6d}: ours {ours:8.3f} ms  sdpa {theirs:8.3f} ms  ratio {theirs / ours:5.2f}x", flush=True)
    return rows


def encode_kv(x: np.ndarray, fmt: str) -> np.ndarray:
    """[B, H, S, D] float -> [B, H, S, row_bytes] in the cache format the kernel reads."""
    if fmt == "f16":
        return np.ascontiguousarray(x.astype(np.float16).view(np.uint8))
    from pyruntime import _core

    blob = np.frombuffer(_core.quantize(fmt.upper(), x.astype(np.float32).reshape(-1)), np.uint8)
    return blob.reshape(*x.shape[:-1], -1)


def decode(cu: Any, batch_lengths: list[list[int]], heads: int, kv_heads: int, d: int) -> list[dict[str, Any]]:
    import torch
    import torch.nn.functional as F

    rows = []
    for lens in batch_lengths:
        B, S = len(lens), max(lens)
        rng = np.random.default_rng(S + B)
        q = rng.standard_normal((B, heads, d)).astype(np.float16)
        k = rng.standard_normal((B, kv_heads, S, d)).astype(np.float16)
        v = rng.standard_normal((B, kv_heads, S, d)).astype(np.float16)
        tq = torch.from_numpy(q).cuda()[:, :, None, :]
        tk, tv = torch.from_numpy(k).cuda(), torch.from_numpy(v).cuda()
        mask = (
            torch.arange(S, device="cuda")[None, None, None, :] < torch.tensor(lens, device="cuda")[:, None, None, None]
        )
        theirs = torch_ms(
            functools.partial(F.scaled_dot_product_attention, tq, tk, tv, attn_mask=mask, enable_gqa=True)
        )
        kv_bytes_f16 = 2 * sum(lens) * kv_heads * d * 2
        for fmt in ("f16", "q8_0", "q4_0"):
            kr, vr = encode_kv(k, fmt), encode_kv(v, fmt)
            _, _, n_splits, ours = cu.decode_attn(
                q.view(np.uint16), np.ascontiguousarray(kr), np.ascontiguousarray(vr), fmt, lens, 0, d**-0.5, iters=20
            )
            _, _, _, one = cu.decode_attn(
                q.view(np.uint16), np.ascontiguousarray(kr), np.ascontiguousarray(vr), fmt, lens, 1, d**-0.5, iters=20
            )
            _, _, n_ctas, lean = cu.decode_attn_lean(
                q.view(np.uint16), np.ascontiguousarray(kr), np.ascontiguousarray(vr), fmt, lens, 0, d**-0.5, iters=20
            )
            row = {
                "test": "decode_ragged",
                "kv": fmt,
                "lengths": lens,
                "batch": B,
                "heads": heads,
                "kv_heads": kv_heads,
                "d": d,
                "n_splits": n_splits,
                "ours_ms": ours,
                "ours_1split_ms": one,
                "lean_ms": lean,
                "lean_ctas": n_ctas,
                "lean_speedup_vs_split": ours / lean,
                "torch_sdpa_padded_ms": theirs,
                "speedup": theirs / ours,
                "f16_equiv_GBps": kv_bytes_f16 / ours / 1e6,
            }
            rows.append(row)
            print(
                f"decode B={B} max={S:6d} {fmt:5}: ours {ours:7.3f} ms ({n_splits} splits; 1 split {one:7.3f}; "
                f"lean {lean:7.3f} on {n_ctas} CTAs)  "
                f"sdpa(padded) {theirs:7.3f} ms  ratio {theirs / ours:5.2f}x",
                flush=True,
            )
    return rows


def padding_free(cu: Any, batch: int, max_len: int, heads: int, d: int) -> list[dict[str, Any]]:
    """Mixed lengths: dense attention over the padded batch vs the padding-free pipeline (index, pack,
    varlen attention, unpack), and torch SDPA over the padded batch with a mask."""
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(batch + max_len)
    lengths = sorted(rng.integers(16, max_len + 1, batch).tolist())
    lengths[-1] = max_len
    q = rng.standard_normal((batch, max_len, heads, d)).astype(np.float16)
    k = rng.standard_normal((batch, max_len, heads, d)).astype(np.float16)
    v = rng.standard_normal((batch, max_len, heads, d)).astype(np.float16)
    mask = (np.arange(max_len)[None, :] < np.array(lengths)[:, None]).astype(np.int32)
    _, _, _, ours_free = cu.padding_free_attn(
        q.view(np.uint16), k.view(np.uint16), v.view(np.uint16), mask, False, d**-0.5, iters=20
    )
    qh, kh, vh = (np.ascontiguousarray(a.transpose(0, 2, 1, 3)) for a in (q, k, v))
    _, _, ours_padded = cu.flash_attn(
        qh.view(np.uint16), kh.view(np.uint16), vh.view(np.uint16), False, d**-0.5, iters=20
    )
    tq, tk, tv = (torch.from_numpy(a).cuda() for a in (qh, kh, vh))
    key_mask = torch.from_numpy(mask.astype(bool)).cuda()[:, None, None, :]
    theirs = torch_ms(functools.partial(F.scaled_dot_product_attention, tq, tk, tv, attn_mask=key_mask))
    useful = sum(n * n for n in lengths) / (batch * max_len * max_len)
    print(
        f"padding-free B={batch} max={max_len}: ours {ours_free:.3f} ms, ours padded {ours_padded:.3f} ms, "
        f"sdpa padded {theirs:.3f} ms (useful work {useful:.0%})",
        flush=True,
    )
    return [
        {
            "test": "padding_free",
            "batch": batch,
            "max_len": max_len,
            "lengths": lengths,
            "heads": heads,
            "d": d,
            "ours_padding_free_ms": ours_free,
            "ours_padded_ms": ours_padded,
            "torch_sdpa_padded_ms": theirs,
            "useful_fraction": useful,
            "speedup_vs_ours_padded": ours_padded / ours_free,
        }
    ]


def gemm(cu: Any, shapes: list[tuple[int, int, int]]) -> list[dict[str, Any]]:
    """Prefill GEMM y = x w^T (fp16 in, fp32 out): our WMMA kernel vs torch.matmul (cuBLAS, fp16 out)."""
    import torch

    rows = []
    rng = np.random.default_rng(1)
    for T, N, K in shapes:
        x = rng.standard_normal((T, K)).astype(np.float16)
        w = rng.standard_normal((N, K)).astype(np.float16)
        _, ours = cu.gemm_f16(x.view(np.uint16), w.view(np.uint16), iters=20)
        tx, tw = torch.from_numpy(x).cuda(), torch.from_numpy(w).cuda()
        theirs = torch_ms(functools.partial(torch.matmul, tx, tw.T))
        flops = 2.0 * T * N * K
        rows.append(
            {
                "test": "gemm",
                "T": T,
                "N": N,
                "K": K,
                "ours_ms": ours,
                "torch_matmul_ms": theirs,
                "ours_tflops": flops / ours / 1e9,
                "torch_tflops": flops / theirs / 1e9,
            }
        )
        print(f"gemm T={T} N={N} K={K}: ours {ours:.3f} ms, torch {theirs:.3f} ms", flush=True)
    return rows


def plot(rows: list[dict[str, Any]], path: Path, device: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    pre = [r for r in rows if r["test"] == "prefill_causal"]
    ax = axes[0]
    ax.plot([r["seq"] for r in pre], [r["ours_ms"] for r in pre], "o-", label="pyruntime flash_attn (WMMA)")
    ax.plot([r["seq"] for r in pre], [r["torch_sdpa_ms"] for r in pre], "s-", label="torch SDPA")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length (causal prefill, B=1)")
    ax.set_ylabel("ms (median)")
    ax.legend()
    ax.set_title("prefill attention")
    dec = [r for r in rows if r["test"] == "decode_ragged"]
    ax = axes[1]
    labels = sorted({max(r["lengths"]) for r in dec})
    x = np.arange(len(labels))
    for i, fmt in enumerate(("f16", "q8_0", "q4_0")):
        ys = [next(r["ours_ms"] for r in dec if r["kv"] == fmt and max(r["lengths"]) == L) for L in labels]
        ax.bar(x + i * 0.16, ys, 0.16, label=f"pyruntime split-K {fmt}")
    ys = [next(r["lean_ms"] for r in dec if r["kv"] == "f16" and max(r["lengths"]) == L) for L in labels]
    ax.bar(x + 0.48, ys, 0.16, label="pyruntime Lean (stream-K) f16")
    ys = [next(r["torch_sdpa_padded_ms"] for r in dec if max(r["lengths"]) == L) for L in labels]
    ax.bar(x + 0.64, ys, 0.16, label="torch SDPA (padded + mask, f16)")
    ax.set_xticks(x + 0.32, [f"max {L}" for L in labels])
    ax.set_ylabel("ms (median)")
    ax.set_title("decode attention, ragged batch of 8")
    ax.legend(fontsize=8)
    fig.suptitle(f"pyruntime CUDA kernels vs PyTorch on {device}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    import torch

    from pyruntime import _cuda as cu

    a.out.mkdir(parents=True, exist_ok=True)
    device = cu.device_name()
    rows = prefill(cu, [128, 512, 1024, 2048, 4096, 8192, 16384], 16, 4, 128)
    rng = np.random.default_rng(0)
    batches = [sorted(rng.integers(L // 8, L, 8).tolist()) for L in (1024, 4096, 16384)]
    rows += decode(cu, batches, 32, 8, 128)
    for batch, max_len in ((16, 512), (32, 1024), (8, 4096)):
        rows += padding_free(cu, batch, max_len, 16, 64)
    rows += gemm(cu, [(T, N, K) for T in (128, 512, 2048) for N, K in ((2048, 2048), (5632, 2048), (4096, 14336))])
    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True)
        commit = r.stdout.strip() if r.returncode == 0 else "unknown (no git checkout)"
    except OSError:
        commit = "unknown (no git)"
    meta = {
        "device": device,
        "sms": cu.sm_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "commit": commit,
    }
    (a.out / "cuda_attention.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    plot(rows, a.out / "cuda_attention.png", device)


if __name__ == "__main__":
    main()
