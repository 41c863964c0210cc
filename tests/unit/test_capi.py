"""The C ABI (pyrt.h) through ctypes: status codes and messages instead of exceptions, same logits."""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

import pyruntime
from pyruntime import _core


@pytest.fixture(scope="module")
def lib() -> ctypes.CDLL:
    path = Path(_core.__file__).parent / "libpyrt.so"
    assert path.is_file(), f"{path} is not installed beside the Python module"
    lib = ctypes.CDLL(str(path))
    lib.pyrt_last_error.restype = ctypes.c_char_p
    lib.pyrt_model_load.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]
    lib.pyrt_model_vocab_size.argtypes = [ctypes.c_void_p]
    lib.pyrt_model_vocab_size.restype = ctypes.c_int64
    lib.pyrt_model_free.argtypes = [ctypes.c_void_p]
    lib.pyrt_tokenize.argtypes = [
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.POINTER(ctypes.c_int32),
        ctypes.c_size_t,
        ctypes.POINTER(ctypes.c_size_t),
    ]
    lib.pyrt_session_new.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.POINTER(ctypes.c_void_p)]
    lib.pyrt_session_free.argtypes = [ctypes.c_void_p]
    lib.pyrt_session_feed.argtypes = [
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_int32),
        ctypes.c_size_t,
        ctypes.POINTER(ctypes.c_float),
    ]
    return lib


def test_load_error_is_a_status(lib: ctypes.CDLL, tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"nope")
    handle = ctypes.c_void_p()
    assert lib.pyrt_model_load(str(bad).encode(), 1, b"f16", ctypes.byref(handle)) == 3  # PYRT_ERR_FORMAT
    assert b"not a GGUF" in lib.pyrt_last_error()
    assert lib.pyrt_model_load(None, 1, None, ctypes.byref(handle)) == 1


def test_tokenize_and_feed_match_python(
    lib: ctypes.CDLL, make_hf_llama: Callable[..., Path], convert: Callable[..., Path], tmp_path: Path
) -> None:
    path = convert(make_hf_llama("capi"), tmp_path / "m.gguf", "q8_0")
    model = ctypes.c_void_p()
    assert lib.pyrt_model_load(str(path).encode(), 2, b"f32", ctypes.byref(model)) == 0, lib.pyrt_last_error()
    vocab = lib.pyrt_model_vocab_size(model)
    ids = (ctypes.c_int32 * 64)()
    n = ctypes.c_size_t()
    assert lib.pyrt_tokenize(model, b"The cat sat on the mat.", 0, ids, 64, ctypes.byref(n)) == 0
    py = pyruntime.load(path, kv_cache="f32")
    want_ids = py.tokenize("The cat sat on the mat.", add_special=False)
    assert list(ids[: n.value]) == want_ids
    sess = ctypes.c_void_p()
    assert lib.pyrt_session_new(model, 0, ctypes.byref(sess)) == 0
    logits = (ctypes.c_float * vocab)()
    assert lib.pyrt_session_feed(sess, ids, n.value, logits) == 0
    np.testing.assert_allclose(np.ctypeslib.as_array(logits), py.logits(want_ids)[-1], atol=1e-4)
    bad = (ctypes.c_int32 * 1)(vocab + 5)
    assert lib.pyrt_session_feed(sess, bad, 1, logits) == 5  # PYRT_ERR_OUT_OF_RANGE
    assert b"outside the vocabulary" in lib.pyrt_last_error()
    lib.pyrt_session_free(sess)
    lib.pyrt_model_free(model)


def test_load_on_a_device(
    lib: ctypes.CDLL, make_hf_llama: Callable[..., Path], convert: Callable[..., Path], tmp_path: Path
) -> None:
    """pyrt_model_load_on: the C ABI reaches every device; one this build or machine lacks is a status
    naming what is missing. cuda-sim (the CUDA kernels on the simulator) gives the GPU path's logits."""
    import importlib.util

    lib.pyrt_model_load_on.argtypes = [
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.POINTER(ctypes.c_void_p),
    ]
    path = convert(make_hf_llama("capi_dev", hidden_size=128, num_attention_heads=2), tmp_path / "m.gguf", "q8_0")
    model = ctypes.c_void_p()
    assert lib.pyrt_model_load_on(str(path).encode(), 1, b"f16", b"tpu", ctypes.byref(model)) == 4
    assert b"device 'tpu'" in lib.pyrt_last_error()
    if importlib.util.find_spec("pyruntime._cuda_sim") is None:
        pytest.skip("built with PYRT_CUDA_SIM=OFF: no cuda-sim device to load on")
    assert lib.pyrt_model_load_on(str(path).encode(), 1, b"f16", b"cuda-sim", ctypes.byref(model)) == 0, (
        lib.pyrt_last_error()
    )
    sess = ctypes.c_void_p()
    assert lib.pyrt_session_new(model, 32, ctypes.byref(sess)) == 0
    ids = (ctypes.c_int32 * 3)(5, 17, 99)
    vocab = lib.pyrt_model_vocab_size(model)
    logits = (ctypes.c_float * vocab)()
    assert lib.pyrt_session_feed(sess, ids, 3, logits) == 0, lib.pyrt_last_error()
    want = pyruntime.load(path, device="cuda-sim", context=32).session().feed([5, 17, 99])[-1]
    np.testing.assert_array_equal(np.ctypeslib.as_array(logits), want)  # the same kernels, the same bits
    lib.pyrt_session_free(sess)
    lib.pyrt_model_free(model)
