// pybind11 module `_cuda`: the CUDA kernels on numpy inputs (tests, benchmarks). Imported lazily by
// pyruntime only when CUDA is asked for; with no GPU or driver it imports and reports 0 devices.
#include <cuda_runtime_api.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "memory/cuda/kivi_store.h"
#include "pyrt_cuda.h"
#include "python/errors.h"

namespace py = pybind11;
using namespace pyrt::cuda;

namespace {

void check(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return;
#ifdef PYRT_CUDA_SIM
  throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err) + " (" + cusim::last_error_message() +
                           ")");
#else
  throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
#endif
}

// Device buffer with RAII; copies from/to numpy.
struct DevBuf {
  void* ptr = nullptr;
  size_t bytes = 0;
  explicit DevBuf(size_t n) : bytes(n) { check(cudaMalloc(&ptr, std::max<size_t>(n, 1)), "cudaMalloc"); }
  DevBuf(const void* host, size_t n) : DevBuf(n) {
    check(cudaMemcpy(ptr, host, n, cudaMemcpyHostToDevice), "cudaMemcpy H2D");
  }
  ~DevBuf() { cudaFree(ptr); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr);
  }
  void to_host(void* host) const { check(cudaMemcpy(host, ptr, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy D2H"); }
  void poison() const { check(cudaMemset(ptr, 0xFF, bytes), "cudaMemset"); }  // NaN for float outputs
};

int device_count() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
}

int sm_count() {
  int dev = 0, n = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  check(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev), "cudaDeviceGetAttribute");
  return n;
}

using HalfArray = py::array_t<uint16_t, py::array::c_style | py::array::forcecast>;  // fp16 bits
using ByteArray = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>;
using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;

KvFormat parse_format(const std::string& s) {
  if (s == "f16") return KvFormat::kF16;
  if (s == "q8_0") return KvFormat::kQ8_0;
  if (s == "q4_0") return KvFormat::kQ4_0;
  throw std::invalid_argument("unknown kv format '" + s + "' (f16, q8_0, q4_0)");
}

