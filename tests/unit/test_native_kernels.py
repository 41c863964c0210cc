"""Every CPU kernel table against float64 references in native code (tests/native/kernel_check.cpp):
built for this machine (generic + AVX2 here) and cross-compiled for AArch64 (generic, NEON,
NEON + dotprod) with Debian's g++-aarch64-linux-gnu, run under qemu-aarch64-static. Emulated timings
mean nothing; the results must be right. .ci/run installs both tools."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT


def _build(build: Path, *extra: str, targets: tuple[str, ...] = ("kernel_check",)) -> Path:
    jobs = str(os.cpu_count() or 2)
    cfg = [
        "cmake",
        "-S",
        str(ROOT),
        "-B",
        str(build),
        "-DPYRT_PYTHON=OFF",
        "-DPYRT_CUDA=OFF",
        "-DPYRT_KERNEL_CHECK=ON",
        "-DPYRT_WERROR=ON",
        "-DCMAKE_BUILD_TYPE=Release",
        *extra,
    ]
    if shutil.which("ninja"):
        cfg += ["-G", "Ninja"]
    r = subprocess.run(cfg, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    r = subprocess.run(
        ["cmake", "--build", str(build), "--target", *targets, "-j", jobs], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout[-5000:] + r.stderr[-3000:]
    return build


@pytest.fixture(scope="module")
def native_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build(tmp_path_factory.mktemp("kc-native"), targets=("kernel_check", "cusim_check"))


def test_native_kernel_tables(native_build: Path) -> None:
    r = subprocess.run([str(native_build / "kernel_check")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK generic\n" in r.stdout
    from pyruntime import _core

    if _core.set_kernels("avx2"):  # this CPU has AVX2/FMA: the native check must have covered that table too
        assert "OK avx2\n" in r.stdout, r.stdout
    _core.set_kernels("auto")


def test_cuda_simulator_self_check(native_build: Path) -> None:
    """The CUDA simulator (kernels/sim), which runs the GPU kernel tests on every machine, keeps the
    semantics those kernels rely on (shuffles, votes, barriers) and catches what it must not hide
    (a missing barrier, divergent barriers, launch limits): tests/native/cusim_check.cpp."""
    r = subprocess.run([str(native_build / "cusim_check")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK cusim\n" in r.stdout
    assert "ok a missing __syncthreads shows as wrong results" in r.stdout


def test_aarch64_neon_kernels_under_qemu(tmp_path_factory: pytest.TempPathFactory) -> None:
    cxx, cc, qemu = (
        shutil.which("aarch64-linux-gnu-g++"),
        shutil.which("aarch64-linux-gnu-gcc"),
        shutil.which("qemu-aarch64-static"),
    )
    assert cxx and cc and qemu, "needs g++-aarch64-linux-gnu and qemu-user-static (apt-get install; .ci/run does)"
    exe = (
        _build(
            tmp_path_factory.mktemp("kc-aarch64"),
            "-DCMAKE_SYSTEM_NAME=Linux",
            "-DCMAKE_SYSTEM_PROCESSOR=aarch64",
            f"-DCMAKE_CXX_COMPILER={cxx}",
            f"-DCMAKE_C_COMPILER={cc}",
            "-DCMAKE_EXE_LINKER_FLAGS=-static",
        )
        / "kernel_check"
    )
    r = subprocess.run([qemu, str(exe)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    for table in ("generic", "neon", "neon-dotprod"):  # qemu's default CPU ("max") has dotprod
        assert f"OK {table}\n" in r.stdout, r.stdout
    assert "auto picks neon-dotprod" in r.stdout
