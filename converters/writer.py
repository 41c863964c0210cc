"""Writing GGUF files safely: temp file in the destination folder, then an atomic rename."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

QUANT_TYPES = ("f32", "f16", "q8_0", "q4_0", "q4_1")
# Small tables read once at load time (T5 relative position bias, Whisper's mel filters and encoder
# positions, which the runtime reads as F32): never worth quantizing.
KEEP_F32_SUFFIXES = ("attn_rel_b.weight", "mel_filters", "enc.position_embd.weight")


def quantize_tensor(name: str, arr: np.ndarray, quant: str, log: Callable[[str], None]) -> tuple[np.ndarray, Any]:
    """(data, raw_dtype) for GGUFWriter.add_tensor. 1-D tensors (norms, biases) and KEEP_F32_SUFFIXES
    stay F32; 2-D tensors whose rows do not split into 32-element blocks fall back to F16 (and the log
    says so)."""
    import gguf

    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if arr.ndim < 2 or quant == "f32" or name.endswith(KEEP_F32_SUFFIXES):
        return arr, None
    if quant == "f16":
        return arr.astype(np.float16), None
    qtype = {
        "q8_0": gguf.GGMLQuantizationType.Q8_0,
        "q4_0": gguf.GGMLQuantizationType.Q4_0,
        "q4_1": gguf.GGMLQuantizationType.Q4_1,
    }[quant]
    if arr.shape[-1] % 32 != 0:
        log(f"note: {name} row length {arr.shape[-1]} is not a multiple of 32; stored as F16")
        return arr.astype(np.float16), None
    return gguf.quants.quantize(arr, qtype), qtype


class AtomicGGUF:
    """Context manager yielding a GGUFWriter on a temp path. On success the file is written and renamed
    over ``dest``; on any error the temp file is removed and ``dest`` is untouched."""

    def __init__(self, dest: Path, arch: str, overwrite: bool, progress: bool = True) -> None:
        self.dest = Path(dest)
        self.arch = arch
        self.progress = progress
        if self.dest.exists() and not overwrite:
            raise FileExistsError(f"{self.dest} exists; pass --force to replace it")
        self.tmp: Optional[str] = None

    def __enter__(self) -> Any:
        import gguf

        self.dest.parent.mkdir(parents=True, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(prefix=self.dest.name + ".", suffix=".part", dir=self.dest.parent)
        os.close(fd)
        self.writer = gguf.GGUFWriter(self.tmp, self.arch)
        return self.writer

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        assert self.tmp is not None
        try:
            if exc_type is None:
                w = self.writer
                w.write_header_to_file()
                w.write_kv_data_to_file()
                w.write_tensors_to_file(progress=self.progress)
                w.close()
                os.replace(self.tmp, self.dest)
        finally:
            if os.path.exists(self.tmp):
                os.unlink(self.tmp)
