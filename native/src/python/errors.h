// pyrt::Error -> the pyruntime.errors class for its code, for every pybind11 module of the package.
#pragma once
#include <pybind11/pybind11.h>

#include <string>

#include "pyrt/error.h"

namespace pyrt::python {

inline void register_error_translator() {
  pybind11::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const Error& e) {
      pybind11::object errors = pybind11::module_::import("pyruntime.errors");
      pybind11::object cls = errors.attr("from_code")(static_cast<int>(e.code()));
      // Messages quote file content (keys, names), which may not be valid UTF-8.
      const std::string msg = e.what();
      PyObject* text = PyUnicode_DecodeUTF8(msg.data(), static_cast<Py_ssize_t>(msg.size()), "backslashreplace");
      PyErr_SetObject(cls.ptr(), text);
      Py_XDECREF(text);
    }
  });
}

}  // namespace pyrt::python
