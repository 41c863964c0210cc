"""GGUF -> GGUF with another weight type: metadata copied, tensors dequantized and requantized."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from converters.common import FILE_TYPE
from converters.writer import AtomicGGUF, quantize_tensor


def requantize_gguf(
    src: Path,
    out: Path,
    quant: Optional[str],
    overwrite: bool,
    log: Callable[[str], None],
    extra_tensors: Optional[dict[str, np.ndarray]] = None,
    extra_metadata: Optional[dict[str, Any]] = None,
    drop_suffixes: tuple[str, ...] = (),
) -> None:
    """Copy ``src`` to ``out`` with every tensor requantized to ``quant`` (None: tensors copied
    byte for byte), plus ``extra_tensors`` (F32/I32 arrays) and ``extra_metadata`` (str/float/int);
    tensors named in ``extra_tensors`` or ending in ``drop_suffixes`` are not copied from ``src``."""
    import gguf

    if src.resolve() == out.resolve():
        raise ValueError(f"{out}: refusing to overwrite the input file")
    r = gguf.GGUFReader(src)
    arch_field = r.get_field("general.architecture")
    if arch_field is None:
        raise ValueError(f"{src}: no general.architecture")
    arch = str(arch_field.contents())
    extra_tensors = extra_tensors or {}
    extra_metadata = extra_metadata or {}
    with AtomicGGUF(out, arch, overwrite) as w:
        for key, field in r.fields.items():
            if key.startswith("GGUF.") or key in ("general.architecture", "general.file_type") or key in extra_metadata:
                continue
            vtype = field.types[0]
            sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
            w.add_key_value(key, field.contents(), vtype, sub_type=sub)
        if quant is not None:
            w.add_file_type(FILE_TYPE[quant])
        elif (file_type := r.get_field("general.file_type")) is not None:
            w.add_file_type(int(file_type.contents()))
        for key, value in extra_metadata.items():
            if isinstance(value, str):
                w.add_string(key, value)
            elif isinstance(value, float):
                w.add_float32(key, value)
            else:
                w.add_uint32(key, int(value))
        for t in r.tensors:
            if t.name in extra_tensors or t.name.endswith(drop_suffixes):
                continue  # replaced (e.g. a re-calibration)
            if quant is None:
                w.add_tensor(t.name, t.data, raw_dtype=t.tensor_type)
                continue
            shape = tuple(int(d) for d in reversed(t.shape.tolist()))  # numpy order
            data = gguf.quants.dequantize(t.data, t.tensor_type).reshape(shape).astype(np.float32)
            q, raw = quantize_tensor(t.name, data, quant, log)
            w.add_tensor(t.name, q, raw_dtype=raw)
        for name, arr in extra_tensors.items():
            w.add_tensor(name, np.ascontiguousarray(arr))
