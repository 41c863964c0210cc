"""The GPU benchmarks run only when a session has a GPU, so they are smoke-tested here on the CUDA
simulator (timings mean nothing; the script's plumbing must work when the GPU shows up)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_cuda_e2e_bench_runs_on_the_simulator(tmp_path: Path) -> None:
    cmd = [sys.executable, str(ROOT / "bench" / "cuda_e2e.py"), "--out", str(tmp_path), "--small", "--layers", "1"]
    cmd += ["--device", "cuda-sim", "--torch-device", "cpu", "--reps", "2", "--quants", "q8_0"]
    cmd += ["--tests", "pp8,tg2,tg2x3"]  # tg2x3: three ragged sessions decoding together
    r = subprocess.run([*cmd, "--no-plot"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    result = json.loads((tmp_path / "cuda_e2e.json").read_text())
    assert "simulator" in result["meta"]["device"]
    rows = {(row["quant"], row["test"]): row for row in result["rows"]}
    assert set(rows) == {("q8_0", "pp8"), ("q8_0", "tg2"), ("q8_0", "tg2x3")}
    for row in rows.values():
        assert row["ours_min"] > 0 and row["theirs_min"] > 0 and row["ratio_median"] > 0
