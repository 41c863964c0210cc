"""Quantized KV caches (SPEC 4): the KIVI quantizer and schedule, attention read straight from every
compressed format vs dequantize-then-attend, and whole-model behaviour with each cache type."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest

import pyruntime
from pyruntime import _core
from pyruntime.errors import InvalidArgumentError
from tests.conftest import mean_kl

FORMATS = [
    "f32",
    "f16",
    "q8_0",
    "q4_0",
    "kivi4",
    "kivi2",
    "kivi2-g32-r32",
    "kivi4-g16-r64",
    "kivi2-s0-noclip",
    "kivi4-g16-r32-s5-clip",
]


def kivi_ref(x: np.ndarray, bits: int) -> tuple[np.uint16, np.uint16, bytes, np.ndarray]:
    """SPEC 4.1 in numpy: fp16 min and scale; codes = round(clamp((x - mn) / s, 0, 2^b - 1)), half to
    even, against the stored fp16 values; s = 0 gives codes 0; packed LSB first. Returns the dequantized
    values too."""
    qmax = (1 << bits) - 1
    x = x.astype(np.float32)
    mn = np.float16(x.min())
    s = np.float16((x.max() - x.min()) / np.float32(qmax))
    m32, s32 = np.float32(mn), np.float32(s)
    if s32 == 0:
        codes = np.zeros(x.size, np.int64)
    else:
        codes = np.rint(np.clip((x - m32) / s32, 0, qmax)).astype(np.int64)
    per_byte = 8 // bits
    packed = np.zeros((x.size + per_byte - 1) // per_byte, np.uint8)
    for i, c in enumerate(codes):
        packed[i // per_byte] |= np.uint8(c << ((i % per_byte) * bits))
    return mn.view(np.uint16), s.view(np.uint16), packed.tobytes(), codes * s32 + m32


@pytest.mark.parametrize("bits", [2, 4])
def test_kivi_quantizer_matches_spec(bits: int) -> None:
    rng = np.random.default_rng(bits)
    groups = [rng.standard_normal(32) * 3, np.full(32, 1.25), np.arange(32) * 0.5 - 4, rng.standard_normal(32) * 1e-3]
    for g in groups:
        g = g.astype(np.float32)
        scale, mn, codes = _core.kivi_quantize(g, bits)
        want_mn, want_s, want_codes, deq = kivi_ref(g, bits)
        assert (scale, mn, codes) == (int(want_s), int(want_mn), want_codes)
        assert np.isfinite(deq).all()
    # constant group: no NaN, the minimum carries the value exactly
    scale, mn, codes = _core.kivi_quantize(np.full(32, 1.25, np.float32), bits)
    assert scale == 0 and np.uint16(mn).view(np.float16) == np.float16(1.25) and set(codes) == {0}


def decode_group(scale: int, mn: int, codes: bytes, n: int, bits: int) -> np.ndarray:
    """Dequantizes one packed KIVI group (codes LSB first) with its fp16 scale and minimum."""
    per_byte = 8 // bits
    packed = np.frombuffer(codes, np.uint8)
    q = np.array([(packed[i // per_byte] >> ((i % per_byte) * bits)) & ((1 << bits) - 1) for i in range(n)])
    s32 = np.float32(np.uint16(scale).view(np.float16))
    m32 = np.float32(np.uint16(mn).view(np.float16))
    return q.astype(np.float32) * s32 + m32


def group_error(x: np.ndarray, lo: float, hi: float, bits: int) -> float:
    """Squared error of x quantized over [lo, hi] with fp16 scale and minimum (None if degenerate)."""
    qmax = (1 << bits) - 1
    m32 = np.float32(np.float16(lo))
    s32 = np.float32(np.float16((np.float32(hi) - np.float32(lo)) / np.float32(qmax)))
    if not s32 > 0:
        return np.inf
    q = np.rint(np.clip((x - m32) / s32, 0, qmax))
    return float(((q * s32 + m32 - x).astype(np.float64) ** 2).sum())


@pytest.mark.parametrize("bits", [2, 4])
def test_clipped_kivi_groups_pick_the_least_error_range(bits: int) -> None:
    """`-clip` keys: the range may shrink from either end in steps of 4% of max - min (up to 32%); the
    stored scale and minimum are the grid point with the least squared error, never worse than plain
    min-max; codes are consistent with what is stored; a constant group still gives no NaN."""
    rng = np.random.default_rng(10 + bits)
    outlier = rng.standard_normal(32)
    outlier[7] = 12.0
    groups = [rng.standard_normal(32), outlier, rng.standard_t(2, 32), np.arange(32) * 0.25]
    for g in groups:
        g = g.astype(np.float32)
        scale, mn, codes = _core.kivi_quantize(g, bits, clip=True)
        got = decode_group(scale, mn, codes, 32, bits)
        got_err = float(((got - g).astype(np.float64) ** 2).sum())
        lo, hi = g.min(), g.max()
        rng_ = np.float32(hi - lo)
        grid = [
            group_error(g, lo + rng_ * np.float32(0.04) * a, hi - rng_ * np.float32(0.04) * b, bits)
            for a in range(9)
            for b in range(9)
        ]
        assert got_err <= min(grid) * (1 + 1e-5) + 1e-12
        plain = decode_group(*_core.kivi_quantize(g, bits), 32, bits)
        assert got_err <= float(((plain - g).astype(np.float64) ** 2).sum()) * (1 + 1e-6)
    # the outlier group really is clipped at 2 bits: the range shrinks, the bulk gains resolution
    if bits == 2:
        s_clip = np.uint16(_core.kivi_quantize(groups[1].astype(np.float32), 2, clip=True)[0]).view(np.float16)
        s_plain = np.uint16(_core.kivi_quantize(groups[1].astype(np.float32), 2)[0]).view(np.float16)
        assert s_clip < s_plain
    scale, mn, codes = _core.kivi_quantize(np.full(32, -3.5, np.float32), bits, clip=True)
    assert scale == 0 and np.uint16(mn).view(np.float16) == np.float16(-3.5) and set(codes) == {0}


@pytest.mark.parametrize("T", [1, 3, 4, 5, 36, 200])
def test_kivi_sink_tokens_stay_fp16(T: int) -> None:
    """`-s4`: the first 4 tokens are held in fp16 for good; the KIVI schedule runs on the rest as if they
    were the whole sequence (sizes after a prefill of T and 140 decode steps)."""
    S, R = 4, 32
    k = _core.KvStore(f"kivi2-r{R}-s{S}", True, 1, 64)
    v = _core.KvStore(f"kivi2-r{R}-s{S}", False, 1, 64)
    rng = np.random.default_rng(T)
    total = kq = kf = 0
    for step, n in enumerate([T] + [1] * 140):
        for st in (k, v):
            st.append(rng.standard_normal((n, 64)).astype(np.float32))
            st.finish_step()
        to_window = max(total + n - S, 0) - max(total - S, 0)  # tokens past the sink
        total += n
        if step == 0:  # prefill: every whole R of the keys past the sink is quantized
            kq, kf = to_window - to_window % R, to_window % R
        elif to_window:
            kf += 1
            if kf == R:
                kq, kf = kq + R, 0
        rest = max(total - S, 0)
        assert k.split_sizes() == (kq, min(total, S) + kf)
        assert v.split_sizes() == (rest - min(rest, R), min(total, S) + min(rest, R))
        assert k.size == v.size == total


@pytest.mark.parametrize("T", [1, 31, 32, 33, 127, 128, 129])
@pytest.mark.parametrize("R", [32, 128])
def test_kivi_schedule(T: int, R: int) -> None:
    """Sizes of (K quantized, K fp16, V quantized, V fp16) after a prefill of T and 40 decode steps."""
    spec = f"kivi2-g32-r{R}-s0-noclip"  # the paper's schedule; the sink is tested below
    k = _core.KvStore(spec, True, 2, 64)
    v = _core.KvStore(spec, False, 2, 64)
    rng = np.random.default_rng(T)

    def step(n: int) -> None:
        k.append(rng.standard_normal((n, 128)).astype(np.float32))
        v.append(rng.standard_normal((n, 128)).astype(np.float32))
        k.finish_step()
        v.finish_step()

    step(T)
    kq, kf = T - T % R, T % R
    assert k.split_sizes() == (kq, kf)
    assert v.split_sizes() == (T - min(T, R), min(T, R))
    total = T
    for _ in range(40):
        step(1)
        total += 1
        kf += 1
        if kf == R:  # the buffer reached R: all R keys are quantized after this step's attention
            kq, kf = kq + R, 0
        assert k.split_sizes() == (kq, kf)
        assert v.split_sizes() == (total - min(total, R), min(total, R))
        assert k.size == v.size == total


def dequantized_rows(spec: str, keys: bool, rows: np.ndarray, n_heads: int, d: int) -> np.ndarray:
    """What a store holds, dequantized by an independent path (numpy / the quantizer references)."""
    if spec == "f32":
        return rows.astype(np.float64)
    if spec == "f16":
        return rows.astype(np.float16).astype(np.float64)
    if spec in ("q8_0", "q4_0"):
        out = [_core.dequantize(spec.upper(), _core.quantize(spec.upper(), r), r.size) for r in rows]
        return np.stack(out).astype(np.float64)
    bits = int(spec[4])
    G, R, S, clip = 32, 128, 4, bits == 2  # defaults: a 4-token sink, key clipping at 2 bits
    for opt in spec.split("-")[1:]:
        if opt in ("clip", "noclip"):
            clip = opt == "clip"
        else:
            G, R, S = [int(opt[1:]) if opt[0] == c else v for c, v in zip("grs", (G, R, S))]
    clip = clip and keys  # clipping applies to key groups only
    T, n = rows.shape
    f16 = rows.astype(np.float16).astype(np.float32)  # the window holds fp16; quantization reads it
    out = f16.astype(np.float64)
    rest = f16[S:]  # the first S tokens (the sink) stay fp16; the schedule runs on what follows

    def deq(x: np.ndarray) -> np.ndarray:
        if clip:
            return decode_group(*_core.kivi_quantize(x, bits, clip=True), x.size, bits)
        return kivi_ref(x, bits)[3]

    if keys:
        nq = len(rest) // R * R
        for g0 in range(0, nq, G):
            for ch in range(n):
                out[S + g0 : S + g0 + G, ch] = deq(rest[g0 : g0 + G, ch])
    else:
        nq = max(len(rest) - R, 0)
        for t in range(nq):
            for g0 in range(0, n, G):
                out[S + t, g0 : g0 + G] = deq(rest[t, g0 : g0 + G])
    return out


def filled_store(spec: str, keys: bool, rows: np.ndarray, n_heads: int, d: int) -> Any:
    """A store holding `rows` as after a prefill (the KIVI schedule applied)."""
    st = _core.KvStore(spec, keys, n_heads, d)
    st.append(rows)
    st.finish_step()
    return st


@pytest.fixture(params=["generic", "avx2"])
def kernel_table(request: pytest.FixtureRequest) -> Iterator[str]:
    if not _core.set_kernels(request.param):
        pytest.skip(f"this CPU has no {request.param} kernels")
    yield request.param
    _core.set_kernels("auto")


@pytest.mark.parametrize("spec", FORMATS)
@pytest.mark.parametrize("T", [1, 33, 200])
def test_attention_reads_compressed_cache_exactly(spec: str, T: int, kernel_table: str) -> None:
    """SPEC 4.3.6: scores and value sums from the compressed cache equal exact math on the dequantized
    cache within 1e-5 relative (only fp32 summation order differs), with every kernel table, over all
    tokens and over a prefix that ends inside a quantized group."""
    n_heads, d = 3, 64
    rng = np.random.default_rng(T)
    rows = rng.standard_normal((T, n_heads * d)).astype(np.float32)
    for keys in (True, False):
        st = filled_store(spec, keys, rows, n_heads, d)
        deq = dequantized_rows(spec, keys, rows, n_heads, d)
        for n in sorted({T, min(T, T // 2 + 3)}):
            for h in range(n_heads):
                block = deq[:n, h * d : (h + 1) * d]
                if keys:
                    q = rng.standard_normal(d).astype(np.float32)
                    got = st.dot_keys(h, q, n)
                    want = block @ q.astype(np.float64)
                    bound = 1e-5 * (np.abs(block) @ np.abs(q)) + 1e-6
                else:
                    p = rng.random(n).astype(np.float32)
                    p /= p.sum()
                    got = st.accumulate(h, p, d)
                    want = p.astype(np.float64) @ block
                    bound = 1e-5 * (p @ np.abs(block)) + 1e-6
                assert (np.abs(got - want) <= bound).all(), (spec, keys, n, h, np.abs(got - want).max())


@pytest.mark.parametrize("spec", FORMATS)
@pytest.mark.parametrize("nq", [2, 3, 4, 7])
def test_query_groups_get_the_single_query_numbers(spec: str, nq: int, kernel_table: str) -> None:
    """GQA: nq query heads read one KV head in one call (KIVI unpacks the codes once for all of them);
    every query's scores and value sums are bit for bit what it gets alone."""
    n_heads, d, T = 2, 64, 300
    rng = np.random.default_rng(nq)
    rows = rng.standard_normal((T, n_heads * d)).astype(np.float32)
    for keys in (True, False):
        st = filled_store(spec, keys, rows, n_heads, d)
        for h in range(n_heads):
            if keys:
                q = rng.standard_normal((nq, d)).astype(np.float32)
                together = st.dot_keys(h, q, T)
                alone = np.stack([st.dot_keys(h, q[i], T) for i in range(nq)])
            else:
                p = rng.random((nq, T)).astype(np.float32)
                together = st.accumulate(h, p, d)
                alone = np.stack([st.accumulate(h, p[i], d) for i in range(nq)])
            assert together.shape == alone.shape
            np.testing.assert_array_equal(together, alone)


