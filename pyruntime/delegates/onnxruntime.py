"""The ``onnxruntime`` delegate: each W8A8 graph becomes an ONNX QDQ model (onnx_graph.qdq_linear)
run by an InferenceSession with the providers onnxruntime offers, CPU last.

With an accelerator provider (QNN, ...) the graphs are QDQ models, the form NPU compilers take; with
only the CPU provider they are the integer form (MatMulInteger), which agrees with the reference
delegate bit for bit (the CPU provider runs QDQ MatMul in float). Activations are int8 with zero point
0: on x86 without VNNI onnxruntime's faster uint8 path sums pairs in 16 bits that saturate and moves
some outputs by a few steps.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np


class OnnxRuntimeDelegate:
    name = "onnxruntime"

    # Providers that are not local hardware (remote inference) are never picked.
    SKIP_PROVIDERS = ("AzureExecutionProvider",)

    def __init__(
        self,
        threads: int = 1,
        providers: Optional[list[str]] = None,
        form: Optional[str] = None,
        plugin: Optional[str] = None,
    ) -> None:
        """``plugin="qnn"``: Qualcomm's QNN execution provider from the ``onnxruntime-qnn`` package
        (HTP backend; on x86 it simulates the NPU), with CPU fallback disabled so every graph is
        proven to compile for it."""
        self.threads = max(1, int(threads))
        self.providers = providers
        self.form = form
        self.plugin = plugin
        if plugin is not None:
            self.name = f"onnxruntime-{plugin}"
        self._sessions: dict[int, Any] = {}
        self._next = 1

    def is_available(self) -> tuple[bool, str]:
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError as e:
            return False, f"{e.name} is not installed (pip install 'pyruntime[npu]')"
        if self.plugin == "qnn":
            try:
                if not _qnn_devices():
                    return False, "onnxruntime-qnn found no QNN device"
            except ImportError:
                return False, "onnxruntime-qnn is not installed (pip install onnxruntime-qnn)"
        return True, ""

    def prepare(self, graph: dict[str, Any]) -> int:
        import onnxruntime as ort

        from pyruntime.delegates.onnx_graph import qdq_linear

        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        # One session per graph means one intra-op pool per graph: spinning pools would fight each
        # other and the runtime's own threads for the cores between runs.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if self.plugin == "qnn":
            so.add_provider_for_devices(_qnn_devices(), {"backend_type": "htp"})
            so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
            session = ort.InferenceSession(qdq_linear(graph, self.form or "qdq"), so)
        else:
            providers = self.providers or [p for p in ort.get_available_providers() if p not in self.SKIP_PROVIDERS]
            form = self.form or ("integer" if providers == ["CPUExecutionProvider"] else "qdq")
            session = ort.InferenceSession(qdq_linear(graph, form), so, providers=providers)
        handle = self._next
        self._next += 1
        self._sessions[handle] = session
        return handle

    def execute(self, handle: int, x: np.ndarray) -> np.ndarray:
        return self._sessions[handle].run(None, {"x": x})[0]

    def release(self, handle: int) -> None:
        self._sessions.pop(handle, None)

    def runs_on(self) -> str:
        """The providers the sessions use; "cpu" when only onnxruntime's CPU provider runs them."""
        s = next(iter(self._sessions.values()), None)
        used = [p for p in (s.get_providers() if s is not None else []) if p != "CPUExecutionProvider"]
        if self.plugin == "qnn":
            return "QNNExecutionProvider (HTP backend; a simulator on x86)"
        return ",".join(used) if used else "cpu"


_qnn_registered = False


def _qnn_devices() -> list[Any]:
    """The QNN plug-in's devices (registers the provider library once per process)."""
    global _qnn_registered
    import onnxruntime as ort
    import onnxruntime_qnn

    if not _qnn_registered:
        ort.register_execution_provider_library(onnxruntime_qnn.get_ep_name(), onnxruntime_qnn.get_library_path())
        _qnn_registered = True
    return [d for d in ort.get_ep_devices() if d.ep_name == onnxruntime_qnn.get_ep_name()]
