"""CUDA kernels against float64 numpy references (SPEC 6.5), run twice: on a GPU (skipped, with the
reason, where the package was built without nvcc or no GPU is present; CI compiles the kernels but has
no GPU) and on the CUDA simulator (kernels/sim: the same sources compiled as host C++, every CUDA thread
a fiber), which runs everywhere. The simulator checks the kernels' logic, barriers and launch limits;
only the GPU run speaks for the hardware (tensor-core rounding, races, resources)."""

from __future__ import annotations

from types import ModuleType

import numpy as np
import pytest

from pyruntime import _core
from tests.cuda.conftest import cuda_module


def test_module_imports_and_counts_devices_without_a_gpu() -> None:
    mod = cuda_module()
    assert mod.device_count() >= 0  # never raises, GPU or not


def ref_attention(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, causal: bool, scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """softmax(Q K^T * scale + mask) V in float64, GQA by h // (Hq/Hkv), causal bottom-right."""
    B, Hq, Sq, D = q.shape
    Hkv, Sk = k.shape[1], k.shape[2]
    rep = Hq // Hkv
    kk = np.repeat(k.astype(np.float64), rep, axis=1)
    vv = np.repeat(v.astype(np.float64), rep, axis=1)
    s = np.einsum("bhqd,bhkd->bhqk", q.astype(np.float64), kk) * scale
    if causal:
        allowed = np.arange(Sk)[None, :] <= np.arange(Sq)[:, None] + (Sk - Sq)
        s = np.where(allowed, s, -np.inf)
    m = s.max(-1, keepdims=True)
    m_safe = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(s - m_safe)
    denom = e.sum(-1, keepdims=True)
    out = np.where(denom > 0, np.einsum("bhqk,bhkd->bhqd", e, vv) / np.where(denom > 0, denom, 1), 0.0)
    lse = np.where(denom[..., 0] > 0, np.log(np.where(denom[..., 0] > 0, denom[..., 0], 1)) + m_safe[..., 0], -np.inf)
    return out, lse


def f16(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float16)


CASES = [
    # B, Hq, Hkv, Sq, Sk, D, causal
    (1, 2, 2, 1, 1, 64, False),
    (2, 4, 2, 77, 77, 64, True),
    (1, 8, 2, 128, 128, 128, True),
    (1, 4, 1, 33, 300, 80, True),  # q_len != k_len: bottom-right aligned, MQA
    (2, 3, 3, 200, 150, 96, False),
    (1, 2, 1, 64, 1000, 128, False),
    (1, 2, 2, 100, 40, 64, True),  # first 60 query rows see no key: output 0, no NaN
]


@pytest.mark.parametrize("B,Hq,Hkv,Sq,Sk,D,causal", CASES)
def test_flash_attention_matches_reference(
    cu: ModuleType, B: int, Hq: int, Hkv: int, Sq: int, Sk: int, D: int, causal: bool
) -> None:
    rng = np.random.default_rng(Sq * 1000 + Sk + D)
    q, k, v = f16(rng, B, Hq, Sq, D), f16(rng, B, Hkv, Sk, D), f16(rng, B, Hkv, Sk, D)
    scale = 1.0 / np.sqrt(D)
    out, lse, _ = cu.flash_attn(q.view(np.uint16), k.view(np.uint16), v.view(np.uint16), causal, scale)
    ref_out, ref_lse = ref_attention(q, k, v, causal, scale)
    assert not np.isnan(out).any() and not np.isnan(lse).any()
    np.testing.assert_allclose(out, ref_out, atol=2e-3, rtol=0)  # fp16 inputs, P rounded to fp16 for PV
    finite = np.isfinite(ref_lse)
    np.testing.assert_array_equal(np.isfinite(lse), finite)
    np.testing.assert_allclose(lse[finite], ref_lse[finite], atol=1e-4, rtol=0)


def kv_rows(fmt: str, x: np.ndarray) -> np.ndarray:
    """[..., D] float -> [..., row_bytes] in the cache format; also returns what the kernel should see."""
    if fmt == "f16":
        return x.astype(np.float16).view(np.uint8).reshape(*x.shape[:-1], -1)
    flat = x.reshape(-1, x.shape[-1]).astype(np.float32)
    rows = [np.frombuffer(_core.quantize(fmt.upper(), r), np.uint8) for r in flat]
    return np.stack(rows).reshape(*x.shape[:-1], -1)


def kv_values(fmt: str, rows: np.ndarray, D: int) -> np.ndarray:
    if fmt == "f16":
        return rows.view(np.float16).astype(np.float64).reshape(*rows.shape[:-1], D)
    flat = rows.reshape(-1, rows.shape[-1])
    vals = [_core.dequantize(fmt.upper(), r.tobytes(), D) for r in flat]
    return np.stack(vals).astype(np.float64).reshape(*rows.shape[:-1], D)


@pytest.mark.parametrize("mode", ["split", "lean"])
@pytest.mark.parametrize("fmt", ["f16", "q8_0", "q4_0"])
@pytest.mark.parametrize("D,G", [(64, 1), (128, 4), (96, 8)])
def test_decode_against_dequantized_reference(cu: ModuleType, fmt: str, D: int, G: int, mode: str) -> None:
    """SPEC 4.3.6 / 6.5.5: attention over the compressed cache equals exact attention over the
    dequantized cache (isolates the kernel from quantization error), for Flash-Decoding splits and
    Lean Attention's stream-K ranges."""
    rng = np.random.default_rng(D + G)
    B, Hkv, S = 3, 2, 700
    lens = [700, 1, 333]  # ragged
    q = f16(rng, B, Hkv * G, D)
    kr = kv_rows(fmt, rng.standard_normal((B, Hkv, S, D)))
    vr = kv_rows(fmt, rng.standard_normal((B, Hkv, S, D)))
    kd, vd = kv_values(fmt, kr, D), kv_values(fmt, vr, D)
    scale = 1.0 / np.sqrt(D)
    if mode == "lean":
        out, lse, n_ctas, _ = cu.decode_attn_lean(q.view(np.uint16), kr, vr, fmt, lens, 5, scale)
        assert n_ctas == 5  # ranges cross sequence boundaries: 3 * 2 groups of 1..11 tiles over 5 CTAs
    else:
        out, lse, n_splits, _ = cu.decode_attn(q.view(np.uint16), kr, vr, fmt, lens, 0, scale)
        assert n_splits >= 1
    for b, n in enumerate(lens):
        ro, rl = ref_attention(q[b][None, :, None, :], kd[b][None, :, :n], vd[b][None, :, :n], False, scale)
        np.testing.assert_allclose(out[b], ro[0, :, 0], atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(lse[b], rl[0, :, 0], atol=1e-5, rtol=0)


def test_decode_split_invariance(cu: ModuleType) -> None:
    """Any number of splits, including more splits than keys (empty splits), gives the same result."""
    rng = np.random.default_rng(11)
    B, Hkv, G, S, D = 2, 2, 4, 1500, 128
    q = f16(rng, B, Hkv * G, D)
    kr = kv_rows("f16", rng.standard_normal((B, Hkv, S, D)))
    vr = kv_rows("f16", rng.standard_normal((B, Hkv, S, D)))
    lens = [1500, 97]
    base, base_lse, _, _ = cu.decode_attn(q.view(np.uint16), kr, vr, "f16", lens, 1, 0.088)
    for n_s in (2, 3, 7, 128):
        out, lse, used, _ = cu.decode_attn(q.view(np.uint16), kr, vr, "f16", lens, n_s, 0.088)
        assert used == n_s
        scale = np.abs(base).max()
        assert np.abs(out - base).max() <= 1e-5 * scale, n_s  # fp32 reassociation only
        np.testing.assert_allclose(lse, base_lse, atol=1e-5)


def test_lean_attention_equals_one_split_for_any_cta_count(cu: ModuleType) -> None:
    """SPEC 6.5.3: Lean Attention's equal contiguous ranges (starting and ending mid-sequence, spanning
    several sequences, more CTAs than tiles) give the one-split result within fp32 reassociation;
    empty sequences give 0 and LSE -inf, as the split path does."""
    rng = np.random.default_rng(12)
    lens = [1500, 97, 0, 64, 65, 1]
    B, Hkv, G, S, D = len(lens), 2, 4, 1500, 128
    q = f16(rng, B, Hkv * G, D)
    kr = kv_rows("f16", rng.standard_normal((B, Hkv, S, D)))
    vr = kv_rows("f16", rng.standard_normal((B, Hkv, S, D)))
    base, base_lse, _, _ = cu.decode_attn(q.view(np.uint16), kr, vr, "f16", lens, 1, 0.088)
    assert (base[2] == 0).all() and np.isneginf(base_lse[2]).all()
    scale = np.abs(base).max()
    for n_ctas in (1, 2, 3, 7, 50, 1000, 0):
        out, lse, used, _ = cu.decode_attn_lean(q.view(np.uint16), kr, vr, "f16", lens, n_ctas, 0.088)
        tiles = 2 * sum((n + 63) // 64 for n in lens)  # 60: 1000 CTAs are capped at one per tile
        assert used == min(n_ctas, tiles) or (n_ctas == 0 and 1 <= used <= tiles)
        assert np.abs(out - base).max() <= 1e-5 * scale, n_ctas
        np.testing.assert_array_equal(np.isfinite(lse), np.isfinite(base_lse))
        fin = np.isfinite(base_lse)
        np.testing.assert_allclose(lse[fin], base_lse[fin], atol=1e-5)
    empty, empty_lse, _, _ = cu.decode_attn_lean(q.view(np.uint16), kr, vr, "f16", [0] * B, 4, 0.088)
    assert (empty == 0).all() and np.isneginf(empty_lse).all()


@pytest.mark.parametrize("fmt", ["f16", "q8_0", "q4_0"])
@pytest.mark.parametrize("D", [64, 128])
def test_kv_append_writes_the_cpu_quantizers_bits(cu: ModuleType, fmt: str, D: int) -> None:
    """Appended rows land at [head, pos0 + t] with exactly the bytes the CPU runtime's quantizers write
    (zero blocks, magnitude ties where q4_0 keeps the first, large values included); other positions
    stay untouched; the fp16 copy for prefill attention is the dequantized values rounded to fp16."""
    rng = np.random.default_rng(D)
    T, H, cap, pos0 = 5, 3, 9, 2
    x = (rng.standard_normal((T, H, D)) * 3).astype(np.float32)
    x[0, 0, :32] = 0.0  # an all-zero block: scale 0
    x[1, 1, :32] = rng.integers(-3, 4, 32)
    x[1, 1, 5], x[1, 1, 9] = 3.0, -3.0  # equal magnitudes of both signs
    x[2, 2, :] *= 1e3
    cache, halves = cu.kv_append(x, fmt, cap, pos0)
    for t in range(T):
        for h in range(H):
            if fmt == "f16":
                want = x[t, h].astype(np.float16).view(np.uint8)
            else:
                want = np.frombuffer(_core.quantize(fmt.upper(), x[t, h]), np.uint8)
            np.testing.assert_array_equal(cache[h, pos0 + t], want, err_msg=f"t={t} h={h}")
    assert (cache[:, :pos0] == 0).all() and (cache[:, pos0 + T :] == 0).all()
    if fmt != "f16":
        for h in range(H):
            deq = np.stack([_core.dequantize(fmt.upper(), cache[h, i].tobytes(), D) for i in range(pos0 + T)])
            np.testing.assert_array_equal(halves[h], deq.astype(np.float16).view(np.uint16))


def kivi_dequantized(buf: dict, keys: bool, row: int) -> np.ndarray:
    """[tokens, row] float64 from a KvStore.kivi_buffers() dict, decoded here from the documented layout."""
    G, bits = buf["group"], buf["bits"]
    per_byte, cb = 8 // bits, buf["group"] * buf["bits"] // 8
    f16 = lambda a: a.view(np.float16).astype(np.float64)  # noqa: E731
    scale, mn, codes = f16(buf["scale"]), f16(buf["min"]), buf["codes"]

    def code(e: int, i: int) -> int:
        return (int(codes[e * cb + i // per_byte]) >> ((i % per_byte) * bits)) & ((1 << bits) - 1)

    quant = np.zeros((buf["n_quant"], row))
    for j in range(buf["n_quant"]):
        for ch in range(row):
            e, i = ((j // G) * row + ch, j % G) if keys else (j * (row // G) + ch // G, ch % G)
            quant[j, ch] = scale[e] * code(e, i) + mn[e]
    return np.concatenate([f16(buf["sink"]).reshape(-1, row), quant, f16(buf["window"]).reshape(-1, row)])


@pytest.mark.parametrize("spec", ["kivi2-g32-r32-s4", "kivi4-g16-r64-s0"])
@pytest.mark.parametrize("mode", ["split", "lean"])
def test_decode_reads_kivi_caches_directly(cu: ModuleType, spec: str, mode: str) -> None:
    """SPEC 6.5.5 with KIVI: decode attention reading the CPU runtime's KIVI buffers in place (sink,
    quantized groups, fp16 window) equals float64 attention over the same cache dequantized from its
    layout, and the CPU runtime's own KIVI attention, for Flash-Decoding splits and Lean ranges."""
    rng = np.random.default_rng(7)
    Hkv, G, D = 2, 4, 64
    k = _core.KvStore(spec, True, Hkv, D)
    v = _core.KvStore(spec, False, Hkv, D)
    rows_k, rows_v = rng.standard_normal((300, Hkv * D)), rng.standard_normal((300, Hkv * D))
    k.append(rows_k[:200].astype(np.float32))  # a prompt, then decode steps (the schedule moves tokens)
    v.append(rows_v[:200].astype(np.float32))
    k.finish_step(), v.finish_step()
    for t in range(200, 300):
        k.append(rows_k[t : t + 1].astype(np.float32)), v.append(rows_v[t : t + 1].astype(np.float32))
        k.finish_step(), v.finish_step()
    kb, vb = k.kivi_buffers(), v.kivi_buffers()
    assert kb["n_quant"] > 0 and kb["n_window"] > 0 and vb["n_quant"] > 0  # every part is exercised
    q = f16(rng, Hkv * G, D)
    scale = D**-0.5
    if mode == "lean":
        out, lse = cu.decode_attn_kivi(q.view(np.uint16), kb, vb, Hkv, scale=scale, lean=True, n_ctas=3)
    else:
        out, lse = cu.decode_attn_kivi(q.view(np.uint16), kb, vb, Hkv, n_splits=3, scale=scale)
    kd = kivi_dequantized(kb, True, Hkv * D).reshape(300, Hkv, D).transpose(1, 0, 2)[None]
    vd = kivi_dequantized(vb, False, Hkv * D).reshape(300, Hkv, D).transpose(1, 0, 2)[None]
    ref, ref_lse = ref_attention(q[None, :, None, :], kd, vd, False, scale)
    np.testing.assert_allclose(out, ref[0, :, 0], atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(lse, ref_lse[0, :, 0], atol=1e-5)
    for h in range(Hkv * G):  # the CPU runtime reading the same store
        qh = q[h].astype(np.float32)
        s = np.asarray(k.dot_keys(h // G, qh, 300), np.float64) * scale
        p = np.exp(s - s.max())
        want = np.asarray(v.accumulate(h // G, (p / p.sum()).astype(np.float32), D))
        np.testing.assert_allclose(out[h], want, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("spec", ["kivi2-g32-r32-s4-clip", "kivi4-g16-r64-s0-noclip", "kivi2"])
@pytest.mark.parametrize("keys", [True, False])
def test_gpu_kivi_store_writes_the_cpu_stores_bits(cu: ModuleType, spec: str, keys: bool) -> None:
    """A prompt then single decode steps into a GPU KIVI store (sink, fp16 window, quantization on the
    GPU with the clip search): every buffer and count equals the CPU runtime's KvStore, bit for bit."""
    rng = np.random.default_rng(3)
    rows = rng.standard_normal((300, 2 * 64)).astype(np.float32)
    steps = [200] + [1] * 100
    cpu = _core.KvStore(spec, keys, 2, 64)
    at = 0
    for n in steps:
        cpu.append(rows[at : at + n])
        cpu.finish_step()
        at += n
    want, got = cpu.kivi_buffers(), cu.kivi_store(spec, keys, 2, 64, rows, steps)
    assert want["n_quant"] > 0 and want["n_window"] > 0
    for name, value in want.items():
        np.testing.assert_array_equal(np.asarray(got[name]), np.asarray(value), err_msg=name)


def test_split_heuristic_follows_flash_attn(cu: ModuleType) -> None:
    mod = cu
    assert mod.num_splits_heuristic(200, 132, 64, 128) == 1  # enough CTAs already
    s = mod.num_splits_heuristic(8, 132, 64, 128)
    assert 1 < s <= 64
    assert mod.num_splits_heuristic(8, 132, 1, 128) == 1


@pytest.mark.parametrize("qtype,type_id", [("Q8_0", 8), ("Q4_0", 2), ("Q4_1", 3)])
@pytest.mark.parametrize("N,K", [(1, 32), (33, 96), (4097, 576), (255, 4096)])
def test_gemv_quant(cu: ModuleType, qtype: str, type_id: int, N: int, K: int) -> None:
    rng = np.random.default_rng(N + K)
    w = rng.standard_normal((N, K)).astype(np.float32)
    rows = np.stack([np.frombuffer(_core.quantize(qtype, r), np.uint8) for r in w])
    x = rng.standard_normal(K).astype(np.float32)
    wd = np.stack([_core.dequantize(qtype, r.tobytes(), K) for r in rows]).astype(np.float64)
    y, _ = cu.gemv(type_id, rows, x)
    ref = wd @ x.astype(np.float64)
    np.testing.assert_allclose(y, ref, atol=1e-4 * np.sqrt(K), rtol=1e-4)


@pytest.mark.parametrize("qtype,type_id", [("F16", 1), ("Q8_0", 8), ("Q4_0", 2), ("Q4_1", 3)])
@pytest.mark.parametrize("n_x", [2, 3, 5, 8, 11, 17])
def test_gemv_rows_share_the_weights_and_keep_each_rows_bits(
    cu: ModuleType, qtype: str, type_id: int, n_x: int
) -> None:
    """A batch of activation rows (decode steps of several sessions) through one read of the weights:
    instances of 2/4/8 rows, zero rows padding 3 and 5 up, chunks past 8. Each row equals the lone-row
    GEMV bit for bit (same sum order), and the float64 reference within 1e-4."""
    N, K = 77, 4128  # 8 x 4128 floats of staged x = 129 KiB: the shared-memory opt-in
    rng = np.random.default_rng(n_x)
    w = rng.standard_normal((N, K)).astype(np.float32)
    if qtype == "F16":
        rows = w.astype(np.float16).view(np.uint8)
        wd = w.astype(np.float16).astype(np.float64)
    else:
        rows = np.stack([np.frombuffer(_core.quantize(qtype, r), np.uint8) for r in w])
        wd = np.stack([_core.dequantize(qtype, r.tobytes(), K) for r in rows]).astype(np.float64)
    x = rng.standard_normal((n_x, K)).astype(np.float32)
    y, _ = cu.gemv(type_id, rows, x)
    assert y.shape == (n_x, N)
    for i in range(n_x):
        lone, _ = cu.gemv(type_id, rows, x[i])
        np.testing.assert_array_equal(y[i], lone)
    np.testing.assert_allclose(y, x.astype(np.float64) @ wd.T, atol=1e-4 * np.sqrt(K), rtol=1e-4)


def test_padding_free_batch_matches_per_sequence(cu: ModuleType) -> None:
    """SPEC 6.5.1: pack -> attention -> unpack equals the per-sequence reference on valid rows; pad
    rows are exactly 0; cu_seqlens equals the CPU exclusive scan; the gather map points at valid rows."""
    lengths = [1, 15, 16, 17, 80, 81, 255, 256, 1024, 3]
    B, S, Hq, Hkv, D = len(lengths), max(lengths), 4, 2, 64
    rng = np.random.default_rng(5)
    q, k, v = f16(rng, B, S, Hq, D), f16(rng, B, S, Hkv, D), f16(rng, B, S, Hkv, D)
    mask = (np.arange(S)[None, :] < np.array(lengths)[:, None]).astype(np.int32)
    for causal in (False, True):
        out, cu_seqlens, word_idx, _ = cu.padding_free_attn(
            q.view(np.uint16), k.view(np.uint16), v.view(np.uint16), mask, causal, D**-0.5
        )
        np.testing.assert_array_equal(cu_seqlens, np.concatenate([[0], np.cumsum(lengths)]))
        np.testing.assert_array_equal(word_idx, np.concatenate([b * S + np.arange(n) for b, n in enumerate(lengths)]))
        for b, n in enumerate(lengths):
            ref, _ = ref_attention(
                q[b, :n].transpose(1, 0, 2)[None],
                k[b, :n].transpose(1, 0, 2)[None],
                v[b, :n].transpose(1, 0, 2)[None],
                causal,
                D**-0.5,
            )
            np.testing.assert_allclose(out[b, :n], ref[0].transpose(1, 0, 2), atol=2e-3, rtol=0)
            assert (out[b, n:] == 0).all()


@pytest.mark.parametrize("T,N,K", [(1, 64, 64), (37, 100, 96), (200, 130, 40), (128, 2048, 256), (513, 77, 1024)])
def test_tensor_core_gemm(cu: ModuleType, T: int, N: int, K: int) -> None:
    """y = x w^T with fp16 operands, fp32 accumulation: within 1e-5 of float64 relative to sum |x||w|
    (fp32 accumulation error over K), for shapes off every tile edge; no output is left unwritten."""
    rng = np.random.default_rng(T * N + K)
    x, w = f16(rng, T, K), f16(rng, N, K)
    y, _ = cu.gemm_f16(x.view(np.uint16), w.view(np.uint16))
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    bound = 1e-5 * (np.abs(x64) @ np.abs(w64).T) + 1e-6
    assert np.isfinite(y).all()
    assert (np.abs(y - x64 @ w64.T) <= bound).all()


@pytest.mark.parametrize("qtype,type_id", [("Q8_0", 8), ("Q4_0", 2), ("Q4_1", 3)])
def test_dequantized_rows_for_the_gemm(cu: ModuleType, qtype: str, type_id: int) -> None:
    """fp16 rows from quantized weights: the CPU dequantizer's values rounded to fp16, bit for bit."""
    N, K = 37, 160
    rng = np.random.default_rng(type_id)
    rows = np.stack(
        [np.frombuffer(_core.quantize(qtype, r), np.uint8) for r in rng.standard_normal((N, K)).astype(np.float32)]
    )
    want = np.stack([_core.dequantize(qtype, r.tobytes(), K) for r in rows]).astype(np.float16)
    np.testing.assert_array_equal(cu.dequant_f16(type_id, rows, K), want.view(np.uint16))


@pytest.mark.parametrize("qtype,type_id", [("Q8_0", 8), ("Q4_0", 2), ("Q4_1", 3)])
@pytest.mark.parametrize("T,N,K", [(37, 100, 96), (130, 65, 256)])
def test_gemm_dequantizes_tiles_as_it_loads_them(
    cu: ModuleType, qtype: str, type_id: int, T: int, N: int, K: int
) -> None:
    """The prefill GEMM over quantized rows as stored (edges in T and N, several K blocks): bit for bit
    the fp16 rows of dequant_f16 through the fp16 GEMM, and the float64 product within fp16 tolerance."""
    rng = np.random.default_rng(T + N)
    rows = np.stack(
        [np.frombuffer(_core.quantize(qtype, r), np.uint8) for r in rng.standard_normal((N, K)).astype(np.float32)]
    )
    x = rng.standard_normal((T, K)).astype(np.float16)
    got, _ = cu.gemm_ggml(type_id, x.view(np.uint16), rows)
    w16 = cu.dequant_f16(type_id, rows, K)
    want, _ = cu.gemm_f16(x.view(np.uint16), w16)
    np.testing.assert_array_equal(got, want)
    ref = x.astype(np.float64) @ w16.view(np.float16).astype(np.float64).T
    np.testing.assert_allclose(got, ref, atol=1e-3 * np.sqrt(K), rtol=1e-3)
    with pytest.raises(RuntimeError, match="gemm_ggml_tc"):
        cu.gemm_ggml(type_id, x[:, :40].copy().view(np.uint16), rows)  # K % 32 != 0: not a block layout


def test_layer_glue_matches_the_cpu(cu: ModuleType) -> None:
    """RMSNorm, RoPE (both pairings, partial rotation, positions to 4k) and SwiGLU on the GPU against
    the CPU runtime's own ops: fp32 throughout, so only summation order / sincos rounding differ."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((9, 2048)).astype(np.float32)
    w = rng.standard_normal(2048).astype(np.float32)
    np.testing.assert_allclose(cu.rms_norm(x, w, 1e-5), _core.rms_norm_rows(x, w, 1e-5), rtol=2e-6, atol=1e-6)
    T, H, d = 5, 4, 128
    q = rng.standard_normal((T, H * d)).astype(np.float32)
    for n_rot in (128, 64):
        inv_freq = (500000.0 ** (-np.arange(n_rot // 2) * 2.0 / n_rot)).astype(np.float32)
        for neox in (False, True):
            for pos0 in (0, 4090):
                got = cu.rope(q, H, d, n_rot, pos0, inv_freq, neox)
                want = _core.rope(q, H, d, n_rot, pos0, inv_freq.tolist(), neox)
                np.testing.assert_allclose(got, want, atol=2e-6 * (1 + pos0))
    g = (6 * rng.standard_normal(10007)).astype(np.float32)
    g[:3] = [120.0, -120.0, 0.0]
    u = rng.standard_normal(10007).astype(np.float32)
    np.testing.assert_allclose(cu.swiglu(g, u), _core.silu_mul(g, u), rtol=2e-6, atol=1e-30)