@pytest.mark.parametrize("spec", FORMATS)
def test_blocked_reads_from_a_key_offset(spec: str, kernel_table: str) -> None:
    """Prefill's blocked reads over tokens key0.. (the online-softmax tiles) give, row by row, the
    single calls' numbers for those tokens: their bits at key0 = 0, and within 1e-5 of the full-range
    call's slice past it (a range that starts elsewhere may group its keys' sums differently)."""
    n_heads, d, T = 2, 64, 150
    rng = np.random.default_rng(5)
    rows = rng.standard_normal((T, n_heads * d)).astype(np.float32)
    n_of = [0, 1, 5, 33, 40, 40, 17]
    for key0 in (0, 3, 64, 110):
        ks, vs = filled_store(spec, True, rows, n_heads, d), filled_store(spec, False, rows, n_heads, d)
        q = rng.standard_normal((len(n_of), d)).astype(np.float32)
        p = rng.random((len(n_of), max(n_of))).astype(np.float32)
        for i, c in enumerate(n_of):
            p[i, c:] = 0.0
        for h in range(n_heads):
            scores = ks.dot_keys_rows(h, q, n_of, key0)
            sums = vs.accumulate_rows(h, p, n_of, key0)
            for i, c in enumerate(n_of):
                full = ks.dot_keys(h, q[i], key0 + c)[key0:]
                padded = np.concatenate([np.zeros(key0, np.float32), p[i, :c]])
                want = vs.accumulate(h, padded, d) if c else np.zeros(d, np.float32)
                if key0 == 0:
                    np.testing.assert_array_equal(scores[i, :c], full)
                else:
                    np.testing.assert_allclose(scores[i, :c], full, rtol=1e-5, atol=1e-5)
                np.testing.assert_allclose(sums[i], want, rtol=1e-5, atol=1e-6)


