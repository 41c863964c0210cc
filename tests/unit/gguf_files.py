"""Builders for small GGUF files written with the reference `gguf` package (tests only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np


def write_gguf(
    path: Path,
    kv: Optional[dict[str, tuple[Any, Any, Any]]] = None,
    tensors: Optional[dict[str, tuple[np.ndarray, Any]]] = None,
    arch: str = "llama",
    alignment: Optional[int] = None,
) -> Path:
    """kv: key -> (value, GGUFValueType, sub_type); tensors: name -> (array, raw_dtype or None)."""
    import gguf

    w = gguf.GGUFWriter(str(path), arch)
    if alignment is not None:
        w.add_custom_alignment(alignment)
    for key, (val, vtype, sub) in (kv or {}).items():
        w.add_key_value(key, val, vtype, sub_type=sub)
    for name, (arr, raw) in (tensors or {}).items():
        w.add_tensor(name, arr, raw_dtype=raw)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
