"""A short fuzz run of the GGUF reader + tokenizer loader in the suite (longer runs by hand)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pyruntime import _core
from pyruntime.errors import PyruntimeError
from tests.conftest import ROOT, TOKENIZER_DIR

HERE = Path(__file__).parent
# The harness runs in a fresh interpreter: make the checkout importable as it is for pytest.
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def test_atheris_short_run(tmp_path: Path) -> None:
    pytest.importorskip("atheris", reason="atheris is part of the [test] extra")
    corpus = tmp_path / "corpus"
    shutil.copytree(HERE / "corpus", corpus)
    r = subprocess.run(
        [
            sys.executable,
            str(HERE / "fuzz_gguf.py"),
            str(corpus),
            "-runs=30000",
            "-max_len=8192",
            "-timeout=10",
            "-rss_limit_mb=2048",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=ENV,
    )
    tail = (r.stdout + r.stderr)[-3000:]
    assert r.returncode == 0, f"fuzzer found a crash or hang:\n{tail}"
    assert "Done 30000 runs" in tail


def test_mutated_real_files_never_crash() -> None:
    """Deterministic mutations (byte flips, splices, truncations) of real vocab files, in a subprocess
    so a crash fails the test rather than the session."""
    code = f"""
import numpy as np
from pyruntime import _core
from pyruntime.errors import PyruntimeError
rng = np.random.default_rng(123)
seeds = [open(p, 'rb').read()[:200_000] for p in {[str(p) for p in sorted(TOKENIZER_DIR.glob("*.gguf"))[:4]]!r}]
n_ok = n_err = 0
for i in range(1500):
    b = bytearray(seeds[i % len(seeds)])
    for _ in range(rng.integers(1, 8)):
        pos = int(rng.integers(0, min(len(b), 4096)))
        b[pos] = int(rng.integers(0, 256))
    if i % 3 == 0:
        b = b[: int(rng.integers(0, len(b)))]
    try:
        _core.GGUFFile.parse_bytes(bytes(b), True); n_ok += 1
    except PyruntimeError:
        n_err += 1
print(n_ok, n_err)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=ENV)
    assert r.returncode == 0, r.stderr[-2000:]
    ok, err = map(int, r.stdout.split())
    assert ok + err == 1500 and err > 0


def test_corpus_files_parse() -> None:
    for p in sorted((HERE / "corpus").iterdir()):
        n_kv, _ = _core.GGUFFile.parse_bytes(p.read_bytes(), False)
        assert n_kv >= 1
        with pytest.raises(PyruntimeError):
            _core.GGUFFile.parse_bytes(p.read_bytes()[: len(p.read_bytes()) // 2 + 1], True)
    assert np.sum([p.stat().st_size for p in (HERE / "corpus").iterdir()]) < 64 * 1024
    _core.GGUFFile.parse_bytes((HERE / "corpus" / "spm_vocab.gguf").read_bytes(), True)
    # This BPE vocabulary lacks most bytes and has no <unk>: a clear error, never a wrong id.
    with pytest.raises(PyruntimeError, match="cannot encode 'H'"):
        _core.GGUFFile.parse_bytes((HERE / "corpus" / "bpe_vocab.gguf").read_bytes(), True)