def _attention_reference(
    k: np.ndarray, v: np.ndarray, q: np.ndarray, q_pos0: int, n_heads: int, causal: bool
) -> np.ndarray:
    """float64 softmax(q k^T / sqrt(d)) v per head, grouped KV heads, causal bottom-right."""
    T, d = q.shape[0], q.shape[1] // n_heads
    n_kv = k.shape[1] // d
    out = np.zeros((T, n_heads * d))
    for h in range(n_heads):
        g = h // (n_heads // n_kv)
        kh, vh = k[:, g * d : (g + 1) * d].astype(np.float64), v[:, g * d : (g + 1) * d].astype(np.float64)
        s = q[:, h * d : (h + 1) * d].astype(np.float64) @ kh.T / np.sqrt(d)
        if causal:
            s = np.where(np.arange(k.shape[0])[None, :] <= q_pos0 + np.arange(T)[:, None], s, -np.inf)
        s = np.exp(s - s.max(axis=1, keepdims=True))
        out[:, h * d : (h + 1) * d] = (s / s.sum(axis=1, keepdims=True)) @ vh
    return out


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("q_pos0, T", [(0, 300), (263, 37)])
def test_prompt_attention_online_softmax_tiles(causal: bool, q_pos0: int, T: int, kernel_table: str) -> None:
    """Prompt attention over an f16 cache, taken in key tiles with an online softmax (tiles of 7 and 64
    keys, one tile of everything) and in one exact pass: all within 2e-6 of float64 attention over the
    same fp16 keys and values, and the tiled runs really are another summation (not the exact pass's bits)."""
    n_heads, n_kv, d, n_keys = 4, 2, 64, 300
    rng = np.random.default_rng(q_pos0 + T)
    k = rng.standard_normal((n_keys, n_kv * d)).astype(np.float32)
    v = rng.standard_normal((n_keys, n_kv * d)).astype(np.float32)
    q = (2.0 * rng.standard_normal((T, n_heads * d))).astype(np.float32)
    ks, vs = filled_store("f16", True, k, n_kv, d), filled_store("f16", False, v, n_kv, d)
    want = _attention_reference(k.astype(np.float16), v.astype(np.float16), q, q_pos0, n_heads, causal)
    exact = _core.attend(ks, vs, q, q_pos0, n_keys, n_heads, causal)
    assert np.abs(exact - want).max() <= 2e-6 * np.abs(v).max()
    for online_from, tile in [(16, 7), (16, 64), (1, 1000)]:
        got = _core.attend(ks, vs, q, q_pos0, n_keys, n_heads, causal, online_from=online_from, key_tile=tile)
        assert np.abs(got - want).max() <= 2e-6 * np.abs(v).max(), (online_from, tile)
        assert not np.array_equal(got, exact), (online_from, tile)


