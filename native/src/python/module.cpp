// pybind11 layer: mirrors the C++ API 1:1. The typed, documented front is pyruntime/ (Python).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "backends/cpu/audio.h"
#include "backends/cpu/kernels.h"
#include "backends/cpu/ops.h"
#include "memory/kv_cache.h"
#include "memory/kv_store.h"
#include "models/t5.h"
#include "pyrt/delegate.h"
#include "pyrt/error.h"
#include "pyrt/ggml_types.h"
#include "pyrt/gguf.h"
#include "pyrt/model.h"
#include "pyrt/sampler.h"
#include "pyrt/tokenizer.h"
#include "python/errors.h"
#include "sched/calibration.h"
#include "sched/w8a8.h"

namespace py = pybind11;
using namespace pyrt;

namespace {

void check_head(const KvStore& st, int head) {
  if (head < 0 || head >= st.n_heads()) {
    throw Error(ErrorCode::kInvalidArgument,
                "head " + std::to_string(head) + " outside 0.." + std::to_string(st.n_heads() - 1));
  }
}

// A [w] or [rows, w] array as (rows, w).
std::pair<py::ssize_t, py::ssize_t> as_rows(const py::array& a, const std::string& what) {
  if (a.ndim() == 1) return {1, a.shape(0)};
  if (a.ndim() == 2) return {a.shape(0), a.shape(1)};
  throw Error(ErrorCode::kInvalidArgument,
              what + " must be 1-D or 2-D, got " + std::to_string(a.ndim()) + " dimensions");
}

py::object metadata_value(const GgufValue& v) {
  switch (v.type) {
    case GgufType::STRING: return py::str(v.s);
    case GgufType::BOOL: return py::bool_(v.u != 0);
    case GgufType::FLOAT32:
    case GgufType::FLOAT64: return py::float_(v.f);
    case GgufType::ARRAY: {
      py::list out;
      if (v.array_type == GgufType::STRING)
        for (std::string_view s : v.array_str) out.append(py::str(s.data(), s.size()));
      else if (v.array_type == GgufType::FLOAT32 || v.array_type == GgufType::FLOAT64)
        for (double d : v.array_float) out.append(d);
      else if (v.array_type == GgufType::BOOL)
        for (int64_t d : v.array_int) out.append(py::bool_(d != 0));
      else if (v.array_type == GgufType::ARRAY)
        for (const auto& n : v.array_nested) out.append(metadata_value(n));
      else
        for (int64_t d : v.array_int) out.append(d);
      return out;
    }
    case GgufType::UINT8:
    case GgufType::UINT16:
    case GgufType::UINT32:
    case GgufType::UINT64: return py::int_(v.u);
    default: return py::int_(v.as_int());
  }
}

py::str utf8(std::string_view s) {
  PyObject* o = PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "replace");
  if (!o) throw py::error_already_set();
  return py::reinterpret_steal<py::str>(o);
}

// The capability interfaces of a model or session, or kUnsupported saying what the model is not.
const EncoderDecoder& encoder_decoder_of(const Model& m) {
  if (!m.encoder_decoder()) {
    throw Error(ErrorCode::kUnsupported,
                "architecture '" + m.architecture() + "' has no encoder (encode() is for encoder-decoder models)");
  }
  return *m.encoder_decoder();
}
const SpeechEncoder& speech_of(const Model& m) {
  if (!m.speech()) {
    throw Error(ErrorCode::kUnsupported,
                "architecture '" + m.architecture() + "' is not a speech model (no audio front end)");
  }
  return *m.speech();
}
EncoderDecoderSession& encdec_session_of(Session& s) {
  EncoderDecoderSession* e = s.encoder_decoder();
  if (!e) {
    throw Error(ErrorCode::kUnsupported, "this model has no encoder (encoder input is for encoder-decoder models)");
  }
  return *e;
}

int32_t checked_id(int64_t id) {
  if (id < INT32_MIN || id > INT32_MAX)
    throw Error(ErrorCode::kOutOfRange, "token id " + std::to_string(id) + " does not fit in 32 bits");
  return static_cast<int32_t>(id);
}

std::vector<int32_t> ids_from(const py::array_t<int64_t, py::array::c_style | py::array::forcecast>& a) {
  if (a.ndim() != 1) throw Error(ErrorCode::kInvalidArgument, "token ids must be a 1-D sequence");
  std::vector<int32_t> ids(static_cast<size_t>(a.size()));
  auto r = a.unchecked<1>();
  for (py::ssize_t i = 0; i < a.size(); ++i) ids[i] = checked_id(r(i));
  return ids;
}

// The same from a sequence of Python ints, without numpy (generation's hot path never imports it).
std::vector<int32_t> ids_from(const py::sequence& s) {
  std::vector<int32_t> ids;
  ids.reserve(s.size());
  for (py::handle h : s) {
    int overflow = 0;
    const long long v = PyLong_AsLongLongAndOverflow(h.ptr(), &overflow);
    if (v == -1 && PyErr_Occurred()) throw py::error_already_set();
    if (overflow)
      throw Error(ErrorCode::kOutOfRange, "token id " + py::str(h).cast<std::string>() + " does not fit in 32 bits");
    ids.push_back(checked_id(v));
  }
  return ids;
}

// Logits of fed tokens, float32 [rows, vocab]. Exposed through the buffer protocol, so the SDK's
// generation loop samples from it without numpy and np.asarray() views it without a copy.
struct LogitRows {
  std::vector<float> values;
  py::ssize_t rows = 0, vocab = 0;
};

GgmlType type_by_name(const std::string& name) {
  for (uint32_t id = 0; id < 64; ++id) {
    const TypeTraits* t = type_traits(id);
    if (t && name == t->name) return static_cast<GgmlType>(id);
  }
  throw Error(ErrorCode::kInvalidArgument, "unknown tensor type '" + name + "'");
}

py::dict graph_dict(const W8A8Graph& g) {
  py::dict d;
  d["name"] = g.name;
  d["rows"] = g.rows;
  d["in_features"] = g.in_features;
  d["out_features"] = g.out_features;
  py::array_t<int8_t> w({g.out_features, g.in_features});
  std::copy(g.weight, g.weight + g.out_features * g.in_features, w.mutable_data());
  d["weight"] = w;
  d["weight_scales"] = py::array_t<float>(static_cast<py::ssize_t>(g.weight_scales.size()), g.weight_scales.data());
  d["per_tensor"] = g.per_tensor();
  d["input_scale"] = g.input_scale;
  d["output_scale"] = g.output_scale;
  return d;
}

