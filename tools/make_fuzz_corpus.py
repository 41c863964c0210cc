"""Write the small seed corpus of tests/fuzz/corpus (a few KB, committed)."""

from __future__ import annotations

import sys
from pathlib import Path

import gguf
import numpy as np

out = Path(sys.argv[1] if len(sys.argv) > 1 else "tests/fuzz/corpus")
out.mkdir(parents=True, exist_ok=True)
T = gguf.GGUFValueType


def write(name: str, kv: dict, tensors: dict) -> None:
    w = gguf.GGUFWriter(str(out / name), "llama")
    for k, (v, t, sub) in kv.items():
        w.add_key_value(k, v, t, sub_type=sub)
    for k, (arr, raw) in tensors.items():
        w.add_tensor(k, arr, raw_dtype=raw)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


write(
    "kv_types.gguf",
    {
        "a.u8": (1, T.UINT8, None),
        "a.i16": (-2, T.INT16, None),
        "a.u64": (3, T.UINT64, None),
        "a.f64": (0.5, T.FLOAT64, None),
        "a.b": (True, T.BOOL, None),
        "a.s": ("x", T.STRING, None),
        "a.arr": ([1, 2], T.ARRAY, T.INT32),
        "a.sarr": (["p", "q"], T.ARRAY, T.STRING),
    },
    {},
)
rng = np.random.default_rng(0)
x = rng.standard_normal((2, 32)).astype(np.float32)
write(
    "tensors.gguf",
    {},
    {
        "f32": (x[:, :4], None),
        "f16": (x.astype(np.float16), None),
        "q8": (gguf.quants.quantize(x, gguf.GGMLQuantizationType.Q8_0), gguf.GGMLQuantizationType.Q8_0),
        "q4": (gguf.quants.quantize(x, gguf.GGMLQuantizationType.Q4_0), gguf.GGMLQuantizationType.Q4_0),
    },
)
tokens = ["<unk>", "<s>", "</s>", "\u2581", "a", "b", "\u2581a", "ab", "<0x41>"]  # unk makes any text encodable
write(
    "spm_vocab.gguf",
    {
        "tokenizer.ggml.model": ("llama", T.STRING, None),
        "tokenizer.ggml.tokens": (tokens, T.ARRAY, T.STRING),
        "tokenizer.ggml.scores": ([0.0, 0, 0, -1, -2, -2, -0.5, -1.5, 0], T.ARRAY, T.FLOAT32),
        "tokenizer.ggml.token_type": ([2, 3, 3, 1, 1, 1, 1, 1, 6], T.ARRAY, T.INT32),
        "tokenizer.ggml.bos_token_id": (1, T.UINT32, None),
        "tokenizer.ggml.unknown_token_id": (0, T.UINT32, None),
    },
    {},
)
bpe = ["a", "b", "Ġ", "ab", "Ġa", "<|im_end|>"]
write(
    "bpe_vocab.gguf",
    {
        "tokenizer.ggml.model": ("gpt2", T.STRING, None),
        "tokenizer.ggml.pre": ("smollm", T.STRING, None),
        "tokenizer.ggml.tokens": (bpe, T.ARRAY, T.STRING),
        "tokenizer.ggml.token_type": ([1, 1, 1, 1, 1, 3], T.ARRAY, T.INT32),
        "tokenizer.ggml.merges": (["a b", "Ġ a"], T.ARRAY, T.STRING),
    },
    {},
)
for p in sorted(out.iterdir()):
    print(p, p.stat().st_size)