template <typename F>
float median_ms(F&& launch, int iters) {
  cudaEvent_t a, b;
  check(cudaEventCreate(&a), "cudaEventCreate");
  check(cudaEventCreate(&b), "cudaEventCreate");
  for (int i = 0; i < 3; ++i) check(launch(), "warm-up launch");
  std::vector<float> t;
  for (int i = 0; i < iters; ++i) {
    cudaEventRecord(a);
    check(launch(), "launch");
    cudaEventRecord(b);
    cudaEventSynchronize(b);
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    t.push_back(ms);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// Runs `launch` once (iters == 0) or times it (median of iters after warm-ups), then waits for the
// device, failing with `what`. Returns the median milliseconds (0 when not timed).
template <typename F>
float run_launch(F&& launch, int iters, const std::string& what) {
  float ms = 0;
  if (iters > 0)
    ms = median_ms(launch, iters);
  else
    check(launch(), what.c_str());
  check(cudaDeviceSynchronize(), (what + " (sync)").c_str());
  return ms;
}

py::tuple run_flash(HalfArray q, HalfArray k, HalfArray v, bool causal, float scale, int iters) {
  if (q.ndim() != 4 || k.ndim() != 4 || v.ndim() != 4) throw std::invalid_argument("q, k, v must be [B, H, S, D]");
  FlashParams p{};
  p.B = int(q.shape(0)), p.Hq = int(q.shape(1)), p.Sq = int(q.shape(2)), p.D = int(q.shape(3));
  p.Hkv = int(k.shape(1)), p.Sk = int(k.shape(2));
  if (k.shape(0) != p.B || k.shape(3) != p.D || v.shape(0) != k.shape(0) || v.shape(1) != k.shape(1) ||
      v.shape(2) != k.shape(2) || v.shape(3) != k.shape(3)) {
    throw std::invalid_argument("k and v shapes must match [B, Hkv, Sk, D]");
  }
  DevBuf dq(q.data(), q.nbytes()), dk(k.data(), k.nbytes()), dv(v.data(), v.nbytes());
  DevBuf dout(size_t(p.B) * p.Hq * p.Sq * p.D * 4), dlse(size_t(p.B) * p.Hq * p.Sq * 4);
  dout.poison();
  dlse.poison();
  p.q = dq.as<half>(), p.k = dk.as<half>(), p.v = dv.as<half>(), p.out = dout.as<float>(), p.lse = dlse.as<float>();
  p.scale = scale, p.causal = causal;
  const float ms = run_launch([&] { return flash_attn_fwd(p, nullptr); }, iters, "flash_attn_fwd");
  py::array_t<float> out({p.B, p.Hq, p.Sq, p.D}), lse({p.B, p.Hq, p.Sq});
  dout.to_host(out.mutable_data());
  dlse.to_host(lse.mutable_data());
  return py::make_tuple(out, lse, ms);
}

// Padding-free attention over a right-padded, token-major batch: [B, S, H, D] fp16 + mask [B, S].
// Builds cu_seqlens and the gather map on the GPU, packs q/k/v, runs varlen attention, unpacks.
py::tuple run_padding_free(HalfArray q, HalfArray k, HalfArray v,
                           py::array_t<int32_t, py::array::c_style | py::array::forcecast> mask, bool causal,
                           float scale, int iters) {
  if (q.ndim() != 4 || k.ndim() != 4 || v.ndim() != 4 || mask.ndim() != 2)
    throw std::invalid_argument("q/k/v [B, S, H, D], mask [B, S]");
  const int B = int(q.shape(0)), S = int(q.shape(1)), Hq = int(q.shape(2)), D = int(q.shape(3)), Hkv = int(k.shape(2));
  if (mask.shape(0) != B || mask.shape(1) != S || k.shape(1) != S) throw std::invalid_argument("shapes do not match");
  DevBuf dq(q.data(), q.nbytes()), dk(k.data(), k.nbytes()), dv(v.data(), v.nbytes()),
      dmask(mask.data(), mask.nbytes());
  DevBuf dcu(size_t(B + 1) * 4), dwidx(size_t(B) * S * 4);
  DevBuf pq(q.nbytes()), pk(k.nbytes()), pv(v.nbytes());  // packed (upper bound sizes)
  DevBuf pout(size_t(B) * S * Hq * D * 4), plse(size_t(Hq) * B * S * 4), dout(size_t(B) * S * Hq * D * 4);
  dout.poison();
  // Lengths are needed on the host for the grid size (max length) and the output layout.
  check(build_varlen_index(dmask.as<int>(), B, S, dcu.as<int>(), dwidx.as<int>(), nullptr), "build_varlen_index");
  std::vector<int> cu(B + 1);
  check(cudaMemcpy(cu.data(), dcu.ptr, cu.size() * 4, cudaMemcpyDeviceToHost), "cudaMemcpy cu");
  const int T = cu[B];
  int max_len = 0;
  for (int b = 0; b < B; ++b) max_len = std::max(max_len, cu[b + 1] - cu[b]);
  FlashParams p{};
  p.B = B, p.Hq = Hq, p.Hkv = Hkv, p.Sq = max_len, p.Sk = max_len, p.D = D, p.scale = scale, p.causal = causal;
  p.q = pq.as<half>(), p.k = pk.as<half>(), p.v = pv.as<half>(), p.out = pout.as<float>(), p.lse = plse.as<float>();
  p.cu_seqlens_q = p.cu_seqlens_k = dcu.as<int>();
  p.total_q = T;
  auto pipeline = [&]() -> cudaError_t {
    cudaError_t e = build_varlen_index(dmask.as<int>(), B, S, dcu.as<int>(), dwidx.as<int>(), nullptr);
    if (e == cudaSuccess) e = pack_rows(dq.as<half>(), dwidx.as<int>(), T, Hq * D, pq.as<half>(), nullptr);
    if (e == cudaSuccess) e = pack_rows(dk.as<half>(), dwidx.as<int>(), T, Hkv * D, pk.as<half>(), nullptr);
    if (e == cudaSuccess) e = pack_rows(dv.as<half>(), dwidx.as<int>(), T, Hkv * D, pv.as<half>(), nullptr);
    if (e == cudaSuccess && T > 0) e = flash_attn_fwd(p, nullptr);
    // fp32 rows of Hq * D floats are moved as 2 * Hq * D halves
    if (e == cudaSuccess)
      e = unpack_rows(reinterpret_cast<const half*>(pout.ptr), dwidx.as<int>(), T, B * S, 2 * Hq * D, dout.as<half>(),
                      nullptr);
    return e;
  };
  const float ms = run_launch(pipeline, iters, "padding-free pipeline");
  py::array_t<float> out({B, S, Hq, D});
  dout.to_host(out.mutable_data());
  py::array_t<int32_t> cu_out(B + 1), widx(T);
  std::copy(cu.begin(), cu.end(), cu_out.mutable_data());
  if (T > 0)
    check(cudaMemcpy(widx.mutable_data(), dwidx.ptr, size_t(T) * 4, cudaMemcpyDeviceToHost), "cudaMemcpy word_idx");
  return py::make_tuple(out, cu_out, widx, ms);
}

// Shapes and format of a row-format decode batch, checked (pointers are set by the caller).
DecodeParams decode_shapes(const HalfArray& q, const ByteArray& k, const ByteArray& v, const std::string& format,
                           const std::vector<int>& seqlens) {
  if (q.ndim() != 3 || k.ndim() != 4 || v.ndim() != 4)
    throw std::invalid_argument("q [B, Hq, D], k/v [B, Hkv, S, row]");
  DecodeParams p{};
  p.format = parse_format(format);
  p.B = int(q.shape(0)), p.Hq = int(q.shape(1)), p.D = int(q.shape(2));
  p.Hkv = int(k.shape(1)), p.S_max = int(k.shape(2));
  if (k.shape(3) != kv_row_bytes(p.format, p.D) || v.nbytes() != k.nbytes())
    throw std::invalid_argument("k/v row bytes do not match the format");
  if (int(seqlens.size()) != p.B) throw std::invalid_argument("one sequence length per batch row");
  for (int s : seqlens)
    if (s < 0 || s > p.S_max) throw std::invalid_argument("sequence length outside [0, S_max]");
  return p;
}

py::tuple run_decode(HalfArray q, ByteArray k, ByteArray v, const std::string& format, std::vector<int> seqlens,
                     int n_splits, float scale, int iters) {
  DecodeParams p = decode_shapes(q, k, v, format, seqlens);
  if (n_splits <= 0) {
    const int max_len = *std::max_element(seqlens.begin(), seqlens.end());
    n_splits = decode_auto_splits(p.format, p.B, p.Hkv, p.D, max_len);
  }
  p.n_splits = n_splits;
  DevBuf dq(q.data(), q.nbytes()), dk(k.data(), k.nbytes()), dv(v.data(), v.nbytes());
  DevBuf dlen(seqlens.data(), seqlens.size() * 4);
  DevBuf dop(size_t(p.B) * p.Hq * n_splits * p.D * 4), dlp(size_t(p.B) * p.Hq * n_splits * 4);
  DevBuf dout(size_t(p.B) * p.Hq * p.D * 4), dlse(size_t(p.B) * p.Hq * 4);
  dout.poison();
  dlse.poison();
  p.q = dq.as<half>(), p.k = dk.ptr, p.v = dv.ptr, p.seqlens = dlen.as<int>(), p.scale = scale;
  p.o_partial = dop.as<float>(), p.lse_partial = dlp.as<float>(), p.out = dout.as<float>(), p.lse = dlse.as<float>();
  const float ms = run_launch([&] { return decode_attn(p, nullptr); }, iters, "decode_attn");
  py::array_t<float> out({p.B, p.Hq, p.D}), lse({p.B, p.Hq});
  dout.to_host(out.mutable_data());
  dlse.to_host(lse.mutable_data());
  return py::make_tuple(out, lse, n_splits, ms);
}

// Lean Attention on the same inputs as run_decode; n_ctas <= 0 picks the resident CTA slots.
py::tuple run_decode_lean(HalfArray q, ByteArray k, ByteArray v, const std::string& format, std::vector<int> seqlens,
                          int n_ctas, float scale, int iters) {
  DecodeParams p = decode_shapes(q, k, v, format, seqlens);
  if (n_ctas <= 0) n_ctas = lean_auto_ctas(p.format, p.D);
  const std::vector<int> prefix = lean_tile_prefix(seqlens, p.Hkv);
  n_ctas = std::min(n_ctas, std::max(prefix.back(), 1));  // as decode_attn_lean caps it
  const int G = p.Hq / p.Hkv, slots = lean_partial_slots(n_ctas, p.B, p.Hkv);
  DevBuf dq(q.data(), q.nbytes()), dk(k.data(), k.nbytes()), dv(v.data(), v.nbytes());
  DevBuf dlen(seqlens.data(), seqlens.size() * 4), dprefix(prefix.data(), prefix.size() * 4);
  DevBuf dop(size_t(slots) * G * p.D * 4), dlp(size_t(slots) * G * 4);
  DevBuf dout(size_t(p.B) * p.Hq * p.D * 4), dlse(size_t(p.B) * p.Hq * 4);
  dout.poison();
  dlse.poison();
  dop.poison();  // every slot the combine reads must have been written (NaN otherwise)
  dlp.poison();
  p.q = dq.as<half>(), p.k = dk.ptr, p.v = dv.ptr, p.seqlens = dlen.as<int>(), p.scale = scale;
  p.o_partial = dop.as<float>(), p.lse_partial = dlp.as<float>(), p.out = dout.as<float>(), p.lse = dlse.as<float>();
  auto launch = [&] { return decode_attn_lean(p, dprefix.as<int>(), prefix.back(), n_ctas, nullptr); };
  const float ms = run_launch(launch, iters, "decode_attn_lean");
  py::array_t<float> out({p.B, p.Hq, p.D}), lse({p.B, p.Hq});
  dout.to_host(out.mutable_data());
  dlse.to_host(lse.mutable_data());
  return py::make_tuple(out, lse, n_ctas, ms);
}

// Token rows x [T, H, D] appended at pos0 to an empty cache of `capacity` positions: the cache bytes
// [H, capacity, row_bytes], and its first pos0 + T positions back as fp16 bits (quantized formats).
py::tuple run_kv_append(FloatArray x, const std::string& format, int capacity, int pos0) {
  if (x.ndim() != 3) throw std::invalid_argument("x must be [T, n_heads, D]");
  const KvFormat f = parse_format(format);
  const int T = int(x.shape(0)), H = int(x.shape(1)), D = int(x.shape(2)), rb = kv_row_bytes(f, D);
  DevBuf dx(x.data(), x.nbytes()), dc(size_t(H) * capacity * rb), dh(size_t(H) * (pos0 + T) * D * 2);
  check(cudaMemset(dc.ptr, 0, dc.bytes), "cudaMemset");
  check(kv_append(f, dx.as<float>(), T, H, D, dc.ptr, capacity, pos0, nullptr), "kv_append");
  py::array_t<uint16_t> halves({H, pos0 + T, D});
  if (f != KvFormat::kF16) check(kv_to_f16(f, dc.ptr, H, capacity, pos0 + T, D, dh.as<half>(), nullptr), "kv_to_f16");
  check(cudaDeviceSynchronize(), "kv_append (sync)");
  py::array_t<uint8_t> cache({H, capacity, rb});
  dc.to_host(cache.mutable_data());
  if (f != KvFormat::kF16) dh.to_host(halves.mutable_data());
  return py::make_tuple(cache, halves);
}

// One sequence's decode attention over KIVI caches given as KvStore.kivi_buffers() dicts (the CPU
// runtime's layout, uploaded as is). q: [Hq, D] fp16 bits. lean: Lean Attention with n_ctas (0: auto).
py::tuple run_decode_kivi(HalfArray q, py::dict kd, py::dict vd, int n_kv_heads, int n_splits, float scale, bool lean,
                          int n_ctas) {
  if (q.ndim() != 2) throw std::invalid_argument("q must be [Hq, D]");
  DecodeParams p{};
  p.format = KvFormat::kKivi;
  p.B = 1, p.Hq = int(q.shape(0)), p.D = int(q.shape(1)), p.Hkv = n_kv_heads;
  std::vector<std::unique_ptr<DevBuf>> keep;
  auto upload = [&](py::dict d, const char* name) -> void* {
    auto a = d[name].cast<py::array>();
    keep.push_back(std::make_unique<DevBuf>(a.data(), size_t(a.nbytes())));
    return keep.back()->ptr;
  };
  auto cache = [&](py::dict d) {
    KiviCache c{};
    c.sink = static_cast<const half*>(upload(d, "sink")), c.window = static_cast<const half*>(upload(d, "window"));
    c.scale = static_cast<const half*>(upload(d, "scale")), c.min = static_cast<const half*>(upload(d, "min"));
    c.codes = static_cast<const uint8_t*>(upload(d, "codes"));
    c.n_sink = d["n_sink"].cast<int>(), c.n_quant = d["n_quant"].cast<int>(), c.n_window = d["n_window"].cast<int>();
    c.bits = d["bits"].cast<int>(), c.group = d["group"].cast<int>();
    return c;
  };
  const KiviCache kc = cache(kd), vc = cache(vd);
  const int len = kc.n_sink + kc.n_quant + kc.n_window;
  if (len != vc.n_sink + vc.n_quant + vc.n_window)
    throw std::invalid_argument("keys and values hold different token counts");
  DevBuf dkc(&kc, sizeof(kc)), dvc(&vc, sizeof(vc)), dq(q.data(), q.nbytes()), dlen(&len, sizeof(int));
  if (lean) {
    if (n_ctas <= 0) n_ctas = lean_auto_ctas(p.format, p.D);
  } else if (n_splits <= 0) {
    n_splits = decode_auto_splits(p.format, 1, p.Hkv, p.D, len);
  }
  const std::vector<int> prefix = lean_tile_prefix({len}, p.Hkv);
  if (lean) n_ctas = std::min(n_ctas, std::max(prefix.back(), 1));
  const int G = p.Hkv > 0 ? p.Hq / p.Hkv : 1;
  const size_t slots = lean ? size_t(lean_partial_slots(n_ctas, 1, p.Hkv)) * G : size_t(p.Hq) * n_splits;
  DevBuf dop(slots * p.D * 4), dlp(slots * 4), dout(size_t(p.Hq) * p.D * 4), dlse(size_t(p.Hq) * 4),
      dprefix(prefix.data(), prefix.size() * 4);
  dout.poison();
  p.q = dq.as<half>(), p.seqlens = dlen.as<int>(), p.scale = scale, p.n_splits = std::max(n_splits, 1);
  p.kivi_k = static_cast<const KiviCache*>(dkc.ptr), p.kivi_v = static_cast<const KiviCache*>(dvc.ptr);
  p.o_partial = dop.as<float>(), p.lse_partial = dlp.as<float>(), p.out = dout.as<float>(), p.lse = dlse.as<float>();
  check(lean ? decode_attn_lean(p, dprefix.as<int>(), prefix.back(), n_ctas, nullptr) : decode_attn(p, nullptr),
        "decode_attn (kivi)");
  check(cudaDeviceSynchronize(), "decode_attn (kivi, sync)");
  py::array_t<float> out({p.Hq, p.D}), lse(p.Hq);
  dout.to_host(out.mutable_data());
  dlse.to_host(lse.mutable_data());
  return py::make_tuple(out, lse);
}

// Rows [T, row] fed to a GPU KIVI store in steps of the given sizes (append, then finish_step); the
// store's buffers as KvStore.kivi_buffers() gives them for the CPU store.
py::dict run_kivi_store(const std::string& spec, bool keys, int n_heads, int head_dim, FloatArray rows,
                        std::vector<int> steps) {
  const int64_t row = int64_t(n_heads) * head_dim, T = rows.size() / row;
  KiviGpuStore st(pyrt::parse_kv_spec(spec), keys, n_heads, head_dim, T);
  DevBuf dx(rows.data(), rows.nbytes());
  int64_t at = 0;
  for (int n : steps) {
    if (n <= 0 || at + n > T) throw std::invalid_argument("steps must cover the rows");
    st.append(dx.as<float>() + at * row, n);
    st.finish_step();
    at += n;
  }
  KiviCache c{};
  check(cudaMemcpy(&c, st.device_view(), sizeof(c), cudaMemcpyDeviceToHost), "kivi view");
  const int64_t entries = keys ? c.n_quant / c.group * row : int64_t(c.n_quant) * (row / c.group);
  auto fetch16 = [](const void* dev, int64_t n) {
    py::array_t<uint16_t> a(n);
    if (n) check(cudaMemcpy(a.mutable_data(), dev, size_t(n) * 2, cudaMemcpyDeviceToHost), "kivi fetch");
    return a;
  };
  py::array_t<uint8_t> codes(entries * c.group * c.bits / 8);
  if (codes.size())
    check(cudaMemcpy(codes.mutable_data(), c.codes, size_t(codes.size()), cudaMemcpyDeviceToHost), "kivi fetch");
  py::dict d;
  d["keys"] = keys, d["bits"] = c.bits, d["group"] = c.group;
  d["n_sink"] = c.n_sink, d["n_quant"] = c.n_quant, d["n_window"] = c.n_window;
  d["sink"] = fetch16(c.sink, c.n_sink * row), d["window"] = fetch16(c.window, c.n_window * row);
  d["scale"] = fetch16(c.scale, entries), d["min"] = fetch16(c.min, entries), d["codes"] = codes;
  return d;
}

// x [K] or [rows, K] (a batch of decode steps) -> y of the same leading shape, [N] or [rows, N].
py::tuple run_gemv(int type, ByteArray w, FloatArray x, int iters) {
  if (x.ndim() != 1 && x.ndim() != 2) throw std::invalid_argument("x must be [K] or [rows, K]");
  const int rows = x.ndim() == 2 ? int(x.shape(0)) : 1, K = int(x.shape(x.ndim() - 1)), N = int(w.shape(0));
  DevBuf dw(w.data(), w.nbytes()), dx(x.data(), x.nbytes()), dy(size_t(rows) * N * 4);
  dy.poison();
  auto launch = [&] { return gemv_quant_rows(type, dw.ptr, dx.as<float>(), rows, dy.as<float>(), N, K, nullptr); };
  const float ms = run_launch(launch, iters, "gemv_quant");
  py::array_t<float> y = x.ndim() == 2 ? py::array_t<float>({rows, N}) : py::array_t<float>(N);
  dy.to_host(y.mutable_data());
  return py::make_tuple(y, ms);
}

py::tuple run_gemm_f16(HalfArray x, HalfArray w, int iters) {
  if (x.ndim() != 2 || w.ndim() != 2 || x.shape(1) != w.shape(1)) throw std::invalid_argument("x [T, K] and w [N, K]");
  const int T = int(x.shape(0)), K = int(x.shape(1)), N = int(w.shape(0));
  DevBuf dx(x.data(), x.nbytes()), dw(w.data(), w.nbytes()), dy(size_t(T) * N * 4);
  dy.poison();
  auto launch = [&] { return gemm_f16_tc(dx.as<half>(), dw.as<half>(), dy.as<float>(), T, N, K, N, nullptr); };
  const float ms = run_launch(launch, iters, "gemm_f16_tc");
  py::array_t<float> y({T, N});
  dy.to_host(y.mutable_data());
  return py::make_tuple(y, ms);
}

// x [T, K] fp16 times quantized rows [N, row_bytes] (ggml type, dequantized as tiles load) -> y [T, N].
py::tuple run_gemm_ggml(int type, HalfArray x, ByteArray w, int iters) {
  if (x.ndim() != 2 || w.ndim() != 2) throw std::invalid_argument("x [T, K] and w [N, row_bytes]");
  const int T = int(x.shape(0)), K = int(x.shape(1)), N = int(w.shape(0));
  DevBuf dx(x.data(), x.nbytes()), dw(w.data(), w.nbytes()), dy(size_t(T) * N * 4);
  dy.poison();
  auto launch = [&] { return gemm_ggml_tc(type, dx.as<half>(), dw.ptr, dy.as<float>(), T, N, K, N, nullptr); };
  const float ms = run_launch(launch, iters, "gemm_ggml_tc");
  py::array_t<float> y({T, N});
  dy.to_host(y.mutable_data());
  return py::make_tuple(y, ms);
}

// Quantized rows [N, row_bytes] -> fp16 bits [N, K].
py::array_t<uint16_t> run_dequant_f16(int type, ByteArray w, int K) {
  if (w.ndim() != 2) throw std::invalid_argument("w must be [N, row_bytes]");
  const int N = int(w.shape(0));
  DevBuf dw(w.data(), w.nbytes()), dout(size_t(N) * K * 2);
  dout.poison();
  check(dequant_rows_f16(type, dw.ptr, dout.as<half>(), N, K, nullptr), "dequant_rows_f16");
  check(cudaDeviceSynchronize(), "dequant_rows_f16 (sync)");
  py::array_t<uint16_t> out({N, K});
  dout.to_host(out.mutable_data());
  return out;
}

py::array_t<float> run_rms_norm(FloatArray x, FloatArray w, float eps) {
  if (x.ndim() != 2 || w.ndim() != 1 || w.shape(0) != x.shape(1)) throw std::invalid_argument("x [rows, n] and w [n]");
  const int rows = int(x.shape(0)), n = int(x.shape(1));
  DevBuf dx(x.data(), x.nbytes()), dw(w.data(), w.nbytes()), dy(x.nbytes());
  dy.poison();
  check(rms_norm(dx.as<float>(), dw.as<float>(), dy.as<float>(), rows, n, eps, nullptr), "rms_norm");
  check(cudaDeviceSynchronize(), "rms_norm (sync)");
  py::array_t<float> y({rows, n});
  dy.to_host(y.mutable_data());
  return y;
}

py::array_t<float> run_rope(FloatArray x, int n_heads, int head_dim, int n_rot, int pos0, FloatArray inv_freq,
                            bool neox) {
  if (x.ndim() != 2 || x.shape(1) != int64_t(n_heads) * head_dim)
    throw std::invalid_argument("x must be [T, n_heads * head_dim]");
  if (inv_freq.ndim() != 1 || inv_freq.shape(0) * 2 != n_rot)
    throw std::invalid_argument("inv_freq must hold n_rot / 2 values");
  const int T = int(x.shape(0));
  DevBuf dx(x.data(), x.nbytes()), df(inv_freq.data(), inv_freq.nbytes());
  check(rope(dx.as<float>(), T, n_heads, head_dim, n_rot, pos0, df.as<float>(), neox, nullptr), "rope");
  check(cudaDeviceSynchronize(), "rope (sync)");
  py::array_t<float> y({T, n_heads * head_dim});
  dx.to_host(y.mutable_data());
  return y;
}

py::array_t<float> run_swiglu(FloatArray gate, FloatArray up) {
  if (gate.size() != up.size()) throw std::invalid_argument("gate and up differ in size");
  DevBuf dg(gate.data(), gate.nbytes()), du(up.data(), up.nbytes());
  check(swiglu(dg.as<float>(), du.as<float>(), gate.size(), nullptr), "swiglu");
  check(cudaDeviceSynchronize(), "swiglu (sync)");
  py::array_t<float> y(gate.size());
  dg.to_host(y.mutable_data());
  return y;
}

}  // namespace

#ifndef PYRT_CUDA_MODULE_NAME
#define PYRT_CUDA_MODULE_NAME _cuda
#endif

PYBIND11_MODULE(PYRT_CUDA_MODULE_NAME, m) {
#ifdef PYRT_CUDA_SIM
  m.doc() = "pyruntime CUDA kernels compiled for the CPU simulator (kernels/sim): tests only, slow";
  m.attr("simulated") = true;
#else
  m.doc() = "pyruntime CUDA kernels (loaded lazily; usable without a GPU only to ask device_count())";
  m.attr("simulated") = false;
#endif
  pyrt::python::register_error_translator();
  m.def("device_count", &device_count);
  m.def("device_name", [] {
    cudaDeviceProp prop{};
    check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
    return std::string(prop.name);
  });
  m.def("sm_count", &sm_count);
  m.def("num_splits_heuristic", &num_splits_heuristic);
  m.def("kv_row_bytes", [](const std::string& f, int d) { return kv_row_bytes(parse_format(f), d); });
  m.def("flash_attn", &run_flash, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("causal"), py::arg("scale"),
        py::arg("iters") = 0);
  m.def("padding_free_attn", &run_padding_free, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("mask"),
        py::arg("causal"), py::arg("scale"), py::arg("iters") = 0);
  m.def("decode_attn", &run_decode, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("format"), py::arg("seqlens"),
        py::arg("n_splits") = 0, py::arg("scale") = 1.0f, py::arg("iters") = 0);
  m.def("decode_attn_lean", &run_decode_lean, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("format"),
        py::arg("seqlens"), py::arg("n_ctas") = 0, py::arg("scale") = 1.0f, py::arg("iters") = 0);
  m.def("decode_attn_kivi", &run_decode_kivi, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("n_kv_heads"),
        py::arg("n_splits") = 0, py::arg("scale") = 1.0f, py::arg("lean") = false, py::arg("n_ctas") = 0);
  m.def("kivi_store", &run_kivi_store, py::arg("spec"), py::arg("keys"), py::arg("n_heads"), py::arg("head_dim"),
        py::arg("rows"), py::arg("steps"));
  m.def("kv_append", &run_kv_append, py::arg("x"), py::arg("format"), py::arg("capacity"), py::arg("pos0"));
  m.def("gemv", &run_gemv, py::arg("type"), py::arg("w"), py::arg("x"), py::arg("iters") = 0);
  m.def("gemm_f16", &run_gemm_f16, py::arg("x"), py::arg("w"), py::arg("iters") = 0);
  m.def("gemm_ggml", &run_gemm_ggml, py::arg("type"), py::arg("x"), py::arg("w"), py::arg("iters") = 0);
  m.def("dequant_f16", &run_dequant_f16, py::arg("type"), py::arg("w"), py::arg("k"));
  m.def("rms_norm", &run_rms_norm, py::arg("x"), py::arg("w"), py::arg("eps"));
  m.def("rope", &run_rope, py::arg("x"), py::arg("n_heads"), py::arg("head_dim"), py::arg("n_rot"), py::arg("pos0"),
        py::arg("inv_freq"), py::arg("neox"));
  m.def("swiglu", &run_swiglu, py::arg("gate"), py::arg("up"));
}
