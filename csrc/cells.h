// The cells of fastrnn._core, once. Everything per cell outside its own file
// comes from this list: its traits (cells::name in common.h), its two entries
// in each ISA's kernel table (common.h, kernels_isa.cc), the module's
// name_forward and name_backward (register_recurrent.cc) and the names the
// stubs in fastrnn/_core.pyi must give (the module lists them as `cells`;
// tests/kernels/test_core.py checks the stubs against the module).
//
// X(name, G, saved_per_unit, cell_state):
//   G               gates (the rows of w_ih and w_hh are G*H)
//   saved_per_unit  values a training forward keeps per (t, b) row and hidden
//                   unit for BPTT (their layout is the cell file's)
//   cell_state      the LSTM's c: c0 in, cT out, dcT in, dc0 out
//
// A new cell is one line here, its file (rnn.cc is the smallest, and names
// the kernels with FASTRNN_DEFINE_CELL_KERNELS), and that file in CMakeLists.txt.
#pragma once

#define FASTRNN_CELLS(X)      \
  X(rnn, 1, 0, false)         \
  X(rnn_relu, 1, 0, false)    \
  X(lstm, 4, 5, true)         \
  X(gru, 3, 4, false)
