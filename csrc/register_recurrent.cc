// The module's recurrent entry points: <cell>_forward and <cell>_backward for
// every cell of the list in cells.h, and the Workspace class. Their arguments
// are the kernel contract's (the top of fastrnn/_reference.py);
// recurrent_call.cc checks them and runs the kernels.
#include <string>

#include "checks.h"
#include "common.h"
#include "recurrent_call.h"
#include "workspace.h"

namespace fastrnn {
namespace {

// "H" for one gate, else "4H": the rows of a cell's weights.
std::string gate_rows(const CellTraits& cell) {
  return cell.G == 1 ? "H" : std::to_string(cell.G) + "H";
}

std::string forward_doc(const CellTraits& cell) {
  const std::string GH = gate_rows(cell);
  return std::string(cell.cell_state ? "(y, cT, saved)" : "(y, saved)") +
         " for x (T, B, I), h0" + (cell.cell_state ? ", c0" : "") + " (B, H), w_ih (" + GH +
         ", I), w_hh (" + GH + ", H), b_ih, b_hh (" + GH + ",); saved is None unless "
         "training. reverse=True runs from x[T-1] down to x[0]; out= takes y's (T, B, H) "
         "array, which may be strided (one half of a (T, B, 2H) one).";
}

std::string backward_doc(const CellTraits& cell) {
  return std::string("(dx, dh0, ") + (cell.cell_state ? "dc0, " : "") +
         "dw_ih, dw_hh, db_ih, db_hh) through a training forward's saved; dy may be None, "
         "dx is None unless need_dx; reverse as the forward's.";
}

// Registers <name>_forward and <name>_backward of cell kCells[i]; c0 and dcT
// are arguments of the cells with a cell state only.
void register_cell(py::module_& m, size_t i) {
  const CellTraits& cell = kCells[i];
  const std::string name = cell.name;
  if (cell.cell_state) {
    m.def((name + "_forward").c_str(),
          [i](py::object x, py::object h0, py::object c0, py::object w_ih, py::object w_hh,
              py::object b_ih, py::object b_hh, bool training, py::object batch_sizes,
              bool reverse, py::object out, py::object threads) {
            return run_forward(i, {x, h0, c0, w_ih, w_hh, b_ih, b_hh, training, batch_sizes,
                                   reverse, out, threads});
          },
          py::arg("x"), py::arg("h0"), py::arg("c0"), py::arg("w_ih"), py::arg("w_hh"),
          py::arg("b_ih"), py::arg("b_hh"), py::arg("training") = true, py::kw_only(),
          py::arg("batch_sizes") = py::none(), py::arg("reverse") = false,
          py::arg("out") = py::none(), py::arg("threads") = py::none(),
          forward_doc(cell).c_str());
    m.def((name + "_backward").c_str(),
          [i](py::object saved, py::object h0, py::object c0, py::object w_ih, py::object w_hh,
              py::object y, py::object dy, py::object dhT, py::object dcT, bool need_dx,
              py::object batch_sizes, bool reverse, py::object threads) {
            return run_backward(i, {saved, h0, c0, w_ih, w_hh, y, dy, dhT, dcT, need_dx,
                                    batch_sizes, reverse, threads});
          },
          py::arg("saved"), py::arg("h0"), py::arg("c0"), py::arg("w_ih"), py::arg("w_hh"),
          py::arg("y"), py::arg("dy").none(true), py::arg("dhT"), py::arg("dcT"),
          py::arg("need_dx") = true, py::kw_only(), py::arg("batch_sizes") = py::none(),
          py::arg("reverse") = false, py::arg("threads") = py::none(),
          backward_doc(cell).c_str());
    return;
  }
  m.def((name + "_forward").c_str(),
        [i](py::object x, py::object h0, py::object w_ih, py::object w_hh, py::object b_ih,
            py::object b_hh, bool training, py::object batch_sizes, bool reverse,
            py::object out, py::object threads) {
          return run_forward(i, {x, h0, py::none(), w_ih, w_hh, b_ih, b_hh, training,
                                 batch_sizes, reverse, out, threads});
        },
        py::arg("x"), py::arg("h0"), py::arg("w_ih"), py::arg("w_hh"), py::arg("b_ih"),
        py::arg("b_hh"), py::arg("training") = true, py::kw_only(),
        py::arg("batch_sizes") = py::none(), py::arg("reverse") = false,
        py::arg("out") = py::none(), py::arg("threads") = py::none(), forward_doc(cell).c_str());
  m.def((name + "_backward").c_str(),
        [i](py::object saved, py::object h0, py::object w_ih, py::object w_hh, py::object y,
            py::object dy, py::object dhT, bool need_dx, py::object batch_sizes, bool reverse,
            py::object threads) {
          return run_backward(i, {saved, h0, py::none(), w_ih, w_hh, y, dy, dhT, py::none(),
                                  need_dx, batch_sizes, reverse, threads});
        },
        py::arg("saved"), py::arg("h0"), py::arg("w_ih"), py::arg("w_hh"), py::arg("y"),
        py::arg("dy").none(true), py::arg("dhT"), py::arg("need_dx") = true, py::kw_only(),
        py::arg("batch_sizes") = py::none(), py::arg("reverse") = false,
        py::arg("threads") = py::none(), backward_doc(cell).c_str());
}

}  // namespace

void register_recurrent(py::module_& m) {
  register_workspace(m);
  // Calls with threads=1 from different Python threads run at the same time
  // (a one-thread job runs inline, outside the pool; see parallel.h).
  m.attr("concurrent_single_thread_calls") = true;
  py::tuple names(kCellCount);
  for (size_t i = 0; i < kCellCount; ++i) {
    register_cell(m, i);
    names[i] = kCells[i].name;
  }
  // The cells of cells.h, whose kernels the stubs (_core.pyi) must name.
  m.attr("cells") = names;
}

}  // namespace fastrnn
