"""GGUF reader: metadata of every value type, tensor types and layouts, against the reference
`gguf` package (llama.cpp's own Python reader/writer)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pyruntime import _core
from tests.conftest import TOKENIZER_DIR
from tests.unit.gguf_files import write_gguf


def test_every_metadata_value_type(tmp_path: Path) -> None:
    import gguf

    T = gguf.GGUFValueType
    kv = {
        "t.u8": (200, T.UINT8, None),
        "t.i8": (-100, T.INT8, None),
        "t.u16": (60000, T.UINT16, None),
        "t.i16": (-30000, T.INT16, None),
        "t.u32": (4_000_000_000, T.UINT32, None),
        "t.i32": (-2_000_000_000, T.INT32, None),
        "t.u64": (2**63 + 5, T.UINT64, None),
        "t.i64": (-(2**62), T.INT64, None),
        "t.f32": (1.5, T.FLOAT32, None),
        "t.f64": (-2.25e-300, T.FLOAT64, None),
        "t.bool": (True, T.BOOL, None),
        "t.str": ("héllo\u2581", T.STRING, None),
        "t.arr_i32": ([1, -2, 3], T.ARRAY, T.INT32),
        "t.arr_f32": ([0.5, -1.0], T.ARRAY, T.FLOAT32),
        "t.arr_str": (["a", "", "ü"], T.ARRAY, T.STRING),
        "t.arr_bool": ([True, False], T.ARRAY, T.BOOL),
    }
    path = write_gguf(tmp_path / "kv.gguf", kv)
    meta = _core.GGUFFile.open(str(path)).metadata
    for key, (val, _, _) in kv.items():
        assert meta[key] == val, key
    assert meta["general.architecture"] == "llama"


def test_empty_and_nested_arrays() -> None:
    import struct

    def s(b: bytes) -> bytes:
        return struct.pack("<Q", len(b)) + b

    data = b"GGUF" + struct.pack("<IQQ", 3, 0, 2)
    data += s(b"empty") + struct.pack("<IIQ", 9, 4, 0)
    data += s(b"nested") + struct.pack("<IIQ", 9, 9, 2)
    data += struct.pack("<IQ", 5, 2) + struct.pack("<ii", 1, -1) + struct.pack("<IQ", 8, 1) + s(b"x")
    assert _core.GGUFFile.parse_bytes(data) == (2, 0)


def test_metadata_equals_reference_reader_on_real_files(smollm2_path: Path) -> None:
    import gguf

    # The reference reader needs ~25 s for the large BPE vocabularies, so: the real model + the SPM vocabs.
    for path in [smollm2_path, TOKENIZER_DIR / "ggml-vocab-llama-spm.gguf", TOKENIZER_DIR / "ggml-vocab-phi-3.gguf"]:
        ref = gguf.GGUFReader(path)
        ours = _core.GGUFFile.open(str(path))
        meta = ours.metadata
        for key, field in ref.fields.items():
            if key.startswith("GGUF."):
                continue
            got = meta[key]
            if len(field.data) > 2000:  # vocab-sized arrays: compare a spread of elements (the reference is slow)
                idx = np.linspace(0, len(field.data) - 1, 500).astype(int)
                assert len(got) == len(field.data), key
                for i in idx:
                    want_i = field.contents(int(i))
                    assert got[i] == pytest.approx(want_i) if isinstance(want_i, float) else got[i] == want_i, (key, i)
                continue
            want = field.contents()
            if isinstance(want, float):
                assert got == pytest.approx(want, rel=1e-7), key
            elif isinstance(want, list) and want and isinstance(want[0], float):
                np.testing.assert_allclose(got, want, rtol=1e-7, err_msg=key)
            else:
                assert got == want, key
        tensors = ours.tensors
        assert [t["name"] for t in tensors] == [t.name for t in ref.tensors]
        for mine, theirs in zip(tensors, ref.tensors):
            assert mine["type"] == theirs.tensor_type.name
            assert mine["shape"] == [int(d) for d in theirs.shape]
            assert mine["nbytes"] == int(theirs.n_bytes)


@pytest.mark.parametrize("qtype", ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1"])
@pytest.mark.parametrize("alignment", [None, 64])
def test_tensor_types_dequantize_like_reference(tmp_path: Path, qtype: str, alignment: int) -> None:
    import gguf

    rng = np.random.default_rng(7)
    arr = (rng.standard_normal((5, 96)) * 3).astype(np.float32)
    t = gguf.GGMLQuantizationType[qtype]
    if qtype == "F32":
        data, raw = arr, None
    elif qtype == "F16":
        data, raw = arr.astype(np.float16), None
    else:
        data, raw = gguf.quants.quantize(arr, t), t
    tensors = {"w": (data, raw), "bias": (rng.standard_normal(7).astype(np.float32), None)}
    path = write_gguf(tmp_path / f"{qtype}.gguf", tensors=tensors, alignment=alignment)
    f = _core.GGUFFile.open(str(path))
    if alignment:
        assert f.alignment == alignment
    info = {t["name"]: t for t in f.tensors}
    assert info["w"]["type"] == qtype and info["w"]["shape"] == [96, 5]
    want = gguf.quants.dequantize(gguf.GGUFReader(path).tensors[0].data, t).reshape(5, 96)
    np.testing.assert_array_equal(f.tensor_f32("w"), want)
    np.testing.assert_array_equal(f.tensor_f32("bias"), tensors["bias"][0])
