"""Model (read-only weights) and Session (one conversation's state), plus generation and chat."""

from __future__ import annotations

import codecs
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generator, Iterator, Optional, Sequence, Union

from pyruntime import _core
from pyruntime.errors import (
    ContextOverflowError,
    InvalidArgumentError,
    UnsupportedError,
)
from pyruntime.registry import resolve
from pyruntime.tokenizer import Tokenizer

if TYPE_CHECKING:
    import numpy as np

Prompt = Union[str, Sequence[int]]
KV_CACHE_TYPES = ("f32", "f16", "q8_0", "q4_0", "kivi4", "kivi2")
DEVICES = ("cpu", "npu", "cuda", "cuda-sim")
# A GPU session reserves its whole KV cache up front; without `context`, at most this many positions.
OUTLIER_MODES = ("on", "off")


@dataclass
class Completion:
    """A finished generation: the new text, the new token ids (end-of-generation tokens and stop
    strings excluded) and timing statistics."""

    text: str
    token_ids: list[int]
    stats: dict[str, Any]


@dataclass
class Chunk:
    """One streamed piece: the text it adds (may be empty while a UTF-8 character or a possible
    stop string is incomplete) and the token that produced it."""

    text: str
    token_id: int


class Session:
    """Per-conversation state (KV cache, position) on top of a shared, read-only :class:`Model`."""

    def __init__(self, model: Model, context: Optional[int] = None) -> None:
        self._model = model
        self._s = model._m.new_session(int(context or 0))

    def feed(self, ids: Sequence[int]) -> np.ndarray:
        """Append ``ids`` to the conversation; returns their logits, float32 ``[len(ids), vocab]``."""
        return self._feed(ids, all_logits=True)

    def _feed(self, ids: Sequence[int], all_logits: bool) -> np.ndarray:
        import numpy as np

        return np.asarray(self._feed_rows(ids, all_logits))

    def _feed_rows(self, ids: Sequence[int], all_logits: bool) -> _core.Logits:
        """Like :meth:`_feed` but returns the native logits buffer: generation samples from it
        directly, so the text path never imports numpy (~14 MiB of RSS, most of the import time)."""
        id_list = _id_list(ids)
        if not id_list:
            raise InvalidArgumentError("feed() needs at least one token id")
        return self._s.feed(id_list, all_logits, self._model.vocab_size)

    def reset(self) -> None:
        """Forget the conversation (frees the KV cache). Encoder-decoder sessions keep their
        encoder input and start the decoder again."""
        self._s.reset()

    def set_encoder(self, ids: Sequence[int]) -> None:
        """Encoder-decoder models: encode ``ids`` once, compute every decoder layer's cross-attention
        K/V from it and start a fresh decoder sequence (feed the decoder start token next)."""
        id_list = _id_list(ids)
        if not id_list:
            raise InvalidArgumentError("the encoder input needs at least one token id")
        self._s.set_encoder_input(id_list)

    def set_encoder_states(self, states: np.ndarray) -> None:
        """Like :meth:`set_encoder` with states from :meth:`Model.encode` (``[n, embedding_length]``)."""
        import numpy as np

        self._s.set_encoder_states(np.ascontiguousarray(states, dtype=np.float32))

    @property
    def encoder_length(self) -> int:
        """Encoder positions the decoder attends to (0 for decoder-only models)."""
        return int(self._s.encoder_length)

    @property
    def n_past(self) -> int:
        """Tokens held in the cache."""
        return int(self._s.n_past)

    @property
    def n_ctx(self) -> int:
        """Positions this session can hold."""
        return int(self._s.n_ctx)

    @property
    def kv_bytes(self) -> int:
        """Bytes the KV cache holds right now."""
        return int(self._s.kv_bytes)

    def save_trace(self, path: Union[str, os.PathLike[str]]) -> None:
        """Write the last delegated prefill's timeline as Chrome trace JSON (chrome://tracing,
        ui.perfetto.dev): one row per device, one box per task with its chunk and layer."""
        text = self._s.prefill_trace_json()
        if not text:
            raise UnsupportedError("no delegated prefill has run in this session (load with device='npu')")
        Path(path).write_text(text, encoding="utf-8")

    def stats(self) -> dict[str, Any]:
        """Counters of this session: positions, cache bytes, compute time, device placement."""
        s: dict[str, Any] = {}
        placement: dict[str, Any] = {}
        for k, v in self._s.stats().items():
            value = int(v) if float(v).is_integer() else float(v)
            if k.startswith("placement."):  # "placement.<device>.<counter>" -> nested
                *path, leaf = k.split(".")[1:]
                node = placement
                for part in path:
                    node = node.setdefault(part, {})
                node[leaf] = value
            else:
                s[k] = value
        s["kv_cache"] = self._model.kv_cache
        s["kv_cache_k"], s["kv_cache_v"] = self._model.kv_cache_k, self._model.kv_cache_v
        delegate = self._model.delegate
        backend = str(self._model._m.device)  # what ran every pass: "cpu", "cuda" or "cuda-sim"
        placement.update(
            {
                "kernels": _core.kernels_name() if backend == "cpu" else backend,
                "prefill_linears": delegate or backend,
                "attention": backend,
                "decode": backend,
                "fallbacks": [],
            }
        )
        if not delegate:
            placement["all"] = backend
        else:
            runs_on = str(self._model._m.delegate_runs_on)
            placement["delegate_runs_on"] = runs_on
            if runs_on == "cpu" and delegate != "reference":  # say so: the "NPU" work ran on CPU threads
                placement["fallbacks"].append(f"{delegate}: no accelerator on this machine; its graphs ran on the CPU")
        s["placement"] = placement
        return s


