"""Export a model's W8A8 prefill graphs (SPEC 5.1) as ONNX files for NPU toolchains: what
``pyrt-convert MODEL.gguf --export-onnx DIR`` writes. Converters import the runtime (the graphs come
from a model loaded with ``device="npu"``, each built by the onnxruntime delegate's own
``qdq_linear``); the runtime never imports this."""

from __future__ import annotations

from typing import Any

import numpy as np

from pyruntime.delegates.onnx_graph import qdq_linear


def export_model_graphs(model: Any, out_dir: Any, form: str = "qdq", overwrite: bool = False) -> list[dict[str, Any]]:
    """Write every W8A8 graph of a model loaded with ``device="npu"`` to ``out_dir/<name>.onnx`` plus
    ``manifest.json`` (name, file, shape, scales, sha256). The folder is built beside the target and
    renamed into place, so a failure leaves nothing half-written."""
    import hashlib
    import json
    import shutil
    import tempfile
    from pathlib import Path

    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --force to replace it")
    graphs = model._m.delegate_graphs()
    if not graphs:
        raise ValueError("the model has no delegate graphs (load it with device='npu')")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", suffix=".part", dir=out.parent))
    try:
        manifest = []
        for g in graphs:
            blob = qdq_linear(g, form)
            name = str(g["name"])
            (tmp / f"{name}.onnx").write_bytes(blob)
            manifest.append(
                {
                    "name": name,
                    "file": f"{name}.onnx",
                    "form": form,
                    "rows": int(g["rows"]),
                    "in_features": int(g["in_features"]),
                    "out_features": int(g["out_features"]),
                    "input_scale": float(g["input_scale"]),
                    "weight_scales": [float(v) for v in np.asarray(g["weight_scales"]).reshape(-1)],
                    "output_scale": float(g["output_scale"]),
                    "sha256": hashlib.sha256(blob).hexdigest(),
                }
            )
        (tmp / "manifest.json").write_text(json.dumps({"graphs": manifest}, indent=1), encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return manifest
