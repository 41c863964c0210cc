"""Prefill delegates written in Python, registered with the native runtime at import.

A delegate runs W8A8 linears of static shape ``[chunk, in]`` (SPEC 5.1) for ``device="npu"``; the
runtime hands it each graph once (``prepare``) and every chunk (``execute``). ``reference`` is built
into the C++ core; ``onnxruntime`` exports each graph as an ONNX QDQ model and runs it with the
execution providers onnxruntime has (``pip install 'pyruntime[npu]'``); ``onnxruntime-qnn`` runs them
on Qualcomm's QNN provider (``pip install onnxruntime-qnn``; HTP backend, simulated on x86);
``litert`` exports int8 TFLite models and runs them with LiteRT (``pip install ai-edge-litert``).
"""

from __future__ import annotations

from typing import Any, Protocol

from pyruntime import _core


class Delegate(Protocol):
    """What the runtime calls (see native/include/pyrt/delegate.h)."""

    name: str

    def is_available(self) -> tuple[bool, str]: ...
    def prepare(self, graph: dict[str, Any]) -> int: ...
    def execute(self, handle: int, x: Any) -> Any: ...
    def release(self, handle: int) -> None: ...


def _onnxruntime_factory(threads: int) -> Delegate:
    from pyruntime.delegates.onnxruntime import OnnxRuntimeDelegate

    return OnnxRuntimeDelegate(threads=threads)


def _onnxruntime_qnn_factory(threads: int) -> Delegate:
    from pyruntime.delegates.onnxruntime import OnnxRuntimeDelegate

    return OnnxRuntimeDelegate(threads=threads, plugin="qnn")


def _litert_factory(threads: int) -> Delegate:
    from pyruntime.delegates.litert import LiteRtDelegate

    return LiteRtDelegate(threads=threads)


def available_delegates() -> list[str]:
    """Delegate names this build knows (availability on this machine is checked at load)."""
    return list(_core.builtin_delegates())


_core.register_delegate("onnxruntime", _onnxruntime_factory)
_core.register_delegate("onnxruntime-qnn", _onnxruntime_qnn_factory)
_core.register_delegate("litert", _litert_factory)