def test_rows_across_the_online_threshold_keep_their_bits_in_any_chunking() -> None:
    """Whether a row takes the exact pass or the tiles depends on its own key count only: a prompt
    whose rows cross the threshold gives the same bits in one call and in chunks of 7 or 24."""
    n_heads, n_kv, d = 2, 1, 64
    rng = np.random.default_rng(4)
    k = rng.standard_normal((400, n_kv * d)).astype(np.float32)
    v = rng.standard_normal((400, n_kv * d)).astype(np.float32)
    q = rng.standard_normal((100, n_heads * d)).astype(np.float32)
    ks, vs = filled_store("f16", True, k, n_kv, d), filled_store("f16", False, v, n_kv, d)
    opts = {"online_from": 330, "key_tile": 64}  # rows at positions 300..399 hold 301..400 keys
    whole = _core.attend(ks, vs, q, 300, 400, n_heads, **opts)
    for chunk in (7, 24):
        parts = [
            _core.attend(ks, vs, q[c : c + chunk], 300 + c, 300 + min(c + chunk, 100), n_heads, **opts)
            for c in range(0, 100, chunk)
        ]
        np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_long_prompt_attention_takes_the_tiles_by_default() -> None:
    """Past 2048 keys a prompt block goes tile by tile without being asked; a row that short of it
    keeps the exact pass (decode's bits)."""
    n_heads, n_kv, d, n_keys, T = 2, 1, 64, 2600, 24
    rng = np.random.default_rng(9)
    k = rng.standard_normal((n_keys, n_kv * d)).astype(np.float32)
    v = rng.standard_normal((n_keys, n_kv * d)).astype(np.float32)
    q = rng.standard_normal((T, n_heads * d)).astype(np.float32)
    ks, vs = filled_store("f16", True, k, n_kv, d), filled_store("f16", False, v, n_kv, d)
    want = _attention_reference(k.astype(np.float16), v.astype(np.float16), q, n_keys - T, n_heads, True)
    by_default = _core.attend(ks, vs, q, n_keys - T, n_keys, n_heads)
    exact = _core.attend(ks, vs, q, n_keys - T, n_keys, n_heads, online_from=10**9)
    assert np.abs(by_default - want).max() <= 2e-6 * np.abs(v).max()
    assert not np.array_equal(by_default, exact)
    short = _core.attend(ks, vs, q, 2000 - T, 2000, n_heads)
    np.testing.assert_array_equal(short, _core.attend(ks, vs, q, 2000 - T, 2000, n_heads, online_from=10**9))


