"""``pyrt``: pull, run, chat, info, transcribe and bench from the command line."""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from pyruntime import registry
from pyruntime.errors import InvalidArgumentError, PyruntimeError


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-m",
        "--model",
        default=registry.DEFAULT_MODEL,
        help=f"GGUF path or registered name (default: {registry.DEFAULT_MODEL})",
    )
    p.add_argument("-t", "--threads", type=int, default=None, help="CPU threads (default: cores, max 8)")
    p.add_argument(
        "--device",
        default="cpu",
        choices=("cpu", "cuda", "cuda-sim"),
        help="cpu (default); cuda: an NVIDIA GPU with pyruntime's kernels (Llama, T5); "
        "cuda-sim: the same on the CUDA simulator (tests; very slow)",
    )
    p.add_argument(
        "--kv-cache",
        default="f16",
        help="KV cache: f32, f16, q8_0, q4_0, kivi4, kivi2[-gG][-rR][-sS][-clip|-noclip] (default f16)",
    )
    p.add_argument("--kv-cache-k", default=None, help="key cache format (default: --kv-cache)")
    p.add_argument("--kv-cache-v", default=None, help="value cache format (default: --kv-cache)")
    p.add_argument("-c", "--ctx", type=int, default=None, help="context size (default: the model's)")
    p.add_argument(
        "--activations",
        default="q8",
        choices=("q8", "f32"),
        help="q8: 8-bit activations for quantized weights (fast, default); f32: float (exact reference path)",
    )


def _add_sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-n", "--max-new-tokens", type=int, default=128)
    p.add_argument("--temp", type=float, default=0.0, help="temperature (0 = greedy)")
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--min-p", type=float, default=0.0)
    p.add_argument("--repeat-penalty", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--stop", action="append", default=None, help="stop string (repeatable)")


def _sampling(a: argparse.Namespace) -> dict[str, Any]:
    return dict(
        max_new_tokens=a.max_new_tokens,
        temperature=a.temp,
        top_k=a.top_k,
        top_p=a.top_p,
        min_p=a.min_p,
        repeat_penalty=a.repeat_penalty,
        seed=a.seed,
        stop=a.stop,
    )


def _load(a: argparse.Namespace) -> Any:
    import pyruntime

    return pyruntime.load(
        a.model,
        device=a.device,
        threads=a.threads,
        kv_cache=a.kv_cache,
        context=a.ctx,
        kv_cache_k=a.kv_cache_k,
        kv_cache_v=a.kv_cache_v,
        activations=a.activations,
    )


def _stats_line(s: dict[str, Any]) -> str:
    return (
        f"[prompt {s['prompt_tokens']} tok, {s['prefill_tok_s']:.1f} tok/s | generated {s['generated_tokens']} tok, "
        f"{s['decode_tok_s']:.1f} tok/s | ttft {s['ttft_s'] * 1000:.0f} ms | {s['finish_reason']}]"
    )


def _stream_out(stream: Any) -> Any:
    for chunk in stream:
        sys.stdout.write(chunk.text)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return stream.completion


def cmd_pull(a: argparse.Namespace) -> int:
    path = registry.pull(a.name, force=a.force)
    print(path)
    return 0


def cmd_run(a: argparse.Namespace) -> int:
    if a.batch is not None:
        return _run_batch(a)
    prompt = a.prompt
    if prompt is None:
        prompt = sys.stdin.read()
    model = _load(a)
    comp = _stream_out(model.generate(prompt, stream=True, **_sampling(a)))
    sys.stderr.write(_stats_line(comp.stats) + "\n")
    return 0


def _run_batch(a: argparse.Namespace) -> int:
    """Every non-empty line of the --batch file is a prompt; all are generated together and each
    completion is printed as one JSON line, in the file's order."""
    if a.prompt is not None:
        raise InvalidArgumentError("give either --prompt or --batch, not both")
    try:
        text = sys.stdin.read() if a.batch == "-" else Path(a.batch).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidArgumentError(f"--batch {a.batch}: cannot read prompts ({e})") from None
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines:
        raise InvalidArgumentError(f"--batch {a.batch}: no prompts (one per line)")
    model = _load(a)
    t0 = time.perf_counter()
    completions = model.generate_batch([line for _, line in lines], **_sampling(a))
    elapsed = time.perf_counter() - t0
    for (n, _), c in zip(lines, completions):
        row = {"line": n, "text": c.text, "tokens": len(c.token_ids), "finish_reason": c.stats["finish_reason"]}
        sys.stdout.write(json.dumps(row) + "\n")
    generated = sum(len(c.token_ids) for c in completions)
    batched = sum(c.stats["batched_steps"] for c in completions)
    sys.stderr.write(
        f"[{len(lines)} prompts | generated {generated} tok in {elapsed:.2f} s, {generated / elapsed:.1f} tok/s | "
        f"{batched} batched steps]\n"
    )
    return 0


def cmd_chat(a: argparse.Namespace) -> int:
    model = _load(a)
    messages: list[dict[str, str]] = []
    if a.system:
        messages.append({"role": "system", "content": a.system})
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            sys.stdout.write("> ")
            sys.stdout.flush()
        line = sys.stdin.readline()
        if not line:
            break
        line = line.rstrip("\n")
        if not line.strip():
            continue
        if line.strip() in ("/exit", "/quit"):
            break
        messages.append({"role": "user", "content": line})
        comp = _stream_out(model.chat(messages, stream=True, **_sampling(a)))
        messages.append({"role": "assistant", "content": comp.text})
        if a.verbose:
            sys.stderr.write(_stats_line(comp.stats) + "\n")
    return 0


def cmd_info(a: argparse.Namespace) -> int:
    model = _load(a)
    info = model.info
    if a.json:
        print(json.dumps(info))
    else:
        for k, v in info.items():
            print(f"{k:16} {v}")
    return 0


def cmd_transcribe(a: argparse.Namespace) -> int:
    import pyruntime

    model = pyruntime.load(a.model, threads=a.threads)
    results = []
    for path in a.files:
        if not os.path.isfile(path):
            sys.stderr.write(f"pyrt: error: {path}: no such file\n")
            return 1
        t = model.transcribe(path, max_new_tokens=a.max_new_tokens)
        results.append({"file": path, "text": t.text, "stats": t.stats})
        if not a.json:
            print(t.text if len(a.files) == 1 else f"{path}: {t.text}", flush=True)
    if a.json:
        print(json.dumps(results if len(results) > 1 else results[0]))
    return 0


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    from pyruntime import _core

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "system": platform.system(),
        "python": platform.python_version(),
        "kernels": _core.kernels_name(),
    }


