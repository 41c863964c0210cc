"""Style and typing gates run with the suite: ruff (lint + format) and mypy on the Python code,
clang-format (.clang-format) on the C++ and CUDA sources."""

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


def cpp_sources() -> list[str]:
    r = subprocess.run(
        ["git", "ls-files", "native", "kernels", "apps", "tests/native"], cwd=ROOT, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr  # the suite runs from a checkout
    exts = (".c", ".cc", ".cpp", ".h", ".hpp", ".cu", ".cuh", ".inc")
    # unicode_data.inc is generated (tools/gen_unicode_data.py): tables, not code to lay out by hand.
    return [f for f in r.stdout.split() if f.endswith(exts) and not f.endswith("unicode_data.inc")]


def test_clang_format() -> None:
    import shutil

    exe = shutil.which("clang-format")
    assert exe, "clang-format is a test dependency (pip install '.[test]')"
    files = cpp_sources()
    assert len(files) > 50, files
    r = subprocess.run([exe, "--dry-run", "-Werror", *files], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-4000:]


def test_native_layering_has_no_upward_includes() -> None:
    """native/src layers, top to bottom: bindings (python, capi) > sched > models > memory > backends >
    core. A file may include its own layer or lower ones only."""
    import re

    rank = {"python": 6, "capi": 6, "sched": 5, "models": 4, "memory": 3, "backends": 2, "core": 1}
    src = ROOT / "native" / "src"
    bad = []
    for f in sorted(src.rglob("*")):
        if f.suffix not in (".cpp", ".h") or f.relative_to(src).parts[0] not in rank:
            continue
        mine = rank[f.relative_to(src).parts[0]]
        for inc in re.findall(r'#include "([a-z]+)/', f.read_text(encoding="utf-8")):
            if rank.get(inc, 0) > mine:
                bad.append(f"{f.relative_to(ROOT)} includes {inc}/")
    assert not bad, bad


def test_runtime_never_imports_converters() -> None:
    """Converters may import the runtime; the runtime (pyruntime/) never imports converters."""
    import re

    bad = [
        str(f.relative_to(ROOT))
        for f in sorted((ROOT / "pyruntime").rglob("*.py"))
        if re.search(r"^\s*(from|import) converters\b", f.read_text(encoding="utf-8"), re.M)
    ]
    assert not bad, bad


def test_runtime_never_imports_torch_or_transformers() -> None:
    code = (
        "import sys, pyruntime, pyruntime.cli, pyruntime.chat, pyruntime.registry\n"
        "bad = [m for m in ('torch', 'transformers', 'gguf') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "", f"the runtime imported {r.stdout.strip()}"


def test_registry_finds_conversions_through_entry_points() -> None:
    """Registry pulls that need a conversion find it as a ``pyruntime.converters`` entry point (the
    installed package's metadata), naming the extra when none is installed."""
    import dataclasses

    import pytest

    from converters.ct2_whisper import convert_ct2_whisper
    from pyruntime.errors import DownloadError
    from pyruntime.registry import REGISTRY, _converter

    entry = next(e for e in REGISTRY.values() if e.convert == "ct2-whisper")
    assert _converter(entry) is convert_ct2_whisper
    with pytest.raises(DownloadError, match=r"no 'nope' converter is installed \(pip install 'pyruntime\[convert\]'\)"):
        _converter(dataclasses.replace(entry, convert="nope"))