@pytest.mark.parametrize(
    "spec, keys, call, message",
    [
        ("kivi4", True, lambda st: st.dot_keys(2, np.zeros(64, np.float32), 10), "head 2 outside 0..1"),
        ("kivi4", True, lambda st: st.dot_keys(0, np.zeros(32, np.float32), 10), "q has 32 values per row, the head"),
        ("kivi4", True, lambda st: st.dot_keys(0, np.zeros(64, np.float32), 41), "n = 41 outside the 40 stored"),
        ("q8_0", False, lambda st: st.accumulate(0, np.ones(41, np.float32), 64), "41 weights but 40 stored tokens"),
        ("q8_0", False, lambda st: st.accumulate(0, np.ones(40, np.float32), 32), "head_dim 32, the store's is 64"),
        ("q8_0", False, lambda st: st.accumulate(0, np.ones((1, 1, 5), np.float32), 64), "1-D or 2-D"),
    ],
)
def test_store_rejects_bad_arguments(spec: str, keys: bool, call: Callable[[Any], Any], message: str) -> None:
    st = _core.KvStore(spec, keys, 2, 64)
    st.append(np.zeros((40, 128), np.float32))
    with pytest.raises(InvalidArgumentError, match=message):
        call(st)


def test_bytes_per_token_relative_to_f16() -> None:
    n_heads, d, T = 3, 64, 4096
    rows = np.random.default_rng(0).standard_normal((T, n_heads * d)).astype(np.float32)
    total = {}
    for spec in ("f16", "q8_0", "q4_0", "kivi4", "kivi2", "kivi2-s0-noclip"):
        total[spec] = 0
        for keys in (True, False):
            st = _core.KvStore(spec, keys, n_heads, d)
            st.append(rows)
            st.finish_step()
            total[spec] += st.bytes
    ratio = {spec: total[spec] / total["f16"] for spec in total}
    # q8_0 is 8.5 bits, q4_0 4.5. kivi2, bytes relative to f16 per quantized token: 2-bit codes (0.125)
    # + fp16 scale and min per 32 (0.0625). The paper's schedule (-s0-noclip) keeps the 128 newest values
    # in fp16 (all 4096 keys are quantized: 4096 % 128 == 0): 0.1875 * (8192 - 128) / 8192 + 128 / 8192.
    # With the default 4-token sink the keys' schedule starts after it, so 4092 % 128 = 124 keys stay fp16:
    # keys 3968 quantized + 128 fp16, values 3964 + 132.
    assert ratio["q8_0"] == pytest.approx(8.5 / 16, rel=0.02)
    assert ratio["q4_0"] == pytest.approx(4.5 / 16, rel=0.02)
    assert ratio["kivi2-s0-noclip"] == pytest.approx((0.1875 * (8192 - 128) + 128) / 8192, rel=1e-3)
    assert ratio["kivi2"] == pytest.approx((0.1875 * (3968 + 3964) + 128 + 132) / 8192, rel=1e-3)
    assert ratio["kivi2"] < ratio["kivi4"] < ratio["q8_0"]


