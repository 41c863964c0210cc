"""The pyrt and pyrt-convert command lines: output, stats, JSON, exit codes, files never clobbered."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest


def pyrt(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pyruntime", *args],
        capture_output=True,
        text=True,
        input=input,
        timeout=300,
        env={**os.environ},
    )


def convert_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "converters", *args], capture_output=True, text=True, timeout=300)


def test_run_streams_and_ends_with_stats(smollm2_path: Path) -> None:
    r = pyrt("run", "-p", "Once upon a time", "-n", "12", "-t", "2")
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.strip()) > 10
    assert "generated 12 tok" in r.stderr and "tok/s" in r.stderr


def test_run_batch_prints_a_json_line_per_prompt(smollm2_path: Path, tmp_path: Path) -> None:
    """pyrt run --batch: every non-empty line a prompt, generated together; each line's completion is
    what `pyrt run -p LINE` prints (greedy, CPU: the same steps)."""
    prompts = ["Once upon a time", "", "The capital of France is", "1, 2, 3,"]
    f = tmp_path / "prompts.txt"
    f.write_text("\n".join(prompts) + "\n")
    r = pyrt("run", "--batch", str(f), "-n", "6", "-t", "2")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["line"] for row in rows] == [1, 3, 4]
    assert "3 prompts" in r.stderr and "tok/s" in r.stderr
    for row in rows:
        alone = pyrt("run", "-p", prompts[row["line"] - 1], "-n", "6", "-t", "2")
        assert alone.returncode == 0, alone.stderr
        assert alone.stdout.rstrip("\n") == row["text"] and row["tokens"] <= 6
    assert pyrt("run", "--batch", "-", "-n", "2", input="hello\n").returncode == 0


@pytest.mark.parametrize(
    "args,message",
    [
        (["run", "--batch", "/nonexistent/prompts.txt"], "--batch /nonexistent/prompts.txt: cannot read prompts"),
        (["run", "--batch", "-", "-p", "hi"], "either --prompt or --batch"),
    ],
)
def test_run_batch_bad_input(args: list[str], message: str) -> None:
    r = pyrt(*args, input="\n\n")
    assert r.returncode == 1 and message in r.stderr and "Traceback" not in r.stderr
    empty = pyrt("run", "--batch", "-", input="\n  \n")
    assert empty.returncode == 1 and "no prompts" in empty.stderr


def test_info_json(smollm2_path: Path) -> None:
    r = pyrt("info", "-m", str(smollm2_path), "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["architecture"] == "llama" and info["vocab_size"] == 49152


def test_bench_json(smollm2_path: Path) -> None:
    r = pyrt("bench", "-m", str(smollm2_path), "-p", "32", "-n", "4", "-r", "1", "-t", "2", "--json")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["test"] for row in rows] == ["pp32", "tg4"]
    assert all(row["tok_s"] > 0 and "cpu" in row and row["device"] == "cpu" for row in rows)


def test_chat_reads_turns_from_stdin(smollm2_path: Path) -> None:
    # The exact path: this prompt's first token is a near tie ("The" 25.32 vs "L" 25.24), which 8-bit
    # activations flip to a French ramble -- llama.cpp's own greedy answer with the same file.
    r = pyrt("chat", "-n", "24", "--activations", "f32", input="What is the capital of France?\n")
    assert r.returncode == 0, r.stderr
    assert "Paris" in r.stdout


@pytest.mark.parametrize(
    "args,message",
    [
        (["run", "-m", "no-such-model", "-p", "hi"], "unknown model 'no-such-model'"),
        (["run", "-p", ""], "prompt is empty"),
        (["run", "-m", "/nonexistent/model.gguf", "-p", "hi"], "no such file"),
        (["run", "-c", "8", "-p", "one two three four five six seven eight nine ten"], "context holds 8"),
    ],
)
def test_errors_exit_nonzero_with_message(args: list[str], message: str, smollm2_path: Path) -> None:
    r = pyrt(*args)
    assert r.returncode == 1
    assert message in r.stderr and "Traceback" not in r.stderr


def test_device_cuda_runs_or_says_why(smollm2_path: Path) -> None:
    """--device cuda: generates on a GPU; without one, exit 1 naming what is missing (no fallback)."""
    import importlib.util

    has_gpu = importlib.util.find_spec("pyruntime._cuda") is not None
    if has_gpu:
        from pyruntime import _cuda  # type: ignore[attr-defined]

        has_gpu = _cuda.device_count() > 0
    bad = pyrt("run", "--device", "tpu", "-p", "hi")
    assert bad.returncode == 2 and "invalid choice: 'tpu'" in bad.stderr  # argparse's usage error
    r = pyrt("run", "--device", "cuda", "-p", "Once upon a time", "-n", "4")
    if has_gpu:
        assert r.returncode == 0 and "generated 4 tok" in r.stderr, r.stderr
    else:
        assert r.returncode == 1 and "device 'cuda': " in r.stderr and "Traceback" not in r.stderr


def test_not_gguf_file(tmp_path: Path) -> None:
    p = tmp_path / "x.gguf"
    p.write_bytes(b"\x00" * 100)
    r = pyrt("info", "-m", str(p))
    assert r.returncode == 1 and "not a GGUF" in r.stderr


def test_convert_cli_and_no_clobber(make_hf_llama: Callable[..., Path], tmp_path: Path) -> None:
    hf = make_hf_llama("cli")
    out = tmp_path / "m.gguf"
    r = convert_cli(str(hf), "-o", str(out), "--quant", "q8_0")
    assert r.returncode == 0, r.stderr
    before = out.read_bytes()
    r = convert_cli(str(hf), "-o", str(out), "--quant", "f16")
    assert r.returncode == 1 and "exists" in r.stderr
    assert out.read_bytes() == before
    r = convert_cli(str(out), "-o", str(out), "--quant", "q4_0", "--force")
    assert r.returncode == 1 and "refusing to overwrite the input" in r.stderr
    assert out.read_bytes() == before
    requant = tmp_path / "m-q4.gguf"
    assert convert_cli(str(out), "-o", str(requant), "--quant", "q4_0").returncode == 0
    r = pyrt("run", "-m", str(requant), "-p", "the", "-n", "4")
    assert r.returncode == 0, r.stderr
    assert not list(tmp_path.glob("*.part"))  # no temp files left behind


def test_convert_cli_bad_input(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    r = convert_cli(str(tmp_path / "empty"), "-o", str(tmp_path / "o.gguf"))
    assert r.returncode == 1 and "config.json" in r.stderr
    r = convert_cli(str(tmp_path / "missing"), "-o", str(tmp_path / "o.gguf"))
    assert r.returncode == 1 and "no such file" in r.stderr
    assert not (tmp_path / "o.gguf").exists()


def test_failed_loads_do_not_hang() -> None:
    """Regression: a pool torn down right after start-up used to miss its shutdown signal."""
    code = (
        "import pyruntime\n"
        "for i in range(300):\n"
        "    try: pyruntime.load('/dev/null/x.gguf', threads=4)\n"
        "    except pyruntime.PyruntimeError: pass\n"
        "from pyruntime import _core\n"
        "import pathlib, tempfile\n"
        "p = pathlib.Path(tempfile.mkdtemp()) / 'a.gguf'\n"
        "import gguf\n"
        "w = gguf.GGUFWriter(str(p), 'llama'); w.write_header_to_file(); w.write_kv_data_to_file(); w.close()\n"
        "for i in range(300):\n"
        "    try: _core.Model.load(str(p), 4, 'f16', 'f16', 0)\n"
        "    except pyruntime.PyruntimeError: pass\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == "ok", r.stderr


def native_bench() -> Path:
    from pyruntime import _core

    path = Path(_core.__file__).parent / "pyrt-bench"
    assert path.is_file(), f"{path} is not installed beside the Python module"
    return path


def test_native_bench_json(smollm2_path: Path) -> None:
    """pyrt-bench runs the model through the C ABI alone and reports like `pyrt bench --json`."""
    r = subprocess.run(
        [str(native_bench()), "-m", str(smollm2_path), "-t", "2", "-p", "16", "-n", "4", "-r", "2", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.strip().splitlines()]
    assert [row["test"] for row in rows] == ["pp16", "tg4"]
    for row in rows:
        assert row["runs"] == 2 and row["model"] == str(smollm2_path)
        assert 0 < row["tok_s_min"] <= row["tok_s"] <= row["tok_s_max"]


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["-m", "/nonexistent/model.gguf"], 1, "cannot load the model: /nonexistent/model.gguf"),
        (["-m", "x.gguf", "-t", "0"], 2, "-t expects an integer in 1..256, got '0'"),
        (["-m", "x.gguf", "-p", "12x"], 2, "-p expects an integer"),
        (["-m", "x.gguf", "--frobnicate"], 2, "unknown option '--frobnicate'"),
        (["-m"], 2, "option '-m' needs a value"),
        ([], 2, "-m model.gguf is required"),
    ],
)
def test_native_bench_bad_arguments(args: list[str], code: int, message: str) -> None:
    r = subprocess.run([str(native_bench()), *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == code and message in r.stderr, (r.returncode, r.stderr)


def test_native_bench_bad_kv_cache(smollm2_path: Path) -> None:
    r = subprocess.run(
        [str(native_bench()), "-m", str(smollm2_path), "--kv-cache", "q3_k"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 1 and "kv cache type 'q3_k': unknown type" in r.stderr, r.stderr
