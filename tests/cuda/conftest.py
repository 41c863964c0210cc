"""The `cu` fixture: each CUDA test runs on the GPU (skipped, saying why, without one) and on the CUDA
simulator (kernels/sim), which runs everywhere."""

from __future__ import annotations

from types import ModuleType

import pytest


def cuda_module() -> ModuleType:
    import importlib.util

    if importlib.util.find_spec("pyruntime._cuda") is None:
        pytest.skip("pyruntime was built without CUDA (no nvcc at build time)")
    from pyruntime import _cuda

    return _cuda


def simulator_module() -> ModuleType:
    import importlib.util

    if importlib.util.find_spec("pyruntime._cuda_sim") is None:
        pytest.skip("pyruntime was built with PYRT_CUDA_SIM=OFF (no CUDA simulator module)")
    from pyruntime import _cuda_sim  # any other import error fails the tests: they must not hide it

    return _cuda_sim


@pytest.fixture(scope="module", params=["gpu", "sim"])
def cu(request: pytest.FixtureRequest) -> ModuleType:
    if request.param == "sim":
        return simulator_module()
    mod = cuda_module()
    if mod.device_count() == 0:
        pytest.skip("no CUDA GPU or driver on this machine")
    return mod
