"""atheris harness for the GGUF reader and the tokenizer loader (run by test_fuzz.py, or by hand:
python tests/fuzz/fuzz_gguf.py tests/fuzz/corpus -runs=100000)."""

import sys

import atheris

with atheris.instrument_imports():
    from pyruntime import _core
    from pyruntime.errors import PyruntimeError


def test_one_input(data: bytes) -> None:
    try:
        _core.GGUFFile.parse_bytes(data, True)
    except PyruntimeError:
        pass  # a clear, typed error is the expected outcome for bad input


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