def cmd_bench(a: argparse.Namespace) -> int:
    model = _load(a)
    rng = random.Random(0)
    vocab = model.vocab_size
    results = []
    tests: list[tuple[str, int, int]] = []
    if a.n_prompt > 0:
        tests.append((f"pp{a.n_prompt}", a.n_prompt, 0))
    if a.n_gen > 0:
        tests.append((f"tg{a.n_gen}", 1, a.n_gen))
    for name, n_prompt, n_gen in tests:
        times = []
        for rep in range(a.repetitions + 1):  # the first run warms caches and is dropped
            ids = [rng.randrange(vocab) for _ in range(n_prompt + n_gen)]
            sess = model.session(n_prompt + n_gen + 1)
            t0 = time.perf_counter()
            if n_gen == 0:
                sess._feed_rows(ids, all_logits=False)
            else:
                sess._feed_rows(ids[:1], all_logits=False)
                t0 = time.perf_counter()
                for tid in ids[1 : 1 + n_gen]:
                    sess._feed_rows([tid], all_logits=False)
            dt = time.perf_counter() - t0
            if rep > 0:
                times.append(dt)
        n_tok = n_prompt if n_gen == 0 else n_gen
        rates = [n_tok / t for t in times]
        row = {
            "test": name,
            "tok_s": statistics.median(rates),
            "tok_s_min": min(rates),
            "tok_s_max": max(rates),
            "runs": len(rates),
            "model": model.info["path"],
            "threads": model.info["threads"],
            "tensor_types": model.info["tensor_types"],
            "device": model.device,
            **machine_info(),
        }
        results.append(row)
        if a.json:
            print(json.dumps(row), flush=True)
        else:
            print(
                f"{name:8} {row['tok_s']:9.2f} tok/s "
                f"(median of {len(rates)}; min {min(rates):.2f}, max {max(rates):.2f})",
                flush=True,
            )
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pyrt", description="pyruntime: run small language models on this machine")
    sub = p.add_subparsers(dest="cmd", required=True)

    sp = sub.add_parser("pull", help="fetch a registered model into the cache")
    sp.add_argument("name", nargs="?", default=registry.DEFAULT_MODEL, choices=sorted(registry.REGISTRY))
    sp.add_argument("--force", action="store_true", help="fetch again even if cached")
    sp.set_defaults(func=cmd_pull)

    sp = sub.add_parser("run", help="continue a prompt, streaming the text")
    _add_model_args(sp)
    sp.add_argument("-p", "--prompt", default=None, help="prompt text (default: read stdin)")
    sp.add_argument(
        "--batch",
        default=None,
        metavar="FILE",
        help="one prompt per line of FILE ('-': stdin), generated together (batched steps on --device cuda); "
        "one JSON line per prompt",
    )
    _add_sampling_args(sp)
    sp.set_defaults(func=cmd_run)

    sp = sub.add_parser("chat", help="chat using the model's template (one user turn per line)")
    _add_model_args(sp)
    sp.add_argument("--system", default=None, help="system message")
    sp.add_argument("-v", "--verbose", action="store_true", help="print a stats line after each reply")
    _add_sampling_args(sp)
    sp.set_defaults(func=cmd_chat)

    sp = sub.add_parser("info", help="describe a model")
    _add_model_args(sp)
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_info)

    sp = sub.add_parser("transcribe", help="speech to text with a Whisper model (WAV files, any sample rate)")
    sp.add_argument("files", nargs="+", help="WAV files (PCM 8/16/24/32-bit or float, mono or multi-channel)")
    sp.add_argument(
        "-m", "--model", default="whisper-tiny.en", help="GGUF path or registered name (default: whisper-tiny.en)"
    )
    sp.add_argument("-t", "--threads", type=int, default=None, help="CPU threads (default: cores, max 8)")
    sp.add_argument("-n", "--max-new-tokens", type=int, default=224, help="text tokens per 30 s window")
    sp.add_argument("--json", action="store_true", help="text and timings as JSON")
    sp.set_defaults(func=cmd_transcribe)

    sp = sub.add_parser("bench", help="prefill (ppN) and decode (tgN) speed, llama-bench style")
    _add_model_args(sp)
    sp.add_argument("-p", "--n-prompt", type=int, default=512)
    sp.add_argument("-n", "--n-gen", type=int, default=128)
    sp.add_argument("-r", "--repetitions", type=int, default=5)
    sp.add_argument("--json", action="store_true", help="one JSON object per line")
    sp.set_defaults(func=cmd_bench)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except PyruntimeError as e:
        sys.stderr.write(f"pyrt: error: {e}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("\n")
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