def test_invalid_specs() -> None:
    for bad in ("q3", "kivi3", "kivi2-g24-r100", "f16-g32", "kivi2-x5", "kivi2-s-1", "kivi2-clips", "q8_0-clip"):
        with pytest.raises(pyruntime.InvalidArgumentError, match="kv cache type"):
            _core.kv_spec_name(bad)
    # names spell every KIVI option out (defaults: 4-token sink; key clipping at 2 bits) and parse back
    names = {
        "kivi2": "kivi2-g32-r128-s4-clip",
        "kivi4": "kivi4-g32-r128-s4-noclip",
        "kivi2-noclip-s0": "kivi2-g32-r128-s0-noclip",
        "kivi4-clip-r64-g16": "kivi4-g16-r64-s4-clip",
    }
    for spec, name in names.items():
        assert _core.kv_spec_name(spec) == name
        assert _core.kv_spec_name(name) == name


@pytest.fixture(scope="module")
def tiny(
    make_hf_llama: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory, convert: Callable[..., Path]
) -> Path:
    hf = make_hf_llama("kvq", hidden_size=128, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2)
    return convert(hf, tmp_path_factory.mktemp("kvq") / "tiny.gguf", "f32")


def test_model_decoding_with_compressed_cache(tiny: Path) -> None:
    """Token-by-token decoding (so later tokens attend to the compressed cache) against the f32 cache.
    Random weights (widened) make attention peaky, so the bounds are loose (a bug gives KL ~ 1); the
    orderings must hold. Floors on a real model and text are measured by bench/kv_cache.py."""
    ref = pyruntime.load(tiny, kv_cache="f32", threads=2)
    ids = [int(i) for i in np.random.default_rng(3).integers(1, ref.vocab_size, 300)]

    def run(spec: str) -> tuple[np.ndarray, int, dict]:
        m = pyruntime.load(tiny, kv_cache=spec, threads=2)
        s = m.session()
        logits = np.concatenate([s.feed(ids[:8])] + [s.feed([i]) for i in ids[8:]])
        return logits, s.kv_bytes, s.stats()

    base, base_bytes, _ = run("f32")
    kl = {}
    for spec in ("f16", "q8_0", "q4_0", "kivi4", "kivi2", "kivi2-g32-r32", "kivi2-s0-noclip"):
        logits, nbytes, st = run(spec)
        kl[spec] = mean_kl(base, logits)
        assert nbytes < base_bytes
        assert st["kv_cache"] == _core.kv_spec_name(spec)
    bounds = {
        "f16": 1e-5,
        "q8_0": 1e-3,
        "q4_0": 2e-2,
        "kivi4": 2e-2,
        "kivi2": 0.1,
        "kivi2-g32-r32": 0.15,
        "kivi2-s0-noclip": 0.15,
    }
    for spec, bound in bounds.items():
        assert kl[spec] <= bound, (spec, kl)
    assert kl["f16"] < kl["q8_0"] < kl["q4_0"]
    assert kl["kivi4"] < kl["kivi2"]
    assert kl["kivi2"] < kl["kivi2-g32-r32"]  # a longer full-precision window helps


def test_separate_key_and_value_types(tiny: Path) -> None:
    m = pyruntime.load(tiny, kv_cache_k="q8_0", kv_cache_v="kivi2")
    s = m.session()
    s.feed(list(range(1, 200)))
    st = s.stats()
    assert st["kv_cache_k"] == "q8_0" and st["kv_cache_v"] == "kivi2-g32-r128-s4-clip"
    assert st["kv_v_quantized_tokens"] == 199 - 4 - 128 and st["kv_k_full_precision_tokens"] == 0
