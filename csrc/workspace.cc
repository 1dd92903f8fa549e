#include "workspace.h"

#include "memory.h"

namespace fastrnn {

Workspace::Workspace(const CellTraits& cell, size_t itemsize, const Sizes& sizes, bool reverse)
    : cell(cell), itemsize(itemsize), sizes(sizes), reverse(reverse),
      elements(sizes.rows() * (cell.saved_per_unit * sizes.H + sizes.I)) {
  data_ = aligned_malloc(nbytes());
}

Workspace::~Workspace() { aligned_free(data_, nbytes()); }

const Workspace& checked_workspace(const py::handle& saved, const CellTraits& cell,
                                   const std::string& fn) {
  if (saved.is_none())
    throw py::value_error(fn + " needs the state saved by a training forward (got None)");
  if (!py::isinstance<Workspace>(saved))
    throw py::type_error(fn + ": saved must be the workspace returned by " + cell.name +
                         "_forward of this backend, got " +
                         std::string(py::str(py::type::of(saved).attr("__name__"))));
  const Workspace& ws = saved.cast<const Workspace&>();
  if (&ws.cell != &cell)
    throw py::value_error(fn + ": saved comes from " + ws.cell.name + "_forward");
  return ws;
}

void register_workspace(py::module_& m) {
  py::class_<Workspace>(m, "Workspace",
                        "What a training forward keeps for its backward (opaque).")
      .def_property_readonly("cell", [](const Workspace& w) { return w.cell.name; })
      .def_property_readonly("nbytes", &Workspace::nbytes)
      .def("__repr__", [](const Workspace& w) {
        const Sizes& s = w.sizes;
        return std::string("<fastrnn._core.Workspace ") + w.cell.name + " float" +
               std::to_string(8 * w.itemsize) + (s.offsets.empty() ? "" : " packed") +
               (w.reverse ? " reverse" : "") + " T=" + std::to_string(s.T) +
               " B=" + std::to_string(s.B) + " I=" + std::to_string(s.I) +
               " H=" + std::to_string(s.H) + ">";
      });
}

}  // namespace fastrnn