class Model:
    """A loaded model: memory-mapped weights shared by every :class:`Session`."""

    def __init__(
        self, native: Any, path: str, kv_cache: tuple[str, str], device: str, context: Optional[int] = None
    ) -> None:
        self._m = native
        self._path = path
        self.kv_cache_k, self.kv_cache_v = kv_cache
        self.kv_cache = kv_cache[0] if kv_cache[0] == kv_cache[1] else f"k={kv_cache[0]},v={kv_cache[1]}"
        self.device = device
        self.delegate: Optional[str] = str(native.delegate) or None
        self.prefill_chunk = int(native.prefill_chunk)
        self._default_context = context
        tok = native.tokenizer
        self.tokenizer: Optional[Tokenizer] = Tokenizer(tok) if tok is not None else None

    # ---------------------------------------------------------------- information
    @property
    def vocab_size(self) -> int:
        return int(self._m.vocab_size)

    @property
    def context_length(self) -> int:
        return int(self._m.context_length)

    @property
    def is_encoder_decoder(self) -> bool:
        """True for T5, Mu and other encoder-decoder models (see :meth:`encode`)."""
        return bool(self._m.is_encoder_decoder)

    @property
    def decoder_start_token(self) -> Optional[int]:
        """The token an encoder-decoder decoder starts from (None for decoder-only models)."""
        t = int(self._m.decoder_start_token)
        return t if t >= 0 else None

    def _eog_ids(self) -> set[int]:
        if self.tokenizer is not None:
            return set(self.tokenizer.eog_ids)
        eos = self._m.metadata.get("tokenizer.ggml.eos_token_id")  # ids-only models may still name one
        return {int(eos)} if isinstance(eos, int) else set()

    @property
    def info(self) -> dict[str, Any]:
        """What the model is: path, architecture, parameter count, tensor types, sizes."""
        meta = self._m.metadata
        return {
            "path": self._path,
            "name": meta.get("general.name", ""),
            "architecture": str(self._m.architecture),
            "n_params": int(self._m.n_params),
            "tensor_types": dict(self._m.tensor_types),
            "context_length": self.context_length,
            "encoder_decoder": self.is_encoder_decoder,
            "vocab_size": self.vocab_size,
            "file_bytes": os.path.getsize(self._path),
            "tokenizer": None if self.tokenizer is None else f"{self.tokenizer.kind}/{self.tokenizer.pre}",
            "chat_template": "tokenizer.chat_template" in meta,
            "device": self.device,
            "threads": int(self._m.threads),
            "kv_cache": self.kv_cache,
            "activations": str(self._m.activations),
            "kernels": _core.kernels_name(),
        }

    # ---------------------------------------------------------------- tokens
    def _tok(self) -> Tokenizer:
        if self.tokenizer is None:
            raise UnsupportedError(f"{self._path}: this model has no tokenizer; pass token ids instead of text")
        return self.tokenizer

    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        """Token ids of ``text`` (with BOS when the vocabulary asks for it and ``add_special``)."""
        return self._tok().encode(text, add_special=add_special)

    def detokenize(self, ids: Sequence[int]) -> str:
        return self._tok().decode(ids)

    # ---------------------------------------------------------------- compute
    def session(self, context: Optional[int] = None) -> Session:
        """A new conversation. ``context`` defaults to the value given to :func:`load`."""
        return Session(self, context or self._default_context)

    def logits(self, ids: Sequence[int], *, encoder_ids: Optional[Sequence[int]] = None) -> np.ndarray:
        """A fresh forward over ``ids``: float32 logits ``[len(ids), vocab]``. Encoder-decoder models
        take the decoder ids here and the input in ``encoder_ids``."""
        s = self.session()
        if self.is_encoder_decoder:
            if encoder_ids is None:
                raise InvalidArgumentError("encoder-decoder model: pass encoder_ids= (the input) with the decoder ids")
            s.set_encoder(encoder_ids)
        elif encoder_ids is not None:
            raise InvalidArgumentError("encoder_ids= is only for encoder-decoder models")
        return s.feed(ids)

    def encode(self, ids: Any, attention_mask: Optional[Any] = None) -> np.ndarray:
        """Encoder-decoder models: final encoder states, float32 ``[len(ids), embedding_length]``.

        A 2-D ``[batch, len]`` array encodes each row on its own (its real tokens: where
        ``attention_mask`` is 1, or every token when no mask is given) and returns
        ``[batch, len, embedding_length]`` with zeros at padded positions, which attend nowhere.
        """
        if not self.is_encoder_decoder:
            raise UnsupportedError(f"{self._path}: '{self._m.architecture}' has no encoder")
        import numpy as np

        arr = np.asarray(ids, dtype=np.int64)

        if arr.ndim == 1:
            if attention_mask is not None:
                arr = arr[np.asarray(attention_mask).reshape(-1).astype(bool)]
            return np.asarray(self._m.encode(arr))
        if arr.ndim != 2:
            raise InvalidArgumentError(f"encode() takes 1-D ids or a 2-D batch, got {arr.ndim}-D")
        mask = np.ones(arr.shape, dtype=bool) if attention_mask is None else np.asarray(attention_mask).astype(bool)
        if mask.shape != arr.shape:
            raise InvalidArgumentError(f"attention_mask has shape {mask.shape}, ids have {arr.shape}")
        out = np.zeros((arr.shape[0], arr.shape[1], int(self._m.embedding_length)), dtype=np.float32)
        positions = [np.flatnonzero(mask[b]) for b in range(arr.shape[0])]
        # One padding-free pass: the rows packed, each attending within its own input.
        states = np.asarray(self._m.encode_batch([[int(i) for i in arr[b, pos]] for b, pos in enumerate(positions)]))
        row = 0
        for b, pos in enumerate(positions):
            out[b, pos] = states[row : row + pos.size]
            row += pos.size
        return out

    def prefill(self, sessions: Sequence[Session], prompts: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """Feed one prompt (token ids) to each session; returns each prompt's last-row logits.

        With ``device="cuda"`` and fresh sessions (f16 cache) this is one padding-free pass
        (ByteTransformer): the prompts' rows packed through every linear, attention per prompt by
        prefix sums, no work on padding. Elsewhere the sessions are fed one after the other."""
        if len(sessions) != len(prompts):
            raise InvalidArgumentError(f"{len(sessions)} sessions but {len(prompts)} prompts")
        if any(s._model is not self for s in sessions):
            raise InvalidArgumentError("every session must come from this model")
        id_lists = [_id_list(p) for p in prompts]
        if not sessions:
            return []
        if any(not ids for ids in id_lists):
            raise InvalidArgumentError("every prompt needs at least one token id")
        out = self._m.prefill_batch([s._s for s in sessions], id_lists)
        return [out[i] for i in range(len(sessions))]

    def _batches_decode(self) -> bool:
        """Whether :meth:`decode` runs several sessions as one step (rather than one after the other)."""
        return bool(self._m.batches_decode)

    def decode(self, sessions: Sequence[Session], tokens: Sequence[int]) -> list[np.ndarray]:
        """Feed one token to each session (one decode step of several conversations); returns each
        session's logits.

        Llama-family models (CPU and GPU) and T5 (CPU) run it as one batched step: every linear
        over the sessions' rows (each weight read once for all of them on the CPU, for up to 8 at a
        time on the GPU), each token into its own session's cache; on ``device="cuda"`` one Lean
        Attention launch (stream-K) covers the caches however ragged their lengths. Other
        architectures feed the sessions one after the other. On the CPU with quantized weights
        each session gets the bits of its own ``feed``; elsewhere it is within the kernels'
        rounding."""
        if len(sessions) != len(tokens):
            raise InvalidArgumentError(f"{len(sessions)} sessions but {len(tokens)} tokens")
        if any(s._model is not self for s in sessions):
            raise InvalidArgumentError("every session must come from this model")
        toks = _id_list(tokens)
        if not sessions:
            return []
        out = self._m.decode_batch([s._s for s in sessions], toks)
        return [out[i] for i in range(len(sessions))]

    def _prompt_ids(self, prompt: Prompt) -> list[int]:
        return self.tokenize(prompt) if isinstance(prompt, str) else [int(i) for i in prompt]

    def generate(
        self,
        prompt: Prompt,
        *,
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        min_p: float = 0.0,
        repeat_penalty: float = 1.0,
        seed: Optional[int] = None,
        stop: Optional[Union[str, Sequence[str]]] = None,
        stream: bool = False,
    ) -> Union[Completion, Stream]:
        """Continue ``prompt`` (text, or a list of token ids). Encoder-decoder models encode the
        prompt once and decode from their decoder start token.

        ``temperature=0`` is greedy; otherwise top-k, top-p and min-p filter the distribution and a
        ``seed`` makes sampling reproducible. Generation ends at an end-of-generation token, a
        ``stop`` string (not included in the text) or ``max_new_tokens``. With ``stream=True``
        returns a :class:`Stream` of :class:`Chunk`; its ``completion`` is set when it ends.
        """
        gen = Stream(
            self,
            self._prompt_ids(prompt),
            _SamplingOptions(max_new_tokens, temperature, top_k, top_p, min_p, repeat_penalty, seed, _stop_list(stop)),
        )
        if stream:
            return gen
        for _ in gen:
            pass
        assert gen.completion is not None
        return gen.completion

    def generate_batch(
        self,
        prompts: Sequence[Prompt],
        *,
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        min_p: float = 0.0,
        repeat_penalty: float = 1.0,
        seed: Optional[int] = None,
        stop: Optional[Union[str, Sequence[str]]] = None,
    ) -> list[Completion]:
        """Continue several prompts together: one :class:`Completion` each, with the options of
        :meth:`generate` (given a ``seed``, prompt ``i`` samples with ``seed + i``).

        Each decode step of the unfinished ones is one batched step where the model batches it
        (:meth:`decode`: Llama-family models and T5 on the CPU, Llama on the GPU); with
        ``device="cuda"`` the prompts are also prefilled in one padding-free pass (f16 caches).
        Each prompt gets the tokens :meth:`generate` gives it alone (on the CPU with quantized
        weights exactly; elsewhere up to the batched kernels' rounding, where a near tie can
        flip). Time stats are shares of the batch's steps."""
        stops = _stop_list(stop)
        gens = [
            Stream(
                self,
                self._prompt_ids(p),
                _SamplingOptions(
                    max_new_tokens,
                    temperature,
                    top_k,
                    top_p,
                    min_p,
                    repeat_penalty,
                    None if seed is None else seed + i,
                    stops,
                ),
            )
            for i, p in enumerate(prompts)
        ]
        batch_prefill = bool(self._m.packs_prefill)
        replies: list[Any] = [None] * len(gens)
        active = list(range(len(gens)))
        while active:
            feeds: dict[int, _Feed] = {}
            for i in active:  # run each generation to its next feed (chunks are not needed here)
                try:
                    item = gens[i]._steps.send(replies[i])
                    while not isinstance(item, _Feed):
                        item = gens[i]._steps.send(None)
                    feeds[i] = item
                except StopIteration:
                    pass
            active = list(feeds)
            fresh = [i for i in active if gens[i]._session.n_past == 0]
            steps = [i for i in active if gens[i]._session.n_past > 0 and len(feeds[i].ids) == 1]
            rest = [i for i in active if i not in fresh and i not in steps]
            replies_now: dict[int, Any] = {}
            if batch_prefill and len(fresh) > 1 and not self.is_encoder_decoder:
                out = self.prefill([gens[i]._session for i in fresh], [feeds[i].ids for i in fresh])
                replies_now.update(zip(fresh, out))
                for i in fresh:
                    gens[i]._batched_steps += 1
            else:
                rest += fresh
            if steps:
                out = self.decode([gens[i]._session for i in steps], [feeds[i].ids[0] for i in steps])
                replies_now.update(zip(steps, out))
                if len(steps) > 1 and self._batches_decode():
                    for i in steps:
                        gens[i]._batched_steps += 1
            for i in rest:
                replies_now[i] = gens[i]._session._feed_rows(feeds[i].ids, all_logits=False)
            for i in active:
                replies[i] = replies_now[i]
        completions = [g.completion for g in gens]
        assert all(c is not None for c in completions)
        return [c for c in completions if c is not None]

    def transcribe(self, audio: Any, *, sample_rate: Optional[int] = None, max_new_tokens: int = 224) -> Any:
        """Speech models (Whisper): transcribe a WAV file path or an array of samples (mono, or
        ``[samples, channels]``) at ``sample_rate`` (default: the model's rate; other rates are
        resampled). Audio longer than the model's window (30 s) is transcribed window by window.
        Returns a :class:`pyruntime.speech.Transcript` (text, token_ids, stats)."""
        from pyruntime.speech import transcribe

        return transcribe(self, audio, sample_rate=sample_rate, max_new_tokens=max_new_tokens)

    def chat(
        self, messages: Sequence[dict[str, str]], *, template: Optional[str] = None, **kwargs: Any
    ) -> Union[Completion, Stream]:
        """Generate the assistant's reply to ``messages`` (``[{"role": ..., "content": ...}]``),
        formatted with the GGUF chat template (or ``template``). Takes the options of
        :meth:`generate`."""
        from pyruntime.chat import render_chat

        meta = self._m.metadata
        tmpl = template or meta.get("tokenizer.chat_template")
        if not tmpl:
            raise UnsupportedError(f"{self._path}: no chat template in the file; pass template=...")
        tok = self._tok()
        bos = tok._t.token_text(tok.bos_id) if tok.bos_id >= 0 else ""
        eos = tok._t.token_text(tok.eos_id) if tok.eos_id >= 0 else ""
        text = render_chat(tmpl, messages, bos_token=bos, eos_token=eos)
        ids = tok.encode(text, add_special=False, parse_special=True)
        return self.generate(ids, **kwargs)


@dataclass
class _Feed:
    """A generation's request: feed ``ids`` to its session and send back the last row's logits."""

    ids: list[int]


@dataclass
class _SamplingOptions:
    max_new_tokens: int
    temperature: float
    top_k: int
    top_p: float
    min_p: float
    repeat_penalty: float
    seed: Optional[int]
    stop: list[str] = field(default_factory=list)


def _id_list(ids: Any) -> list[int]:
    """Token ids as a flat list of ints; numpy is imported only for inputs that are not one already."""
    if isinstance(ids, (list, tuple)) and all(type(i) is int for i in ids):
        return list(ids)
    import numpy as np

    arr = np.asarray(ids)
    if arr.size and arr.dtype.kind not in "iu":  # 1.5 or True is no token id: never truncate silently
        raise InvalidArgumentError(f"token ids must be integers, got {arr.dtype} values")
    return [int(i) for i in arr.reshape(-1)]


def _stop_list(stop: Optional[Union[str, Sequence[str]]]) -> list[str]:
    if stop is None:
        return []
    items = [stop] if isinstance(stop, str) else list(stop)
    if any(not s for s in items):
        raise InvalidArgumentError("stop strings must not be empty")
    return items


def _held_back(text: str, stops: list[str]) -> int:
    """How many trailing characters of ``text`` could start a stop string (must not be shown yet)."""
    hold = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                hold = max(hold, k)
                break
    return hold


class Stream:
    """Iterator of :class:`Chunk` for one generation; ``completion`` is set once it is exhausted."""

    def __init__(self, model: Model, ids: list[int], opt: _SamplingOptions) -> None:
        if not ids:
            raise InvalidArgumentError("the prompt is empty: give at least one token")
        if opt.max_new_tokens < 0:
            raise InvalidArgumentError("max_new_tokens must be >= 0")
        vocab = model.vocab_size
        bad = [i for i in ids if i < 0 or i >= vocab]
        if bad:
            from pyruntime.errors import TokenOutOfRangeError

            raise TokenOutOfRangeError(f"token id {bad[0]} is outside the vocabulary (0..{vocab - 1})")
        self._session = model.session()
        if len(ids) > self._session.n_ctx and not model.is_encoder_decoder:
            raise ContextOverflowError(f"the prompt has {len(ids)} tokens but the context holds {self._session.n_ctx}")
        self._model = model
        self._ids = ids
        self._opt = opt
        seed = opt.seed if opt.seed is not None else int.from_bytes(os.urandom(8), "little")
        self._sampler = _core.Sampler(opt.temperature, opt.top_k, opt.top_p, opt.min_p, opt.repeat_penalty, 64, seed)
        self.completion: Optional[Completion] = None
        self._batched_steps = 0  # feeds that ran in one batched step with other generations
        self._steps = self._run()
        self._iter = self._drive()

    def __iter__(self) -> Iterator[Chunk]:
        return self._iter

    def __next__(self) -> Chunk:
        return next(self._iter)

    def _drive(self) -> Iterator[Chunk]:
        """Runs the generation alone: each feed request goes straight to its session."""
        reply: Any = None
        while True:
            try:
                item = self._steps.send(reply)
            except StopIteration:
                return
            if isinstance(item, _Feed):
                reply = self._session._feed_rows(item.ids, all_logits=False)
            else:
                reply = None
                yield item

    def _run(self) -> Generator[Union[Chunk, _Feed], Any, None]:
        """The generation as steps: yields text chunks, and a :class:`_Feed` wherever it needs the
        logits of ids fed to its session (sent back in). The driver decides how feeds run: alone
        (:meth:`_drive`) or batched with other generations (:meth:`Model.generate_batch`)."""
        opt, model, sess = self._opt, self._model, self._session
        tok = model.tokenizer
        eog = model._eog_ids()
        strip_first_space = model.is_encoder_decoder and tok is not None and tok.kind in ("spm", "unigram")
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        decoder_ids = self._ids
        t0 = time.perf_counter()
        if model.is_encoder_decoder:
            sess.set_encoder(self._ids)
            decoder_ids = [int(model._m.decoder_start_token)]
        else:
            for i in self._ids[-64:]:
                self._sampler.accept(i)
        logits = yield _Feed(decoder_ids)
        t_prefill = time.perf_counter() - t0
        new_ids: list[int] = []
        text = ""  # everything decoded so far
        shown = 0  # characters of `text` already yielded
        finish = "length"
        ttft: Optional[float] = None
        t_decode0 = time.perf_counter()
        while len(new_ids) < opt.max_new_tokens:
            token = int(self._sampler.sample(logits))
            if ttft is None:
                ttft = time.perf_counter() - t0
            if token in eog:
                finish = "stop"
                break
            self._sampler.accept(token)
            new_ids.append(token)
            if tok is not None:
                piece = decoder.decode(tok.token_bytes(token))
                if strip_first_space and not text and piece.startswith(" "):
                    piece = piece[1:]  # a fresh SentencePiece sequence: its "▁" prefix is not text
                text += piece
            hit = min((p for p in (text.find(s) for s in opt.stop) if p >= 0), default=-1)
            if hit >= 0:
                text = text[:hit]
                finish = "stop"
                if len(text) > shown:
                    yield Chunk(text[shown:], token)
                shown = len(text)
                break
            visible = len(text) - _held_back(text, opt.stop)
            yield Chunk(text[shown:visible] if visible > shown else "", token)
            shown = max(shown, visible)
            if len(new_ids) >= opt.max_new_tokens:
                break
            if sess.n_past >= sess.n_ctx:
                finish = "context"
                break
            logits = yield _Feed([token])
        if finish == "length" and tok is not None:
            text += decoder.decode(b"", final=True)
            if len(text) > shown:
                yield Chunk(text[shown:], new_ids[-1] if new_ids else -1)
        t_end = time.perf_counter()
        n_dec = max(len(new_ids) - 1, 0)
        decode_s = t_end - t_decode0 - (ttft - t_prefill if ttft is not None else 0.0)
        self.completion = Completion(
            text=text,
            token_ids=new_ids,
            stats={
                "prompt_tokens": len(self._ids),
                "generated_tokens": len(new_ids),
                "ttft_s": ttft if ttft is not None else t_prefill,
                "prefill_s": t_prefill,
                "prefill_tok_s": len(self._ids) / t_prefill if t_prefill > 0 else 0.0,
                "decode_tok_s": n_dec / decode_s if n_dec > 0 and decode_s > 0 else 0.0,
                "total_s": t_end - t0,
                "finish_reason": finish,
                "kv_bytes": sess.kv_bytes,
                "batched_steps": self._batched_steps,
            },
        )


def load(
    path_or_name: Union[str, os.PathLike[str]],
    *,
    device: str = "cpu",
    threads: Optional[int] = None,
    kv_cache: str = "f16",
    context: Optional[int] = None,
    kv_cache_k: Optional[str] = None,
    kv_cache_v: Optional[str] = None,
    activations: str = "q8",
    delegate: Optional[str] = None,
    chunk: Optional[int] = None,
    outliers: str = "on",
    overlap: bool = True,
    delegate_threads: Optional[int] = None,
    weight_scales: str = "per-channel",
) -> Model:
    """Load a GGUF file, or a registered model name (pulled into the cache on first use).

    ``threads`` defaults to the number of cores (at most 8). ``kv_cache`` is the KV cache format:
    ``f32``, ``f16`` (default), ``q8_0``, ``q4_0`` (llama.cpp blocks along the head dimension),
    ``kivi4`` or ``kivi2`` (KIVI: keys per channel, values per token, fp16 residual window; options
    as in ``kivi2-g32-r128-s4-clip``: group G, window R, the first S tokens kept in fp16 (attention
    sinks, default 4), ``-clip`` / ``-noclip`` whether key groups' ranges are fitted for least error
    (default on at 2 bits); ``kivi2-s0-noclip`` is the KIVI paper's algorithm exactly);
    ``kv_cache_k`` / ``kv_cache_v`` set keys and values
    separately. ``context`` caps the positions per session (default: the model's trained context;
    memory is only taken as positions fill). ``activations="q8"`` (default) multiplies Q8_0/Q4_0/Q4_1
    weights with activations quantized to 8 bits per block of 32 (integer dot products, like
    llama.cpp); ``"f32"`` keeps activations in float (slower, the exact reference path).

    ``device="cuda"`` runs Llama-family decoders and T5 encoder-decoders on an NVIDIA GPU with the
    project's own kernels: weights on the GPU (Q8_0/Q4_0/Q4_1/F16 as stored, other types as fp16), a
    KV cache reserved for the whole context (``context``, default ``min(trained context, 4096)``;
    ``kv_cache`` f16, q8_0, q4_0 or KIVI for Llama, f16 for T5), prompts through the tensor-core GEMM and
    FlashAttention over the cache, decode through the quantized GEMV and split-K decode attention;
    T5 encodes and computes its cross-attention K/V once per input. ``device="cuda-sim"`` runs the
    same code on the CUDA simulator on the CPU (kernels/sim; for tests, very slow).
    ``Session.stats()`` says what ran (passes, tokens, weights converted to fp16).

    ``device="npu"`` runs the linears of prompt prefill as W8A8 graphs of static shape ``[chunk, d]``
    on ``delegate`` (``"reference"``: the built-in exact int8 executor; see ``builtin_delegates()``),
    with attention, RoPE, norms and the KV cache on the CPU and decode on the CPU. It needs a
    calibrated file (``pyrt-convert MODEL.gguf -o OUT.gguf --calibrate TEXT.txt``). ``outliers="on"``
    corrects activations beyond the calibrated ranges on the CPU in float (shadow execution).
    ``chunk`` (default 128 on the NPU, off on the CPU) cuts prompts into fixed-size chunks, the last
    one padded; padding never reaches the KV cache. ``overlap`` runs the delegate's work for one chunk
    while the CPU attends for the previous one (out of order, from a dependency graph; off: one stage
    after the other). ``Session.stats()["placement"]`` says what ran where;
    ``Session.save_trace(path)`` writes the last prefill's timeline (Chrome trace JSON).
    ``delegate_threads`` (default: ``threads``) are the CPU threads of delegates that compute on the
    CPU (the reference delegate, onnxruntime's CPU provider). ``weight_scales="per-channel"`` (default)
    gives every output channel of a W8A8 weight its own scale; ``"per-tensor"`` is SPEC 5.1's single
    scale (for NPUs that take only that).
    """
    if device not in DEVICES:
        raise UnsupportedError(f"device '{device}' is not available in this build (available: {', '.join(DEVICES)})")
    kv_k = _core.kv_spec_name(kv_cache_k or kv_cache)  # validates; raises InvalidArgumentError naming the value
    kv_v = _core.kv_spec_name(kv_cache_v or kv_cache)
    if threads is not None and threads < 1:
        raise InvalidArgumentError("threads must be >= 1")
    if context is not None and context < 1:
        raise InvalidArgumentError("context must be >= 1")
    path = str(resolve(path_or_name))
    if activations not in ("q8", "f32"):
        raise InvalidArgumentError(f"activations must be 'q8' or 'f32', got {activations!r}")
    if outliers not in OUTLIER_MODES:
        raise InvalidArgumentError(f"outliers must be 'on' or 'off', got {outliers!r}")
    if device == "npu":
        delegate = delegate or "reference"
        chunk = 128 if chunk is None else chunk
    elif delegate is not None:
        raise InvalidArgumentError(f"delegate={delegate!r} needs device='npu'")
    if weight_scales not in ("per-channel", "per-tensor"):
        raise InvalidArgumentError(f"weight_scales must be 'per-channel' or 'per-tensor', got {weight_scales!r}")
    if delegate_threads is not None and delegate_threads < 1:
        raise InvalidArgumentError("delegate_threads must be >= 1")
    if chunk is not None and not 1 <= chunk <= 4096:
        raise InvalidArgumentError(f"chunk must be in 1..4096, got {chunk}")
    native = _core.Model.load(
        path,
        int(threads or 0),
        kv_k,
        kv_v,
        int(context or 0),
        activations,
        chunk=int(chunk or 0),
        delegate=delegate or "",
        outliers=outliers == "on",
        overlap=overlap,
        delegate_threads=int(delegate_threads or 0),
        per_channel_weights=weight_scales == "per-channel",
        device=device,
    )
    return Model(native, path, (kv_k, kv_v), device, context)
