// One call of a cell's kernels from Python: its arguments checked once, on
// the way in (a forward's against x, a backward's against the workspace its
// forward left), its outputs allocated, the kernel run with the GIL released.
// The contract is the one written at the top of fastrnn/_reference.py.
#pragma once

#include "checks.h"

namespace fastrnn {

// <cell>_forward's arguments as Python passed them (c0: None but for the LSTM).
struct ForwardCall {
  py::handle x, h0, c0, w_ih, w_hh, b_ih, b_hh;
  bool training;
  py::handle batch_sizes;
  bool reverse;
  py::handle out, threads;
};

// <cell>_backward's (c0 and dcT: None but for the LSTM).
struct BackwardCall {
  py::handle saved, h0, c0, w_ih, w_hh, y, dy, dhT, dcT;
  bool need_dx;
  py::handle batch_sizes;
  bool reverse;
  py::handle threads;
};

// (y, [cT,] saved) and (dx, dh0, [dc0,] dw_ih, dw_hh, db_ih, db_hh) of the
// cell kCells[cell] (common.h).
py::tuple run_forward(size_t cell, const ForwardCall& call);
py::tuple run_backward(size_t cell, const BackwardCall& call);

}  // namespace fastrnn