// A delegate written in Python (pyruntime/delegates/): prepare(graph: dict) -> int,
// execute(handle, x: float32 [rows, in]) -> int8 [rows, out], release(handle), is_available() -> (bool, str).
// Calls come from the runtime's threads with the GIL released, so each one takes it.
class PythonDelegate : public Delegate {
 public:
  explicit PythonDelegate(py::object obj) : obj_(std::move(obj)) {}
  ~PythonDelegate() override {
    py::gil_scoped_acquire gil;
    obj_ = py::object();
  }
  std::string name() const override {
    py::gil_scoped_acquire gil;
    return obj_.attr("name").cast<std::string>();
  }
  bool is_available(std::string* why) const override {
    py::gil_scoped_acquire gil;
    auto r = obj_.attr("is_available")().cast<std::pair<bool, std::string>>();
    if (why) *why = r.second;
    return r.first;
  }
  int prepare(const W8A8Graph& g) override {
    py::gil_scoped_acquire gil;
    const int h = obj_.attr("prepare")(graph_dict(g)).cast<int>();
    // Outputs are copied by the shape recorded here, so a handle may name only one graph.
    if (!shapes_.emplace(h, std::make_tuple(g.rows, g.in_features, g.out_features)).second) {
      throw Error(ErrorCode::kInternal, "delegate '" + obj_.attr("name").cast<std::string>() + "' returned handle " +
                                            std::to_string(h) + " for a second graph ('" + g.name + "')");
    }
    return h;
  }
  void execute(int handle, const float* x, int8_t* y_q) override {
    py::gil_scoped_acquire gil;
    const auto it = shapes_.find(handle);
    if (it == shapes_.end()) throw Error(ErrorCode::kInvalidArgument, "unknown graph handle " + std::to_string(handle));
    const auto [rows, in, out] = it->second;
    py::array_t<float> xa({rows, in}, x);  // a copy: the delegate may keep it
    auto y = py::array_t<int8_t, py::array::c_style | py::array::forcecast>(obj_.attr("execute")(handle, xa));
    if (y.ndim() != 2 || y.shape(0) != rows || y.shape(1) != out) {
      throw Error(ErrorCode::kInternal,
                  "delegate '" + obj_.attr("name").cast<std::string>() + "' returned the wrong output shape");
    }
    std::copy(y.data(), y.data() + rows * out, y_q);
  }
  std::string runs_on() const override {
    py::gil_scoped_acquire gil;
    return obj_.attr("runs_on")().cast<std::string>();
  }
  void release(int handle) override {
    py::gil_scoped_acquire gil;
    shapes_.erase(handle);
    obj_.attr("release")(handle);
  }

