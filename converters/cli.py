"""``pyrt-convert``: HF folder or GGUF -> GGUF, with --quant f32|f16|q8_0|q4_0|q4_1."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

from converters.writer import QUANT_TYPES


def convert_folder(folder: Path, out: Path, quant: str, force: bool, log: Callable[[str], None]) -> None:
    """Picks the converter: CTranslate2 Whisper (model.bin), or by config.json HF Llama, HF T5 /
    FLAN-T5, or a Mu checkpoint."""
    from converters.common import read_config
    from converters.ct2_whisper import is_ct2_whisper
    from converters.mu import is_mu_config

    if is_ct2_whisper(folder):
        from converters.ct2_whisper import convert_ct2_whisper

        convert_ct2_whisper(folder, out, quant, force, log)
        return
    cfg = read_config(folder)
    if is_mu_config(cfg):
        from converters.mu import convert_mu

        convert_mu(folder, out, quant, force, log)
    elif cfg.get("model_type") in ("t5", "mt5"):
        from converters.hf_t5 import convert_hf_t5

        convert_hf_t5(folder, out, quant, force, log)
    else:
        from converters.hf_llama import convert_hf_llama

        convert_hf_llama(folder, out, quant, force, log)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="pyrt-convert", description=__doc__)
    p.add_argument(
        "input", type=Path, help="model folder (HF Llama/T5 or Mu: config.json + *.safetensors) or a .gguf file"
    )
    p.add_argument("-o", "--output", type=Path, required=True, help="output .gguf path")
    p.add_argument("--quant", default="f16", choices=QUANT_TYPES, help="weight type for 2-D tensors (default f16)")
    p.add_argument("--force", action="store_true", help="replace the output if it exists")
    a = p.parse_args(argv)

    def log(msg: str) -> None:
        sys.stderr.write(msg + "\n")

    try:
        import gguf  # noqa: F401
    except ImportError:
        log("pyrt-convert: error: the converter needs the 'gguf' package: pip install 'pyruntime[convert]'")
        return 2
    try:
        if a.input.is_dir():
            convert_folder(a.input, a.output, a.quant, a.force, log)
        elif a.input.is_file():
            with open(a.input, "rb") as f:
                if f.read(4) != b"GGUF":
                    raise ValueError(f"{a.input}: not a GGUF file and not a folder")
            from converters.gguf_requant import requantize_gguf

            requantize_gguf(a.input, a.output, a.quant, a.force, log)
        else:
            raise FileNotFoundError(f"{a.input}: no such file or folder")
    except (ValueError, OSError, KeyError) as e:
        log(f"pyrt-convert: error: {e}")
        return 1
    log(f"wrote {a.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
