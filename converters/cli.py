"""``pyrt-convert``: HF folder or GGUF -> GGUF, with --quant f32|f16|q8_0|q4_0|q4_1, and W8A8
calibration for NPU prefill (--calibrate TEXT)."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Callable, Optional, Sequence

from converters.calibrate import DEFAULT_SAMPLES, DEFAULT_THRESHOLD
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


def calibrate(src: Path, a: argparse.Namespace, quant: Optional[str], log: Callable[[str], None]) -> None:
    from converters.calibrate import calibrate_gguf

    calibrate_gguf(
        src,
        a.output,
        a.calibrate,
        a.force,
        log,
        quant=quant,
        n_samples=a.calibration_samples,
        threshold=a.outlier_threshold,
    )


def is_user_error(e: Exception) -> bool:
    """Errors that name the problem in the input (one line, exit 1) rather than a bug (traceback):
    bad files and values, and the runtime's own typed errors (pyruntime.errors.*) while calibrating."""
    return isinstance(e, (ValueError, OSError, KeyError)) or type(e).__module__ == "pyruntime.errors"


def report(e: Exception, log: Callable[[str], None]) -> int:
    """A user error becomes one line and exit status 1; anything else propagates (a bug: traceback)."""
    if not is_user_error(e):
        raise e
    log(f"pyrt-convert: error: {e}")
    return 1


def export_onnx(a: argparse.Namespace, log: Callable[[str], None]) -> int:
    try:
        import pyruntime
        from converters.onnx_export import export_model_graphs

        if not a.input.is_file():
            raise FileNotFoundError(f"{a.input}: no such GGUF file")
        model = pyruntime.load(a.input, device="npu", delegate="reference", chunk=a.chunk)
        graphs = export_model_graphs(model, a.export_onnx, a.onnx_form, a.force)
    except ImportError as e:
        log(f"pyrt-convert: error: exporting ONNX needs {e.name} (pip install 'pyruntime[npu]')")
        return 2
    except Exception as e:
        return report(e, log)
    log(f"wrote {len(graphs)} graphs of [{a.chunk}, d] to {a.export_onnx}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="pyrt-convert", description=__doc__)
    p.add_argument(
        "input", type=Path, help="model folder (HF Llama/T5 or Mu: config.json + *.safetensors) or a .gguf file"
    )
    p.add_argument("-o", "--output", type=Path, help="output .gguf path")
    p.add_argument(
        "--quant",
        default=None,
        choices=QUANT_TYPES,
        help="weight type for 2-D tensors (default f16; with --calibrate on a GGUF: keep the input's types)",
    )
    p.add_argument("--force", action="store_true", help="replace the output if it exists")
    p.add_argument(
        "--calibrate",
        type=Path,
        metavar="TEXT",
        help="UTF-8 text to calibrate W8A8 activation scales and outlier channels on (for device='npu')",
    )
    p.add_argument(
        "--calibration-samples",
        type=int,
        default=DEFAULT_SAMPLES,
        help=f"samples of up to 512 tokens (default {DEFAULT_SAMPLES})",
    )
    p.add_argument(
        "--outlier-threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        help="a layer gets shadow outlier correction when max|x| > threshold * 99.9th percentile "
        f"(default {DEFAULT_THRESHOLD:g}; 1: every layer)",
    )
    p.add_argument(
        "--export-onnx",
        type=Path,
        metavar="DIR",
        help="write the W8A8 chunk graphs of a calibrated GGUF as ONNX models (+ manifest.json) to DIR",
    )
    p.add_argument("--chunk", type=int, default=128, help="static rows of the exported graphs (default 128)")
    p.add_argument(
        "--onnx-form",
        default="qdq",
        choices=("qdq", "integer"),
        help="qdq: QuantizeLinear/DequantizeLinear around MatMul (NPU toolchains); integer: MatMulInteger",
    )
    a = p.parse_args(argv)

    def log(msg: str) -> None:
        sys.stderr.write(msg + "\n")

    try:
        import gguf  # noqa: F401
    except ImportError:
        log("pyrt-convert: error: the converter needs the 'gguf' package: pip install 'pyruntime[convert]'")
        return 2
    if a.export_onnx is not None:
        return export_onnx(a, log)
    if a.output is None:
        log("pyrt-convert: error: -o/--output is required")
        return 2
    try:
        if a.calibrate is not None and not a.calibrate.is_file():
            raise FileNotFoundError(f"{a.calibrate}: calibration text not found")
        if a.calibration_samples < 1:
            raise ValueError(f"--calibration-samples must be >= 1, got {a.calibration_samples}")
        if a.input.is_dir():
            if a.calibrate is None:
                convert_folder(a.input, a.output, a.quant or "f16", a.force, log)
            else:  # convert, then calibrate the converted file
                if a.output.exists() and not a.force:
                    raise FileExistsError(f"{a.output} exists; pass --force to replace it")
                with tempfile.TemporaryDirectory(dir=a.output.parent if a.output.parent.exists() else None) as tmp:
                    staged = Path(tmp) / "uncalibrated.gguf"
                    convert_folder(a.input, staged, a.quant or "f16", True, log)
                    calibrate(staged, a, None, log)
        elif a.input.is_file():
            with open(a.input, "rb") as f:
                if f.read(4) != b"GGUF":
                    raise ValueError(f"{a.input}: not a GGUF file and not a folder")
            if a.calibrate is not None:
                calibrate(a.input, a, a.quant, log)
            else:
                from converters.gguf_requant import requantize_gguf

                requantize_gguf(a.input, a.output, a.quant or "f16", a.force, log)
        else:
            raise FileNotFoundError(f"{a.input}: no such file or folder")
    except Exception as e:
        return report(e, log)
    log(f"wrote {a.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