 private:
  py::object obj_;
  std::map<int, std::tuple<int64_t, int64_t, int64_t>> shapes_;
};

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "pyruntime native core (use the pyruntime package, not this module directly)";

  python::register_error_translator();

  m.def("supported_architectures", &supported_architectures);
  m.def("kernels_name", [] { return std::string(cpu::kernels().name); });
  m.def("set_kernels", [](const std::string& n) { return cpu::set_kernels(n.c_str()); });
  m.def(
      "measure_peak",
      [](int threads) {
        py::gil_scoped_release nogil;
        const cpu::PeakRates r = cpu::measure_peak(threads);
        return std::make_pair(r.fp32_gflops, r.int8_gops);
      },
      py::arg("threads"), "Measured fp32 FMA GFLOP/s and int8 GOP/s of `threads` threads (0, 0 without a probe).");
  m.def("fp32_to_fp16", [](py::array_t<float, py::array::c_style | py::array::forcecast> a) {
    py::array_t<uint16_t> out(a.size());
    for (py::ssize_t i = 0; i < a.size(); ++i) out.mutable_data()[i] = fp32_to_fp16(a.data()[i]);
    return out;
  });
  m.def(
      "quantize",
      [](const std::string& type, py::array_t<float, py::array::c_style | py::array::forcecast> a) {
        const GgmlType t = type_by_name(type);
        const int64_t n = a.size();
        if (n % 32) throw Error(ErrorCode::kInvalidArgument, "quantize needs a multiple of 32 values");
        std::string out(row_bytes(t, n), '\0');
        if (t == GgmlType::Q8_0)
          quantize_row_q8_0(a.data(), reinterpret_cast<BlockQ8_0*>(out.data()), n);
        else if (t == GgmlType::Q4_0)
          quantize_row_q4_0(a.data(), reinterpret_cast<BlockQ4_0*>(out.data()), n);
        else if (t == GgmlType::Q4_1)
          quantize_row_q4_1(a.data(), reinterpret_cast<BlockQ4_1*>(out.data()), n);
        else
          throw Error(ErrorCode::kUnsupported, "no quantizer for " + type);
        return py::bytes(out);
      },
      py::arg("type"), py::arg("values"));
  m.def("dequantize", [](const std::string& type, const py::bytes& data, int64_t n) {
    const GgmlType t = type_by_name(type);
    const std::string s = data;
    if (n < 0 || n % type_traits(t).block_size || row_bytes(t, n) != s.size())
      throw Error(ErrorCode::kInvalidArgument, "byte size does not match the element count");
    py::array_t<float> out(n);
    dequantize_row(t, s.data(), out.mutable_data(), n);
    return out;
  });
  m.def("dot_row", [](const std::string& type, const py::bytes& row,
                      py::array_t<float, py::array::c_style | py::array::forcecast> x) {
    const GgmlType t = type_by_name(type);
    const std::string s = row;
    if (row_bytes(t, x.size()) != s.size()) throw Error(ErrorCode::kInvalidArgument, "row bytes do not match x");
    return cpu::dot_row(cpu::kernels(), t, s.data(), x.data(), x.size());
  });

  m.def(
      "quantize_q8a",
      [](py::array_t<float, py::array::c_style | py::array::forcecast> x) {
        if (x.size() % 32) throw Error(ErrorCode::kInvalidArgument, "quantize_q8a needs a multiple of 32 values");
        const int64_t nb = x.size() / 32;
        std::vector<cpu::BlockQ8A> q(static_cast<size_t>(nb));
        cpu::kernels().quantize_q8a(x.data(), x.size(), q.data());
        py::array_t<float> d(nb), s(nb);
        py::array_t<int8_t> qs({static_cast<py::ssize_t>(nb), static_cast<py::ssize_t>(32)});
        for (int64_t b = 0; b < nb; ++b) {
          d.mutable_at(b) = q[b].d;
          s.mutable_at(b) = q[b].s;
          std::copy(q[b].qs, q[b].qs + 32, qs.mutable_data() + b * 32);
        }
        return py::make_tuple(d, s, qs);
      },
      py::arg("x"));
  m.def(
      "dot_row_q8a",
      [](const std::string& type, const py::bytes& row,
         py::array_t<float, py::array::c_style | py::array::forcecast> x) {
        const GgmlType t = type_by_name(type);
        const std::string s = row;
        if (x.size() % 32 || row_bytes(t, x.size()) != s.size())
          throw Error(ErrorCode::kInvalidArgument, "row bytes do not match x");
        std::vector<cpu::BlockQ8A> q(static_cast<size_t>(x.size() / 32));
        cpu::kernels().quantize_q8a(x.data(), x.size(), q.data());
        return cpu::dot_row_q8a(cpu::kernels(), t, s.data(), q.data(), x.size());
      },
      py::arg("type"), py::arg("row"), py::arg("x"));
  m.def(
      "gemm_q8a",
      [](const std::string& type, const py::bytes& rows, int64_t n_rows,
         py::array_t<float, py::array::c_style | py::array::forcecast> x) {
        const GgmlType t = type_by_name(type);
        if (x.ndim() != 2 || x.shape(1) % 32)
          throw Error(ErrorCode::kInvalidArgument, "x must be [n_tok, K] with K % 32 == 0");
        const int64_t n_tok = x.shape(0), K = x.shape(1);
        const std::string w = rows;
        const size_t stride = row_bytes(t, K);
        if (w.size() != stride * n_rows) throw Error(ErrorCode::kInvalidArgument, "rows bytes do not match n_rows x K");
        std::vector<cpu::BlockQ8A> q(static_cast<size_t>(n_tok * K / 32));
        for (int64_t i = 0; i < n_tok; ++i) cpu::kernels().quantize_q8a(x.data() + i * K, K, q.data() + i * K / 32);
        py::array_t<float> y({static_cast<py::ssize_t>(n_tok), static_cast<py::ssize_t>(n_rows)});
        cpu::kernels().gemm_q8a(t, reinterpret_cast<const uint8_t*>(w.data()), stride, n_rows, q.data(), n_tok, K,
                                y.mutable_data(), n_rows);
        return y;
      },
      py::arg("type"), py::arg("rows"), py::arg("n_rows"), py::arg("x"));
  m.def(
      "gemm_f32",
      [](py::array_t<float, py::array::c_style | py::array::forcecast> rows,
         py::array_t<float, py::array::c_style | py::array::forcecast> x) {
        if (rows.ndim() != 2 || x.ndim() != 2 || rows.shape(1) != x.shape(1))
          throw Error(ErrorCode::kInvalidArgument, "rows [n, K], x [t, K]");
        py::array_t<float> y({static_cast<py::ssize_t>(x.shape(0)), static_cast<py::ssize_t>(rows.shape(0))});
        cpu::kernels().gemm_f32(rows.data(), rows.shape(0), x.data(), x.shape(0), x.shape(1), y.mutable_data(),
                                rows.shape(0));
        return y;
      },
      py::arg("rows"), py::arg("x"));
  m.def("gemm_s8", [](py::array_t<int8_t, py::array::c_style | py::array::forcecast> rows,
                      py::array_t<int8_t, py::array::c_style | py::array::forcecast> x) {
    if (rows.ndim() != 2 || x.ndim() != 2 || rows.shape(1) != x.shape(1))
      throw Error(ErrorCode::kInvalidArgument, "gemm_s8 needs rows [N, K] and x [T, K]");
    const int64_t N = rows.shape(0), T = x.shape(0), K = x.shape(1);
    py::array_t<int32_t> acc({T, N});
    cpu::kernels().gemm_s8(rows.data(), N, x.data(), T, K, acc.mutable_data(), N);
    return acc;
  });
  m.def("builtin_delegates", &builtin_delegates);
  // factory(threads: int) -> a Python delegate object (see PythonDelegate).
  m.def("register_delegate", [](const std::string& name, py::function factory) {
    // Leaked on purpose: the registry is static and outlives the interpreter, which must not see a
    // Python object released after it has finalized.
    auto* held = new py::function(std::move(factory));
    register_delegate(name, [held](ThreadPool& pool) -> std::unique_ptr<Delegate> {
      py::gil_scoped_acquire gil;
      return std::make_unique<PythonDelegate>((*held)(pool.size()));
    });
  });
  // The W8A8 path of one linear for tests: reference delegate result and shadow-corrected float output.
  m.def(
      "w8a8_linear",
      [](py::array_t<float, py::array::c_style | py::array::forcecast> w,
         py::array_t<float, py::array::c_style | py::array::forcecast> x, float input_scale, float output_scale,
         bool clip_input, bool clip_output, std::vector<int32_t> hot, bool outliers, bool per_channel) {
        if (w.ndim() != 2 || x.ndim() != 2 || w.shape(1) != x.shape(1))
          throw Error(ErrorCode::kInvalidArgument, "w8a8_linear needs w [N, K] and x [T, K]");
        const int64_t N = w.shape(0), K = w.shape(1), T = x.shape(0);
        Weight wt;
        wt.type = GgmlType::F32;
        wt.data = reinterpret_cast<const uint8_t*>(w.data());
        wt.rows = N;
        wt.cols = K;
        wt.row_stride = K * sizeof(float);
        W8A8Linear lin(wt, "test", W8A8Calibration{input_scale, output_scale, clip_input, clip_output, std::move(hot)},
                       per_channel);
        ThreadPool pool(1);
        auto d = create_delegate("reference", pool);
        const int h = d->prepare(lin.graph(T));
        py::array_t<int8_t> y_q({T, N});
        d->execute(h, x.data(), y_q.mutable_data());
        py::array_t<float> y({T, N});
        for (int64_t i = 0; i < T * N; ++i) y.mutable_data()[i] = y_q.data()[i] * output_scale;
        W8A8Linear::ShadowCounts c;
        if (outliers) lin.shadow_correct(x.data(), y_q.data(), T, y.mutable_data(), &c);
        py::dict counts;
        counts["input_outliers"] = c.input_outliers;
        counts["cold_channels"] = c.cold_channels;
        counts["output_outliers"] = c.output_outliers;
        py::array_t<int8_t> wq({N, K});
        std::copy(lin.weight(), lin.weight() + N * K, wq.mutable_data());
        const auto& sw = lin.weight_scales();
        py::object scales = per_channel ? py::object(py::array_t<float>(static_cast<py::ssize_t>(sw.size()), sw.data()))
                                        : py::object(py::float_(sw[0]));
        return py::make_tuple(y_q, y, wq, scales, counts);
      },
      py::arg("w"), py::arg("x"), py::arg("input_scale"), py::arg("output_scale"), py::arg("clip_input") = false,
      py::arg("clip_output") = false, py::arg("hot_channels") = std::vector<int32_t>{}, py::arg("outliers") = true,
      py::arg("per_channel") = false);
  m.def(
      "f16_to_f32_row",
      [](py::array_t<uint16_t, py::array::c_style | py::array::forcecast> h) {
        py::array_t<float> out(h.size());
        cpu::kernels().f16_to_f32_row(h.data(), out.mutable_data(), h.size());
        return out;
      },
      py::arg("h"));
  m.def(
      "resample",
      [](py::array_t<float, py::array::c_style | py::array::forcecast> x, int from_hz, int to_hz) {
        if (x.ndim() != 1) throw Error(ErrorCode::kInvalidArgument, "audio must be 1-D mono samples");
        std::vector<float> y;
        {
          py::gil_scoped_release nogil;
          y = resample(x.data(), x.shape(0), from_hz, to_hz);
        }
        py::array_t<float> out(static_cast<py::ssize_t>(y.size()));
        std::copy(y.begin(), y.end(), out.mutable_data());
        return out;
      },
      py::arg("samples"), py::arg("from_hz"), py::arg("to_hz"));
  m.def("t5_relative_bucket", &t5_relative_bucket, py::arg("rel"), py::arg("bidirectional"),
        py::arg("num_buckets") = 32, py::arg("max_distance") = 128);
  m.def("kv_spec_name", [](const std::string& s) { return parse_kv_spec(s).name(); });
  m.def(
      "kivi_quantize",
      [](py::array_t<float, py::array::c_style | py::array::forcecast> x, int bits, bool clip) {
        std::vector<uint8_t> codes(static_cast<size_t>((x.size() * bits + 7) / 8));
        uint16_t scale = 0, mn = 0;
        kivi_quantize_group(x.data(), static_cast<int>(x.size()), 1, bits, &scale, &mn, codes.data(), clip);
        return py::make_tuple(scale, mn, py::bytes(reinterpret_cast<const char*>(codes.data()), codes.size()));
      },
      py::arg("x"), py::arg("bits"), py::arg("clip") = false);

  // One KV store on its own: the KIVI schedule and the fused attention math are tested through it.
  py::class_<KvStore>(m, "KvStore")
      .def(py::init([](const std::string& spec, bool keys, int n_heads, int head_dim) {
             const KvSpec s = parse_kv_spec(spec);
             return keys ? make_key_store(s, n_heads, head_dim) : make_value_store(s, n_heads, head_dim);
           }),
           py::arg("spec"), py::arg("keys"), py::arg("n_heads"), py::arg("head_dim"))
      .def("append",
           [](KvStore& st, py::array_t<float, py::array::c_style | py::array::forcecast> rows) {
             st.append(rows.data(), rows.ndim() == 2 ? rows.shape(0) : 1);
           })
      .def("finish_step", &KvStore::finish_step)
      .def("kivi_buffers",
           [](const KvStore& st) {
             // Copies of a KIVI store's buffers (fp16 as uint16 bits) in its own layout (KiviView).
             const KiviView v = st.kivi_view();
             const int64_t row = int64_t(st.n_heads()) * st.head_dim();
             auto u16 = [](const uint16_t* p, int64_t n) {
               py::array_t<uint16_t> a(n);
               if (n) std::memcpy(a.mutable_data(), p, size_t(n) * 2);
               return a;
             };
             const int64_t code_bytes = v.n_entries * v.group * v.bits / 8;
             py::array_t<uint8_t> codes(code_bytes);
             if (code_bytes) std::memcpy(codes.mutable_data(), v.codes, size_t(code_bytes));
             py::dict d;
             d["keys"] = v.keys, d["bits"] = v.bits, d["group"] = v.group;
             d["n_sink"] = v.n_sink, d["n_quant"] = v.n_quant, d["n_window"] = v.n_window;
             d["sink"] = u16(v.sink, v.n_sink * row), d["window"] = u16(v.window, v.n_window * row);
             d["scale"] = u16(v.scale, v.n_entries), d["min"] = u16(v.min, v.n_entries), d["codes"] = codes;
             return d;
           })
      .def_property_readonly("size", &KvStore::size)
      .def_property_readonly("bytes", &KvStore::bytes)
      .def("split_sizes", &KvStore::split_sizes)
      // q [d] or [nq, d]: nq query heads reading KV head `head` at once (the GQA path), scores [nq, n].
      .def(
          "dot_keys",
          [](const KvStore& st, int head, py::array_t<float, py::array::c_style | py::array::forcecast> q, int64_t n) {
            if (n < 0 || n > st.size())
              throw Error(ErrorCode::kInvalidArgument,
                          "n = " + std::to_string(n) + " outside the " + std::to_string(st.size()) + " stored tokens");
            check_head(st, head);
            const auto [nq, d] = as_rows(q, "q");
            if (d != st.head_dim())
              throw Error(ErrorCode::kInvalidArgument, "q has " + std::to_string(d) +
                                                           " values per row, the head dimension is " +
                                                           std::to_string(st.head_dim()));
            py::array_t<float> out(std::vector<py::ssize_t>{nq, static_cast<py::ssize_t>(n)});
            st.dot_keys_multi(head, q.data(), d, static_cast<int>(nq), n, out.mutable_data(), n);
            if (q.ndim() == 1) return out.attr("reshape")(n).cast<py::array_t<float>>();
            return out;
          },
          py::arg("head"), py::arg("q"), py::arg("n"))
      // p [n] or [nq, n] weights over the first n tokens -> [head_dim] or [nq, head_dim].
      .def(
          "accumulate",
          [](const KvStore& st, int head, py::array_t<float, py::array::c_style | py::array::forcecast> p,
             int head_dim) {
            check_head(st, head);
            if (head_dim != st.head_dim())
              throw Error(ErrorCode::kInvalidArgument,
                          "head_dim " + std::to_string(head_dim) + ", the store's is " + std::to_string(st.head_dim()));
            const auto [nq, n] = as_rows(p, "p");
            if (n > st.size())
              throw Error(ErrorCode::kInvalidArgument,
                          std::to_string(n) + " weights but " + std::to_string(st.size()) + " stored tokens");
            py::array_t<float> out(std::vector<py::ssize_t>{nq, head_dim});
            std::fill(out.mutable_data(), out.mutable_data() + nq * head_dim, 0.0f);
            st.accumulate_multi(head, p.data(), n, static_cast<int>(nq), n, out.mutable_data(), head_dim);
            if (p.ndim() == 1) return out.attr("reshape")(head_dim).cast<py::array_t<float>>();
            return out;
          },
          py::arg("head"), py::arg("p"), py::arg("head_dim"))
      // Prefill's blocked reads: row i of q [nq, d] over tokens key0 .. key0 + n_of[i] - 1 -> [nq, max n_of].
      .def(
          "dot_keys_rows",
          [](const KvStore& st, int head, py::array_t<float, py::array::c_style | py::array::forcecast> q,
             const std::vector<int64_t>& n_of, int64_t key0) {
            check_head(st, head);
            const auto [nq, d] = as_rows(q, "q");
            if (d != st.head_dim() || static_cast<size_t>(nq) != n_of.size())
              throw Error(ErrorCode::kInvalidArgument, "q must be [len(n_of), head_dim]");
            int64_t n = 0;
            for (int64_t c : n_of) {
              if (c < 0 || key0 < 0 || key0 + c > st.size())
                throw Error(ErrorCode::kInvalidArgument,
                            "keys past the " + std::to_string(st.size()) + " stored tokens");
              n = std::max(n, c);
            }
            py::array_t<float> out(std::vector<py::ssize_t>{nq, static_cast<py::ssize_t>(n)});
            std::fill(out.mutable_data(), out.mutable_data() + nq * n, 0.0f);
            st.dot_keys_rows(head, q.data(), d, nq, n_of.data(), out.mutable_data(), n, key0);
            return out;
          },
          py::arg("head"), py::arg("q"), py::arg("n_of"), py::arg("key0"))
      // p [nq, max n_of] (zeros past each row's count) -> [nq, head_dim] sums over tokens from key0.
      .def(
          "accumulate_rows",
          [](const KvStore& st, int head, py::array_t<float, py::array::c_style | py::array::forcecast> p,
             const std::vector<int64_t>& n_of, int64_t key0) {
            check_head(st, head);
            const auto [nq, n] = as_rows(p, "p");
            if (static_cast<size_t>(nq) != n_of.size())
              throw Error(ErrorCode::kInvalidArgument, "p must have len(n_of) rows");
            for (int64_t c : n_of) {
              if (c < 0 || c > n || key0 < 0 || key0 + c > st.size())
                throw Error(ErrorCode::kInvalidArgument, "weights past the stored tokens or the row");
            }
            const int d = st.head_dim();
            py::array_t<float> out(std::vector<py::ssize_t>{nq, d});
            std::fill(out.mutable_data(), out.mutable_data() + nq * d, 0.0f);
            st.accumulate_rows(head, p.data(), n, nq, n_of.data(), out.mutable_data(), d, key0);
            return out;
          },
          py::arg("head"), py::arg("p"), py::arg("n_of"), py::arg("key0"));

  // A decoder layer's elementwise steps as the CPU runs them (references for the CUDA kernels' tests).
  m.def(
      "rms_norm_rows",
      [](py::array_t<float, py::array::c_style | py::array::forcecast> x,
         py::array_t<float, py::array::c_style | py::array::forcecast> w, float eps) {
        const auto [rows, n] = as_rows(x, "x");
        if (w.ndim() != 1 || w.shape(0) != n)
          throw Error(ErrorCode::kInvalidArgument, "w must hold one weight per column of x");
        py::array_t<float> y(std::vector<py::ssize_t>{rows, n});
        rms_norm_rows(x.data(), w.data(), y.mutable_data(), rows, n, eps);
        return y;
      },
      py::arg("x"), py::arg("w"), py::arg("eps"));
  m.def(
      "rope",
      [](py::array_t<float, py::array::c_style | py::array::forcecast> x, int n_heads, int head_dim, int n_rot,
         int64_t pos0, const std::vector<float>& inv_freq, bool neox) {
        const auto [T, width] = as_rows(x, "x");
        if (n_heads <= 0 || head_dim <= 0 || width != int64_t(n_heads) * head_dim)
          throw Error(ErrorCode::kInvalidArgument, "x rows must hold n_heads * head_dim values");
        if (n_rot <= 0 || n_rot % 2 || n_rot > head_dim || inv_freq.size() * 2 != size_t(n_rot))
          throw Error(ErrorCode::kInvalidArgument, "n_rot must be even, at most head_dim, with n_rot / 2 frequencies");
        py::array_t<float> y(std::vector<py::ssize_t>{T, width});
        std::copy_n(x.data(), T * width, y.mutable_data());
        for (int64_t t = 0; t < T; ++t)
          rope(y.mutable_data() + t * width, n_heads, head_dim, n_rot, static_cast<float>(pos0 + t), inv_freq,
               neox ? RopeMode::kNeox : RopeMode::kNorm);
        return y;
      },
      py::arg("x"), py::arg("n_heads"), py::arg("head_dim"), py::arg("n_rot"), py::arg("pos0"), py::arg("inv_freq"),
      py::arg("neox"));
  m.def(
      "silu_mul",
      [](py::array_t<float, py::array::c_style | py::array::forcecast> gate,
         py::array_t<float, py::array::c_style | py::array::forcecast> up) {
        if (gate.size() != up.size()) throw Error(ErrorCode::kInvalidArgument, "gate and up differ in size");
        py::array_t<float> y(gate.size());
        std::copy_n(gate.data(), gate.size(), y.mutable_data());
        silu_mul(y.mutable_data(), up.data(), gate.size());
        return y;
      },
      py::arg("gate"), py::arg("up"));

  // Attention of T query rows (positions q_pos0..) over the first n_keys of two stores, as a model
  // layer runs it (tests of the blocked prompt path and its online-softmax tiles).
  m.def(
      "attend",
      [](const KvStore& k, const KvStore& v, py::array_t<float, py::array::c_style | py::array::forcecast> q,
         int64_t q_pos0, int64_t n_keys, int n_heads, bool causal, int64_t online_from, int64_t key_tile, int threads) {
        const int n_kv = k.n_heads(), d = k.head_dim();
        if (v.n_heads() != n_kv || v.head_dim() != d)
          throw Error(ErrorCode::kInvalidArgument, "keys and values differ in shape");
        if (n_heads <= 0 || n_heads % n_kv != 0)
          throw Error(ErrorCode::kInvalidArgument,
                      "n_heads must be a multiple of the " + std::to_string(n_kv) + " KV heads");
        if (n_keys < 0 || n_keys > k.size() || n_keys > v.size())
          throw Error(ErrorCode::kInvalidArgument, "n_keys = " + std::to_string(n_keys) + " outside the stored tokens");
        const auto [T, width] = as_rows(q, "q");
        if (width != int64_t(n_heads) * d)
          throw Error(ErrorCode::kInvalidArgument, "q rows must hold n_heads * head_dim values");
        AttentionOptions opt;
        opt.causal = causal;
        opt.online_from = online_from;
        opt.key_tile = key_tile;
        py::array_t<float> out(std::vector<py::ssize_t>{T, width});
        const float* qp = q.data();
        float* op = out.mutable_data();
        {
          py::gil_scoped_release nogil;
          ThreadPool pool(std::max(1, threads));
          attend(k, v, qp, q_pos0, T, n_keys, AttentionShape{n_heads, n_kv, d}, opt, op, pool);
        }
        return out;
      },
      py::arg("keys"), py::arg("values"), py::arg("q"), py::arg("q_pos0"), py::arg("n_keys"), py::arg("n_heads"),
      py::arg("causal") = true, py::arg("online_from") = 0, py::arg("key_tile") = 0, py::arg("threads") = 2);

  py::class_<GgufFile, std::shared_ptr<GgufFile>>(m, "GGUFFile")
      .def_static("open", &GgufFile::open, py::arg("path"))
      .def_static(
          "parse_bytes",
          [](const py::bytes& b, bool with_tokenizer) {
            // Parses a copy of the bytes (fuzzer, corruption tests); optionally builds and exercises the
            // tokenizer the metadata describes, which is the other consumer of untrusted metadata.
            std::string s = b;
            auto f = GgufFile::from_buffer(reinterpret_cast<const uint8_t*>(s.data()), s.size(), "<bytes>");
            if (with_tokenizer && f->find("tokenizer.ggml.model")) {
              auto tok = Tokenizer::from_gguf(*f);
              auto ids = tok->encode("Hello world 123 <|im_end|>", true, true);
              tok->decode(ids);
            }
            return py::make_tuple(f->metadata().size(), f->tensors().size());
          },
          py::arg("data"), py::arg("with_tokenizer") = false)
      .def_property_readonly("path", &GgufFile::path)
      .def_property_readonly("version", &GgufFile::version)
      .def_property_readonly("alignment", &GgufFile::alignment)
      .def_property_readonly("metadata",
                             [](const GgufFile& f) {
                               py::dict d;
                               for (const auto& [k, v] : f.metadata()) d[py::str(k)] = metadata_value(v);
                               return d;
                             })
      .def_property_readonly("tensors",
                             [](const GgufFile& f) {
                               py::list out;
                               for (const auto& t : f.tensors()) {
                                 py::dict d;
                                 d["name"] = t.name;
                                 d["type"] = type_name(static_cast<uint32_t>(t.type));
                                 d["shape"] = t.ne;
                                 d["offset"] = t.offset;
                                 d["nbytes"] = t.nbytes;
                                 out.append(d);
                               }
                               return out;
                             })
      .def("tensor_f32", [](const GgufFile& f, const std::string& name) {
        const GgufTensorInfo* t = f.find_tensor(name);
        if (!t) throw Error(ErrorCode::kInvalidArgument, "no tensor named '" + name + "'");
        std::vector<py::ssize_t> shape(t->ne.rbegin(), t->ne.rend());
        py::array_t<float> out(shape);
        dequantize_row(t->type, t->data, out.mutable_data(), t->n_elements());
        return out;
      });

  py::class_<Tokenizer, std::shared_ptr<Tokenizer>>(m, "Tokenizer")
      .def_static("from_gguf", [](const std::string& path) { return Tokenizer::from_gguf(*GgufFile::open(path)); })
      .def("encode", &Tokenizer::encode, py::arg("text"), py::arg("add_special") = true,
           py::arg("parse_special") = false, py::call_guard<py::gil_scoped_release>())
      .def("decode", [](const Tokenizer& t, const std::vector<int32_t>& ids) { return utf8(t.decode(ids)); })
      .def("token_bytes", [](const Tokenizer& t, int32_t id) { return py::bytes(t.token_bytes(id)); })
      .def("token_text", [](const Tokenizer& t, int32_t id) { return utf8(t.token_text(id)); })
      .def("is_control", &Tokenizer::is_control)
      .def_property_readonly("vocab_size", &Tokenizer::vocab_size)
      .def_property_readonly("bos_id", &Tokenizer::bos)
      .def_property_readonly("eos_id", &Tokenizer::eos)
      .def_property_readonly("eog_ids", &Tokenizer::eog_ids)
      .def_property_readonly("add_bos", &Tokenizer::add_bos)
      .def_property_readonly("pre", &Tokenizer::pre)
      .def_property_readonly("kind", [](const Tokenizer& t) {
        switch (t.kind()) {
          case Tokenizer::Kind::kBpe: return "bpe";
          case Tokenizer::Kind::kSpm: return "spm";
          case Tokenizer::Kind::kUnigram: return "unigram";
        }
        return "unknown";
      });

  py::class_<LogitRows>(m, "Logits", py::buffer_protocol())
      .def_buffer([](LogitRows& l) {
        return py::buffer_info(
            l.values.data(), sizeof(float), py::format_descriptor<float>::format(), 2, {l.rows, l.vocab},
            {static_cast<py::ssize_t>(l.vocab * sizeof(float)), static_cast<py::ssize_t>(sizeof(float))});
      })
      .def_readonly("rows", &LogitRows::rows)
      .def_readonly("vocab", &LogitRows::vocab);

  py::class_<Session>(m, "Session")
      .def(
          "feed",
          [](Session& s, const py::sequence& ids, bool all_logits, int64_t vocab) {
            std::vector<int32_t> v = ids_from(ids);
            if (v.empty()) throw Error(ErrorCode::kInvalidArgument, "feed() needs at least one token");
            if (vocab <= 0)
              throw Error(ErrorCode::kInvalidArgument, "vocab must be positive, got " + std::to_string(vocab));
            auto out = std::make_unique<LogitRows>();
            out->rows = all_logits ? static_cast<py::ssize_t>(v.size()) : 1;
            out->vocab = static_cast<py::ssize_t>(vocab);
            out->values.resize(static_cast<size_t>(out->rows * out->vocab));
            {
              py::gil_scoped_release nogil;
              s.feed(v.data(), static_cast<int64_t>(v.size()), out->values.data(), all_logits);
            }
            return out;
          },
          py::arg("ids"), py::arg("all_logits"), py::arg("vocab"))
      .def(
          "set_encoder_input",
          [](Session& s, const py::sequence& ids) {
            std::vector<int32_t> v = ids_from(ids);
            EncoderDecoderSession& e = encdec_session_of(s);
            py::gil_scoped_release nogil;
            e.set_encoder_input(v.data(), static_cast<int64_t>(v.size()));
          },
          py::arg("ids"))
      .def(
          "set_encoder_states",
          [](Session& s, py::array_t<float, py::array::c_style | py::array::forcecast> states) {
            if (states.ndim() != 2)
              throw Error(ErrorCode::kInvalidArgument, "encoder states must be a 2-D array [n, embedding_length]");
            const float* src = states.data();
            const int64_t n = states.shape(0), width = states.shape(1);
            EncoderDecoderSession& e = encdec_session_of(s);
            py::gil_scoped_release nogil;
            e.set_encoder_states(src, n, width);
          },
          py::arg("states"))
      .def_property_readonly("encoder_length",
                             [](Session& s) {
                               EncoderDecoderSession* e = s.encoder_decoder();
                               return e ? e->encoder_length() : int64_t(0);
                             })
      .def("prefill_trace_json", &Session::prefill_trace_json)
      .def(
          "cached_rows",
          [](const Session& s, int layer, bool keys) {
            std::vector<float> r = s.cached_rows(layer, keys);
            const py::ssize_t n = s.n_past();
            return py::array_t<float>({n, n ? static_cast<py::ssize_t>(r.size()) / n : py::ssize_t(0)}, r.data());
          },
          py::arg("layer"), py::arg("keys"))
      .def("reset", &Session::reset)
      .def_property_readonly("n_past", &Session::n_past)
      .def_property_readonly("n_ctx", &Session::n_ctx)
      .def_property_readonly("kv_bytes", &Session::kv_bytes)
      .def("stats", &Session::stats);

  py::class_<Model, std::shared_ptr<Model>>(m, "Model")
      .def_static(
          "load",
          [](const std::string& path, int threads, const std::string& kv_k, const std::string& kv_v, int64_t n_ctx,
             const std::string& activations, int chunk, const std::string& delegate, bool outliers, int32_t pad_token,
             bool overlap, int delegate_threads, bool per_channel_weights, const std::string& device) {
            ModelOptions o;
            o.device = device;
            o.prefill.per_channel_weights = per_channel_weights;
            o.prefill.delegate_threads = delegate_threads;
            o.prefill.overlap = overlap;
            o.prefill.chunk = chunk;
            o.prefill.delegate = delegate;
            o.prefill.outliers = outliers;
            o.prefill.pad_token = pad_token;
            o.n_threads = threads;
            o.kv_k = kv_k;
            o.kv_v = kv_v;
            o.n_ctx = n_ctx;
            o.activations = activations;
            py::gil_scoped_release nogil;
            return Model::load(path, o);
          },
          py::arg("path"), py::arg("threads") = 0, py::arg("kv_k") = "f16", py::arg("kv_v") = "f16",
          py::arg("n_ctx") = 0, py::arg("activations") = "q8", py::arg("chunk") = 0, py::arg("delegate") = "",
          py::arg("outliers") = true, py::arg("pad_token") = 0, py::arg("overlap") = true,
          py::arg("delegate_threads") = 0, py::arg("per_channel_weights") = true, py::arg("device") = "cpu")
      .def_property_readonly("activations", [](const Model& mm) { return mm.options().activations; })
      .def_property_readonly("prefill_chunk", [](const Model& mm) { return mm.options().prefill.chunk; })
      .def_property_readonly("delegate", [](const Model& mm) { return mm.options().prefill.delegate; })
      .def_property_readonly("delegate_runs_on",
                             [](const Model& mm) {
                               const DelegatedPrefill* d = mm.delegated_prefill();
                               return d ? d->runs_on() : std::string();
                             })
      .def("delegate_graphs",
           [](const Model& mm) {
             py::list out;
             if (const DelegatedPrefill* d = mm.delegated_prefill())
               for (const W8A8Graph& g : d->graphs()) out.append(graph_dict(g));
             return out;
           })
      .def(
          "calibrate_linears",
          [](Model& mm, const std::vector<std::vector<int32_t>>& samples) {
            std::vector<LinearCalibration> cal;
            {
              py::gil_scoped_release nogil;
              cal = calibrate_linears(mm, samples);
            }
            py::list out;
            for (const auto& c : cal) {
              py::dict d;
              d["name"] = c.name;
              for (const auto& [side, st] :
                   {std::pair<const char*, const ActivationStats*>{"input", &c.input}, {"output", &c.output}}) {
                py::dict e;
                e["count"] = st->count();
                e["max"] = st->max_abs();
                e["top_0_1"] = st->top_0_1();
                e["channel_max"] =
                    py::array_t<float>(static_cast<py::ssize_t>(st->channel_max().size()), st->channel_max().data());
                d[side] = e;
              }
              out.append(d);
            }
            return out;
          },
          py::arg("samples"),
          "Per-linear |activation| statistics (max, 99.9th percentile, per-channel max) over the samples")
      .def(
          "count_input_outliers",
          [](Model& mm, const std::vector<std::vector<int32_t>>& samples,
             const std::map<std::string, float>& thresholds) {
            std::map<std::string, std::vector<int64_t>> c;
            {
              py::gil_scoped_release nogil;
              c = count_input_outliers(mm, samples, thresholds);
            }
            return c;
          },
          py::arg("samples"), py::arg("thresholds"), "Per input channel: how often |x| exceeded the linear's threshold")
      .def("new_session", &Model::new_session, py::arg("n_ctx") = 0, py::keep_alive<0, 1>())
      .def(
          "decode_batch",
          [](Model& mm, std::vector<Session*> sessions, std::vector<int32_t> tokens) {
            if (tokens.size() != sessions.size()) {
              throw Error(ErrorCode::kInvalidArgument, std::to_string(sessions.size()) + " sessions but " +
                                                           std::to_string(tokens.size()) + " tokens");
            }
            py::array_t<float> out(
                {static_cast<py::ssize_t>(sessions.size()), static_cast<py::ssize_t>(mm.vocab_size())});
            float* dst = out.mutable_data();
            {
              py::gil_scoped_release nogil;
              mm.decode_batch(sessions, tokens.data(), dst);
            }
            return out;
          },
          py::arg("sessions"), py::arg("tokens"), "One decode step of several sessions: logits [n, vocab]")
      .def(
          "prefill_batch",
          [](Model& mm, std::vector<Session*> sessions, std::vector<std::vector<int32_t>> prompts) {
            py::array_t<float> out(
                {static_cast<py::ssize_t>(sessions.size()), static_cast<py::ssize_t>(mm.vocab_size())});
            float* dst = out.mutable_data();
            {
              py::gil_scoped_release nogil;
              mm.prefill_batch(sessions, prompts, dst);
            }
            return out;
          },
          py::arg("sessions"), py::arg("prompts"), "One prompt per session: each prompt's last logits [n, vocab]")
      .def_property_readonly("packs_prefill", &Model::packs_prefill)
      .def_property_readonly("batches_decode", &Model::batches_decode)
      .def_property_readonly("architecture", &Model::architecture)
      .def_property_readonly("vocab_size", &Model::vocab_size)
      .def_property_readonly("context_length", &Model::context_length)
      .def_property_readonly("embedding_length", &Model::embedding_length)
      .def_property_readonly("device", &Model::device)
      .def_property_readonly("is_encoder_decoder", [](const Model& mm) { return mm.encoder_decoder() != nullptr; })
      .def_property_readonly("decoder_start_token",
                             [](const Model& mm) {
                               const EncoderDecoder* e = mm.encoder_decoder();
                               return e ? e->decoder_start_token() : int32_t(-1);
                             })
      .def(
          "encode",
          [](const Model& mm, py::array_t<int64_t, py::array::c_style | py::array::forcecast> ids) {
            std::vector<int32_t> v = ids_from(ids);
            if (v.empty()) throw Error(ErrorCode::kInvalidArgument, "encode() needs at least one token");
            py::array_t<float> out(
                {static_cast<py::ssize_t>(v.size()), static_cast<py::ssize_t>(mm.embedding_length())});
            float* dst = out.mutable_data();
            const EncoderDecoder& e = encoder_decoder_of(mm);
            {
              py::gil_scoped_release nogil;
              e.encode(v.data(), static_cast<int64_t>(v.size()), dst);
            }
            return out;
          },
          py::arg("ids"))
      .def(
          "encode_batch",
          [](const Model& mm, std::vector<std::vector<int32_t>> inputs) {
            int64_t rows = 0;
            for (const auto& in : inputs) rows += int64_t(in.size());
            py::array_t<float> out({static_cast<py::ssize_t>(rows), static_cast<py::ssize_t>(mm.embedding_length())});
            float* dst = out.mutable_data();
            const EncoderDecoder& e = encoder_decoder_of(mm);
            {
              py::gil_scoped_release nogil;
              e.encode_batch(inputs, dst);
            }
            return out;
          },
          py::arg("inputs"), "Several encoder inputs in one pass: their states, packed [sum of lengths, width]")
      .def_property_readonly("audio_sample_rate",
                             [](const Model& mm) { return mm.speech() ? mm.speech()->sample_rate() : 0; })
      .def(
          "audio_features",
          [](const Model& mm, py::array_t<float, py::array::c_style | py::array::forcecast> pcm) {
            if (pcm.ndim() != 1) throw Error(ErrorCode::kInvalidArgument, "audio must be 1-D mono samples");
            int64_t n_mels = 0, n_frames = 0;
            std::vector<float> f;
            const SpeechEncoder& sp = speech_of(mm);
            {
              py::gil_scoped_release nogil;
              f = sp.audio_features(pcm.data(), pcm.shape(0), &n_mels, &n_frames);
            }
            py::array_t<float> out({static_cast<py::ssize_t>(n_mels), static_cast<py::ssize_t>(n_frames)});
            std::copy(f.begin(), f.end(), out.mutable_data());
            return out;
          },
          py::arg("pcm"))
      .def(
          "encode_audio",
          [](const Model& mm, py::array_t<float, py::array::c_style | py::array::forcecast> feats) {
            if (feats.ndim() != 2)
              throw Error(ErrorCode::kInvalidArgument, "audio features must be 2-D [n_mels, n_frames]");
            int64_t n = 0;
            std::vector<float> h;
            const SpeechEncoder& sp = speech_of(mm);
            {
              py::gil_scoped_release nogil;
              h = sp.encode_audio(feats.data(), feats.shape(0), feats.shape(1), &n);
            }
            py::array_t<float> out({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(mm.embedding_length())});
            std::copy(h.begin(), h.end(), out.mutable_data());
            return out;
          },
          py::arg("features"))
      .def_property_readonly("n_params", &Model::n_params)
      .def_property_readonly("tensor_types", &Model::tensor_type_counts)
      .def_property_readonly("threads", [](const Model& mm) { return mm.pool().size(); })
      .def_property_readonly("path", [](const Model& mm) { return mm.file().path(); })
      .def_property_readonly("metadata",
                             [](const Model& mm) {
                               py::dict d;
                               for (const auto& [k, v] : mm.file().metadata()) {
                                 if (v.type == GgufType::ARRAY && v.array_size > 64)
                                   continue;  // skip vocab-sized arrays
                                 d[py::str(k)] = metadata_value(v);
                               }
                               return d;
                             })
      .def_property_readonly("tokenizer", &Model::shared_tokenizer);

  py::class_<Sampler>(m, "Sampler")
      .def(py::init([](float temperature, int top_k, float top_p, float min_p, float repeat_penalty, int repeat_last_n,
                       uint64_t seed) {
             SamplerParams p;
             p.temperature = temperature;
             p.top_k = top_k;
             p.top_p = top_p;
             p.min_p = min_p;
             p.repeat_penalty = repeat_penalty;
             p.repeat_last_n = repeat_last_n;
             p.seed = seed;
             return std::make_unique<Sampler>(p);
           }),
           py::arg("temperature") = 0.0f, py::arg("top_k") = 0, py::arg("top_p") = 1.0f, py::arg("min_p") = 0.0f,
           py::arg("repeat_penalty") = 1.0f, py::arg("repeat_last_n") = 64, py::arg("seed") = 0)
      .def(
          "sample",
          [](Sampler& s, const LogitRows& logits, py::ssize_t row) {
            if (row < 0) row += logits.rows;
            if (row < 0 || row >= logits.rows)
              throw Error(ErrorCode::kInvalidArgument,
                          "row " + std::to_string(row) + " outside 0.." + std::to_string(logits.rows - 1));
            return s.sample(logits.values.data() + row * logits.vocab, logits.vocab);
          },
          py::arg("logits"), py::arg("row") = -1)
      .def(
          "sample",
          [](Sampler& s, py::array_t<float, py::array::c_style | py::array::forcecast> logits) {
            return s.sample(logits.data(), logits.size());
          },
          py::arg("logits"))
      .def("accept", &Sampler::accept)
      .def("reset", &Sampler::reset);
}
