"""Speech to text with Whisper-style encoder-decoders: audio -> log-mel features (in the runtime) ->
encoder states -> greedy decoding of the transcript, 30-second windows at a time."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Union

from pyruntime import _core
from pyruntime.audio import read_wav
from pyruntime.errors import InvalidArgumentError, UnsupportedError

if TYPE_CHECKING:
    import numpy as np

    from pyruntime.model import Model

Audio = Union[str, "os.PathLike[str]", "np.ndarray"]


@dataclass
class Transcript:
    """A finished transcription: text, the text token ids of every window, and timings."""

    text: str
    token_ids: list[int]
    stats: dict[str, Any]


def load_audio(model: Model, audio: Audio, sample_rate: Optional[int]) -> np.ndarray:
    """Mono float32 samples at the model's rate: a WAV path, or an array at ``sample_rate``."""
    import numpy as np

    rate = int(model._m.audio_sample_rate)
    if isinstance(audio, (str, os.PathLike)):
        pcm, sr = read_wav(audio)
        if sample_rate is not None and sample_rate != sr:
            raise InvalidArgumentError(f"{os.fspath(audio)} is {sr} Hz; sample_rate={sample_rate} contradicts it")
    else:
        pcm = np.asarray(audio, dtype=np.float32)
        if pcm.ndim == 2:  # [samples, channels]
            pcm = pcm.mean(axis=1)
        if pcm.ndim != 1:
            raise InvalidArgumentError(f"audio must be 1-D samples or [samples, channels], got shape {pcm.shape}")
        sr = int(sample_rate or rate)
    if pcm.size == 0:
        raise InvalidArgumentError("the audio is empty")
    if not np.isfinite(pcm).all():
        raise InvalidArgumentError("the audio contains NaN or infinite samples")
    return pcm if sr == rate else np.asarray(_core.resample(pcm, sr, rate))


def transcribe(model: Model, audio: Audio, *, sample_rate: Optional[int], max_new_tokens: int) -> Transcript:
    import numpy as np

    if int(model._m.audio_sample_rate) == 0:
        raise UnsupportedError(f"'{model._m.architecture}' is not a speech model (transcribe needs e.g. Whisper)")
    if model.tokenizer is None:
        raise UnsupportedError("this speech model has no tokenizer")
    meta = model._m.metadata
    arch = str(model._m.architecture)
    sot = int(model._m.decoder_start_token)
    eot = int(model.tokenizer.eos_id)
    no_ts = int(meta[f"{arch}.no_timestamps_token_id"])
    vocab = model.vocab_size
    prompt = [sot]
    if vocab > no_ts + 1501:  # multilingual vocabularies carry one more special token than the .en ones
        tok = model.tokenizer
        prompt += tok.encode("<|en|><|transcribe|>", add_special=False, parse_special=True)
    prompt.append(no_ts)
    suppress = np.zeros(vocab, dtype=bool)
    suppress[[int(i) for i in meta.get(f"{arch}.suppress_tokens", []) if 0 <= int(i) < vocab]] = True
    suppress[sot:] = True  # special and timestamp tokens: this decoder writes plain text
    at_begin = suppress.copy()
    at_begin[[int(i) for i in meta.get(f"{arch}.suppress_tokens_at_begin", []) if 0 <= int(i) < vocab]] = True

    t0 = time.perf_counter()
    pcm = load_audio(model, audio, sample_rate)
    window = int(meta[f"{arch}.audio.context_length"]) * 2 * int(meta[f"{arch}.audio.hop_length"])
    limit = min(max_new_tokens, model.context_length - len(prompt))
    texts: list[str] = []
    all_ids: list[int] = []
    t_features = t_encode = t_decode = 0.0
    for start in range(0, pcm.size, window):
        t1 = time.perf_counter()
        features = np.asarray(model._m.audio_features(pcm[start : start + window]))
        t2 = time.perf_counter()
        session = model.session()
        session.set_encoder_states(np.asarray(model._m.encode_audio(features)))
        t3 = time.perf_counter()
        logits = session.feed(prompt)[-1]
        ids: list[int] = []
        while len(ids) < limit:
            logits = np.where(at_begin if not ids else suppress, -np.inf, logits)
            token = int(np.argmax(logits))
            if token == eot:
                break
            ids.append(token)
            logits = session.feed([token])[-1]
        t4 = time.perf_counter()
        t_features, t_encode, t_decode = t_features + t2 - t1, t_encode + t3 - t2, t_decode + t4 - t3
        all_ids += ids
        texts.append(model.detokenize(ids).strip())
    total = time.perf_counter() - t0
    seconds = pcm.size / int(model._m.audio_sample_rate)
    return Transcript(
        text=" ".join(t for t in texts if t),
        token_ids=all_ids,
        stats={
            "audio_s": seconds,
            "windows": len(texts),
            "features_s": t_features,
            "encode_s": t_encode,
            "decode_s": t_decode,
            "total_s": total,
            "real_time_factor": total / seconds if seconds > 0 else 0.0,
            "generated_tokens": len(all_ids),
        },
    )
