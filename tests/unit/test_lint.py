"""Style and typing gates run with the suite: ruff (lint + format) and mypy on the Python code."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT

PATHS = ["pyruntime", "converters", "tests", "tools", "bench"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_lint() -> None:
    r = run("ruff", "check", *PATHS)
    assert r.returncode == 0, r.stdout + r.stderr


def test_ruff_format() -> None:
    r = run("ruff", "format", "--check", *PATHS)
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy() -> None:
    r = run("mypy", "--cache-dir", str(ROOT / "build" / "mypy-cache"))
    assert r.returncode == 0, r.stdout + r.stderr


def test_runtime_never_imports_torch_or_transformers() -> None:
    code = (
        "import sys, pyruntime, pyruntime.cli, pyruntime.chat, pyruntime.registry\n"
        "bad = [m for m in ('torch', 'transformers', 'gguf') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "", f"the runtime imported {r.stdout.strip()}"
