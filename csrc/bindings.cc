// fastrnn._core: the compiled backend. This is the only file that includes
// pybind11; it converts and checks arguments, then calls the kernels.
#include <pybind11/pybind11.h>

namespace py = pybind11;

#ifndef FASTRNN_VERSION
#define FASTRNN_VERSION "unknown"
#endif

static py::dict build_info() {
  py::dict d;
  d["version"] = FASTRNN_VERSION;
#if defined(__clang__)
  d["compiler"] = "clang " __clang_version__;
#elif defined(__GNUC__)
  d["compiler"] = "gcc " __VERSION__;
#else
  d["compiler"] = "unknown";
#endif
  return d;
}

PYBIND11_MODULE(_core, m) {
  m.doc() = "fastrnn compiled backend";
  m.def("build_info", &build_info, "Facts about how this extension was built.");
}
