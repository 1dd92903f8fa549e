// What a training forward keeps for its backward: one allocation holding the
// cell's saved values and x as the forward read it, and what the backward
// then takes from it rather than from its caller (the cell, dtype, sizes,
// packed steps and direction). Python sees an opaque fastrnn._core.Workspace.
#pragma once

#include "checks.h"
#include "common.h"

namespace fastrnn {

class Workspace {
 public:
  Workspace(const CellTraits& cell, size_t itemsize, const Sizes& sizes, bool reverse);
  ~Workspace();
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;

  // The cell's saved values (rows * saved_per_unit * H, laid out as its cell
  // file says), null for a cell that keeps none; then x's copy (rows, I).
  template <class Real>
  Real* saved() const { return cell.saved_per_unit ? static_cast<Real*>(data_) : nullptr; }
  template <class Real>
  Real* x_saved() const { return static_cast<Real*>(data_) + elements - sizes.rows() * sizes.I; }
  size_t nbytes() const { return elements * itemsize; }

  const CellTraits& cell;
  const size_t itemsize;
  const Sizes sizes;
  const bool reverse;
  const size_t elements;

 private:
  void* data_;
};

// saved as the workspace of a training forward of `cell`, else ValueError or
// TypeError naming what differs (fn: the entry point, for the messages).
const Workspace& checked_workspace(const py::handle& saved, const CellTraits& cell,
                                   const std::string& fn);

// The Python class, which only a training forward makes.
void register_workspace(py::module_& m);

}  // namespace fastrnn
