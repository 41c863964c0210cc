"""Tokenizer exactness: llama.cpp's test vectors (100% per claimed vocabulary), HF tokenizers on
all of botchan.txt, round trips, special-token parsing."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyruntime import Tokenizer
from pyruntime.errors import FormatError, TokenOutOfRangeError
from tests.conftest import TOKENIZER_DIR

VOCABS = ["gpt-2", "llama-bpe", "qwen2", "starcoder", "deepseek-coder", "falcon", "llama-spm", "phi-3"]


def load_cases(vocab: str) -> list[tuple[str, list[int]]]:
    base = TOKENIZER_DIR / f"ggml-vocab-{vocab}.gguf"
    inputs = base.with_name(base.name + ".inp").read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")
    outputs = base.with_name(base.name + ".out").read_text(encoding="utf-8").split("\n")
    if outputs and outputs[-1] == "":
        outputs.pop()
    assert len(outputs) >= 40 and len(inputs) >= len(outputs)
    return [(inputs[i], [int(t) for t in outputs[i].split()]) for i in range(len(outputs))]


@pytest.mark.parametrize("vocab", VOCABS)
def test_llama_cpp_vectors_exact(vocab: str) -> None:
    tok = Tokenizer.from_gguf(TOKENIZER_DIR / f"ggml-vocab-{vocab}.gguf")
    cases = load_cases(vocab)
    wrong = [
        (text, want, tok.encode(text, add_special=False))
        for text, want in cases
        if tok.encode(text, add_special=False) != want
    ]
    assert not wrong, f"{len(wrong)}/{len(cases)} cases differ, first: {wrong[0]!r}"


@pytest.mark.parametrize("vocab", VOCABS)
def test_decode_round_trip(vocab: str, botchan: str) -> None:
    tok = Tokenizer.from_gguf(TOKENIZER_DIR / f"ggml-vocab-{vocab}.gguf")
    for text, _ in load_cases(vocab):
        assert tok.decode(tok.encode(text, add_special=False)) == text
    passage = botchan[10_000:14_000]
    assert tok.decode(tok.encode(passage, add_special=False)) == passage


def test_spm_adds_bos_when_asked() -> None:
    tok = Tokenizer.from_gguf(TOKENIZER_DIR / "ggml-vocab-llama-spm.gguf")
    assert tok.kind == "spm"
    assert tok.encode("Hello", add_special=True)[0] == tok.bos_id == 1
    assert tok.encode("Hello", add_special=False)[0] != 1


def test_smollm2_matches_hf_tokenizers_on_all_of_botchan(smollm2_path: Path, botchan: str) -> None:
    """Reference: HF tokenizers with the vocabulary and merges as transformers reads them from the
    GGUF. transformers maps the 'smollm' pre-tokenizer to plain ByteLevel, dropping the digit split,
    so the pre-tokenizer is set to what SmolLM2's tokenizer.json declares:
    Sequence[Digits(individual_digits=True), ByteLevel(add_prefix_space=False)]."""
    from tokenizers import pre_tokenizers
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(smollm2_path.parent), gguf_file=smollm2_path.name)
    hf.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    ours = Tokenizer.from_gguf(smollm2_path)
    assert ours.pre == "smollm"
    want = hf.encode(botchan, add_special_tokens=False)
    got = ours.encode(botchan, add_special=False)
    assert len(got) == len(want) > 60_000
    first_diff = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), None)
    assert got == want, f"first difference at token {first_diff}"
    assert ours.decode(got) == botchan


def test_special_tokens_parsed_only_on_request(smollm2_path: Path) -> None:
    tok = Tokenizer.from_gguf(smollm2_path)
    text = "<|im_start|>user\nhi<|im_end|>"
    parsed = tok._t.encode(text, False, True)
    plain = tok.encode(text, add_special=False)
    im_start = parsed[0]
    assert tok.is_control(im_start) and len(parsed) < len(plain)
    assert im_start not in plain
    assert tok.decode(parsed) == text
    assert set(tok.eog_ids) >= {tok.eos_id}


def test_vocab_only_file_and_bad_ids() -> None:
    tok = Tokenizer.from_gguf(TOKENIZER_DIR / "ggml-vocab-gpt-2.gguf")
    assert tok.vocab_size == 50257
    with pytest.raises(TokenOutOfRangeError, match="50257"):
        tok.decode([50257])
    with pytest.raises(TokenOutOfRangeError):
        tok.decode([-1])


def test_invalid_utf8_does_not_crash() -> None:
    tok = Tokenizer.from_gguf(TOKENIZER_DIR / "ggml-vocab-gpt-2.gguf")
    ids = tok.encode("caf\udce9".encode("utf-8", "surrogateescape").decode("utf-8", "replace"), add_special=False)
    assert ids
    # A token that is half of a multi-byte character decodes to U+FFFD rather than failing.
    euro = tok.encode("€", add_special=False)
    if len(euro) > 1:
        assert "\ufffd" in tok.decode(euro[:1])


def test_not_a_tokenizer_file(tmp_path: Path) -> None:
    p = tmp_path / "x.gguf"
    p.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + (0).to_bytes(8, "little") * 2)
    with pytest.raises(FormatError, match="tokenizer"):
        Tokenizer.from_gguf(p)


def _bpe_file(tmp_path: Path, tokens: list[str], merges: list[str]) -> Path:
    from gguf import GGUFValueType as T

    from tests.unit.gguf_files import write_gguf

    return write_gguf(
        tmp_path / "bpe.gguf",
        {
            "tokenizer.ggml.model": ("gpt2", T.STRING, None),
            "tokenizer.ggml.pre": ("gpt2", T.STRING, None),
            "tokenizer.ggml.tokens": (tokens, T.ARRAY, T.STRING),
            "tokenizer.ggml.merges": (merges, T.ARRAY, T.STRING),
        },
    )


def test_bpe_merges_by_rank_including_halves_outside_the_vocabulary(tmp_path: Path) -> None:
    """Merges are looked up by the ids of their halves; a merge whose halves are not tokens ("x y"
    with no "x") still applies, as the merges list says. Duplicate token texts map to the first id."""
    tokens = ["a", "b", "c", "ab", "bc", "abc", "y", "xy", "ab", "<unk>"]
    tok = Tokenizer.from_gguf(_bpe_file(tmp_path, tokens, ["b c", "a b", "ab c", "x y"]))
    assert tok.encode("bc", add_special=False) == [4]
    assert tok.encode("abc", add_special=False) == [0, 4]  # "b c" ranks first, then nothing merges "a bc"
    tok = Tokenizer.from_gguf(_bpe_file(tmp_path, tokens, ["a b", "b c", "ab c", "x y"]))
    assert tok.encode("abc", add_special=False) == [5]
    assert tok.encode("ab", add_special=False) == [3]  # the first of the two "ab" tokens
    assert tok.encode("xy", add_special=False) == [7]  # "x" is no token, the merge still applies
    assert tok.encode("aby", add_special=False) == [3, 6]
