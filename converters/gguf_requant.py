"""GGUF -> GGUF with another weight type: metadata copied, tensors dequantized and requantized."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from converters.common import FILE_TYPE
from converters.writer import AtomicGGUF, quantize_tensor


def requantize_gguf(src: Path, out: Path, quant: str, overwrite: bool, log: Callable[[str], None]) -> None:
    import gguf

    if src.resolve() == out.resolve():
        raise ValueError(f"{out}: refusing to overwrite the input file")
    r = gguf.GGUFReader(src)
    arch_field = r.get_field("general.architecture")
    if arch_field is None:
        raise ValueError(f"{src}: no general.architecture")
    arch = str(arch_field.contents())
    with AtomicGGUF(out, arch, overwrite) as w:
        for key, field in r.fields.items():
            if key.startswith("GGUF.") or key in ("general.architecture", "general.file_type"):
                continue
            vtype = field.types[0]
            sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
            w.add_key_value(key, field.contents(), vtype, sub_type=sub)
        w.add_file_type(FILE_TYPE[quant])
        for t in r.tensors:
            shape = tuple(int(d) for d in reversed(t.shape.tolist()))  # numpy order
            data = gguf.quants.dequantize(t.data, t.tensor_type).reshape(shape).astype(np.float32)
            q, raw = quantize_tensor(t.name, data, quant, log)
            w.add_tensor(t.name, q, raw_dtype=raw)
