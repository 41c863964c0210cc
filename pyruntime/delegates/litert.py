"""The ``litert`` delegate: each W8A8 graph becomes an int8 TFLite model (tflite_graph.int8_linear)
run by LiteRT's interpreter (``pip install ai-edge-litert``; the XNNPACK CPU path here, the phone's
NPU delegate on Android)."""

from __future__ import annotations

from typing import Any

import numpy as np


class LiteRtDelegate:
    name = "litert"

    def __init__(self, threads: int = 1) -> None:
        self.threads = max(1, int(threads))
        self._interpreters: dict[int, Any] = {}
        self._next = 1

    def is_available(self) -> tuple[bool, str]:
        try:
            import flatbuffers  # noqa: F401
            from ai_edge_litert import interpreter  # noqa: F401
        except ImportError as e:
            return False, f"{e.name} is not installed (pip install ai-edge-litert)"
        return True, ""

    def prepare(self, graph: dict[str, Any]) -> int:
        from ai_edge_litert.interpreter import Interpreter

        from pyruntime.delegates.tflite_graph import int8_linear

        it = Interpreter(model_content=int8_linear(graph), num_threads=self.threads)
        it.allocate_tensors()
        handle = self._next
        self._next += 1
        self._interpreters[handle] = (it, it.get_input_details()[0]["index"], it.get_output_details()[0]["index"])
        return handle

    def execute(self, handle: int, x: np.ndarray) -> np.ndarray:
        it, i, o = self._interpreters[handle]
        it.set_tensor(i, x)
        it.invoke()
        return it.get_tensor(o)

    def release(self, handle: int) -> None:
        self._interpreters.pop(handle, None)

    def runs_on(self) -> str:
        return "cpu"  # XNNPACK; LiteRT's NPU accelerators are not wired here yet
