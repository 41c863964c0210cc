"""The Python SDK surface on the real model: load by name, info, tokens, generate, stream, chat, errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pyruntime
from pyruntime.errors import (
    ContextOverflowError,
    FormatError,
    InvalidArgumentError,
    TokenOutOfRangeError,
    UnknownModelError,
    UnsupportedError,
)


@pytest.fixture(scope="module")
def model(smollm2_path: Path) -> pyruntime.Model:
    return pyruntime.load("smollm2-135m-instruct", threads=2)


def test_load_by_name_and_info(model: pyruntime.Model, smollm2_path: Path) -> None:
    info = model.info
    assert Path(info["path"]) == smollm2_path
    assert info["architecture"] == "llama"
    assert 130e6 < info["n_params"] < 140e6
    assert info["tensor_types"] == {"F32": 61, "Q4_1": 210, "Q8_0": 1}
    assert info["context_length"] == 8192 and info["vocab_size"] == 49152


def test_tokenize_detokenize(model: pyruntime.Model) -> None:
    ids = model.tokenize("Hello world")
    assert model.detokenize(ids) == "Hello world"


def test_logits_shape_and_session_feed(model: pyruntime.Model) -> None:
    ids = model.tokenize("The quick brown fox")
    lg = model.logits(ids)
    assert lg.shape == (len(ids), 49152) and lg.dtype == np.float32
    s = model.session()
    np.testing.assert_allclose(s.feed(ids), lg, atol=1e-4)


def test_generate_greedy_equals_manual_argmax_loop(model: pyruntime.Model) -> None:
    ids = model.tokenize("Once upon a time")
    c = model.generate(ids, max_new_tokens=16)
    s = model.session()
    logits = s.feed(ids)[-1]
    manual = []
    for _ in range(16):
        t = int(np.argmax(logits))
        if t in model.tokenizer.eog_ids:
            break
        manual.append(t)
        logits = s.feed([t])[-1]
    assert c.token_ids == manual
    assert c.text == model.detokenize(manual)
    st = c.stats
    assert st["prompt_tokens"] == len(ids) and st["generated_tokens"] == len(manual)
    assert st["ttft_s"] > 0 and st["prefill_tok_s"] > 0 and st["decode_tok_s"] > 0


def test_stream_concatenates_to_text(model: pyruntime.Model) -> None:
    stream = model.generate("Write a list of fruits:", max_new_tokens=24, stream=True)
    chunks = list(stream)
    assert stream.completion is not None
    assert "".join(c.text for c in chunks) == stream.completion.text
    assert [c.token_id for c in chunks] == stream.completion.token_ids


def test_stop_strings(model: pyruntime.Model) -> None:
    full = model.generate("One, two, three,", max_new_tokens=24)
    word = full.text.strip().split()[1]
    c = model.generate("One, two, three,", max_new_tokens=24, stop=[word])
    assert word not in c.text and full.text.startswith(c.text)
    assert c.stats["finish_reason"] == "stop"
    streamed = "".join(
        ch.text for ch in model.generate("One, two, three,", max_new_tokens=24, stop=[word], stream=True)
    )
    assert streamed == c.text


def test_sampling_seed_reproducible(model: pyruntime.Model) -> None:
    kw = dict(max_new_tokens=20, temperature=0.9, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.1)
    a = model.generate("A story about a cat:", seed=7, **kw)
    b = model.generate("A story about a cat:", seed=7, **kw)
    c = model.generate("A story about a cat:", seed=8, **kw)
    assert a.token_ids == b.token_ids and a.token_ids != c.token_ids


def test_generate_batch_equals_each_prompt_alone(model: pyruntime.Model) -> None:
    """generate_batch drives every generation's steps together (the CPU's batched decode step gives each
    session its own feed's bits with this Q4_1 model, so the tokens are exactly generate()'s): prompts
    of different lengths, one stopping early at a stop string, one at max_new_tokens, seeded sampling
    with seed + i."""
    prompts = ["One, two, three,", "The capital of France is", [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]]
    for kw in (dict(max_new_tokens=12), dict(max_new_tokens=10, temperature=0.8, top_k=20, seed=3)):
        got = model.generate_batch(prompts, stop=[" four"], **kw)  # type: ignore[arg-type]
        assert len(got) == len(prompts)
        for i, (p, c) in enumerate(zip(prompts, got)):
            alone_kw = dict(kw, seed=kw["seed"] + i) if "seed" in kw else kw
            want = model.generate(p, stop=[" four"], **alone_kw)  # type: ignore[arg-type]
            assert isinstance(want, pyruntime.Completion)
            assert c.token_ids == want.token_ids and c.text == want.text
            assert c.stats["finish_reason"] == want.stats["finish_reason"]
        assert any(c.stats["batched_steps"] > 0 for c in got)  # decode steps ran as one batched pass
    assert model.generate_batch([]) == []
    with pytest.raises(TokenOutOfRangeError):
        model.generate_batch(["fine", [model.vocab_size]])


def test_chat_uses_template_and_stops(model: pyruntime.Model) -> None:
    c = model.chat(
        [{"role": "user", "content": "What is the capital of France? Answer in one word."}], max_new_tokens=32
    )
    assert "Paris" in c.text
    assert c.stats["finish_reason"] == "stop"
    assert c.stats["prompt_tokens"] > 20  # template applied (system prompt + role markers)


def test_bad_input(model: pyruntime.Model, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="empty"):
        model.generate("")
    with pytest.raises(InvalidArgumentError, match="empty"):
        model.generate([])
    with pytest.raises(TokenOutOfRangeError, match="49152"):
        model.generate([1, 49152])
    with pytest.raises(TokenOutOfRangeError):
        model.logits([-5])
    with pytest.raises(UnknownModelError, match="smollm2-135m-instruct"):
        pyruntime.load("no-such-model")
    with pytest.raises(UnsupportedError, match="device 'cuda'"):
        pyruntime.load("smollm2-135m-instruct", device="cuda")
    with pytest.raises(InvalidArgumentError, match="kv cache type 'q3'"):
        pyruntime.load("smollm2-135m-instruct", kv_cache="q3")
    p = tmp_path / "notes.txt"
    p.write_text("hello")
    with pytest.raises(FormatError, match="not a GGUF"):
        pyruntime.load(p)
    with pytest.raises(InvalidArgumentError, match="stop"):
        model.generate("hi", stop=[""])


def test_context_overflow(smollm2_path: Path) -> None:
    small = pyruntime.load(smollm2_path, context=16)
    with pytest.raises(ContextOverflowError, match="context"):
        small.generate(list(range(1, 40)))
    s = small.session()
    s.feed(list(range(1, 15)))
    with pytest.raises(ContextOverflowError, match="14 cached \\+ 5 new tokens exceed the context of 16"):
        s.feed([1, 2, 3, 4, 5])
    c = small.generate(list(range(1, 10)), max_new_tokens=100)  # stops when the context is full
    # Every generated token but the last occupies a cache slot; the last is sampled from a full cache.
    assert c.stats["finish_reason"] in ("context", "stop") and 9 + len(c.token_ids) - 1 <= 16
    assert c.stats["finish_reason"] == "stop" or 9 + len(c.token_ids) - 1 == 16


def test_token_ids_from_lists_tuples_and_arrays(model: pyruntime.Model) -> None:
    ids = model.tokenize("The quick brown fox")
    ref = model.logits(ids)
    for form in (tuple(ids), np.asarray(ids, dtype=np.int32), np.asarray([ids], dtype=np.uint16)):
        np.testing.assert_array_equal(model.session().feed(form), ref)  # type: ignore[arg-type]
    with pytest.raises(TokenOutOfRangeError, match="1099511627776 does not fit in 32 bits"):
        model.session().feed([1, 1 << 40])
    with pytest.raises(TokenOutOfRangeError, match="does not fit in 32 bits"):
        model.session().feed([1 << 70])
    for bad in ([1.5], [True], np.asarray([2.0])):
        with pytest.raises(InvalidArgumentError, match="token ids must be integers"):
            model.session().feed(bad)  # type: ignore[arg-type]


def test_native_logits_view_and_sampling_by_row(model: pyruntime.Model) -> None:
    """The generation loop samples from the native logits buffer; it must hold what feed() returns."""
    ids = model.tokenize("Once upon a time there was")
    rows = model.session()._feed_rows(ids, all_logits=True)
    assert (rows.rows, rows.vocab) == (len(ids), model.vocab_size)
    view = np.asarray(rows)
    np.testing.assert_array_equal(view, model.logits(ids))
    greedy = pyruntime._core.Sampler()
    for r in (0, 3, len(ids) - 1, -1):
        assert greedy.sample(rows, r) == int(np.argmax(view[r]))
    assert greedy.sample(rows) == int(np.argmax(view[-1]))
    with pytest.raises(InvalidArgumentError, match=f"row {len(ids)} outside"):
        greedy.sample(rows, len(ids))
    last = model.session()._feed_rows(ids, all_logits=False)
    assert last.rows == 1
    np.testing.assert_array_equal(np.asarray(last)[0], view[-1])


def test_text_generation_never_imports_numpy(smollm2_path: Path) -> None:
    """numpy costs ~14 MiB of RSS and most of the import time; text generation, chat and
    `pyrt bench` do without it (arrays stay an optional view of the logits)."""
    script = (
        "import sys, pyruntime\n"
        f"m = pyruntime.load({str(smollm2_path)!r}, threads=2)\n"
        "c = m.generate('Once upon a time', max_new_tokens=4, temperature=0.8, seed=1)\n"
        "assert c.token_ids, c\n"
        "m.chat([{'role': 'user', 'content': 'Hi'}], max_new_tokens=2)\n"
        "from pyruntime import cli\n"
        f"assert cli.main(['bench', '-m', {str(smollm2_path)!r}, '-p', '8', '-n', '2', '-r', '1']) == 0\n"
        "print('numpy' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"
