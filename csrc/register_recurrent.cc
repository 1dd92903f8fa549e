// The recurrent kernels of fastrnn._core: <cell>_forward and <cell>_backward
// for every cell, with the contract written at the top of
// fastrnn/_reference.py. One generic entry per direction serves every cell:
// the cell's traits (common.h) say which arrays it takes and returns.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>
#include <vector>

#include "checks.h"
#include "common.h"
#include "dispatch.h"
#include "memory.h"
#include "parallel.h"

namespace fastrnn {
namespace {

// What a training forward keeps for its backward, in one allocation: the
// cell's saved values (T*B*H*saved_per_unit, laid out as its cell file says),
// then x as the forward read it (T, B, I). Opaque to Python.
class Workspace {
 public:
  Workspace(const CellTraits& cell, size_t itemsize, const Sizes& s)
      : cell(cell), itemsize(itemsize), T(s.T), B(s.B), I(s.I), H(s.H), offsets(s.offsets),
        elements(s.rows() * (cell.saved_per_unit * s.H + s.I)) {
    data = aligned_malloc(elements * itemsize);
  }
  ~Workspace() { aligned_free(data, elements * itemsize); }
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;

  template <class Real>
  Real* saved() const { return cell.saved_per_unit ? static_cast<Real*>(data) : nullptr; }
  template <class Real>
  Real* x_saved() const {  // last
    return static_cast<Real*>(data) + elements - (offsets.empty() ? T * B : offsets.back()) * I;
  }

  const CellTraits& cell;
  const size_t itemsize, T, B, I, H;
  const std::vector<size_t> offsets;  // of a packed batch, else empty
  const size_t elements;
  void* data = nullptr;
};

template <class Real>
using ForwardKernel = void (*)(const ForwardArgs<Real>&);
template <class Real>
using BackwardKernel = void (*)(const BackwardArgs<Real>&);

// A cell's traits and its entries in the kernel table.
struct CellEntry {
  const CellTraits& traits;
  ForwardKernel<float> KernelTable::*forward_f32;
  ForwardKernel<double> KernelTable::*forward_f64;
  BackwardKernel<float> KernelTable::*backward_f32;
  BackwardKernel<double> KernelTable::*backward_f64;
};

const CellEntry kRnn{kRnnTraits, &KernelTable::rnn_forward_f32, &KernelTable::rnn_forward_f64,
                     &KernelTable::rnn_backward_f32, &KernelTable::rnn_backward_f64};
const CellEntry kRnnRelu{kRnnReluTraits, &KernelTable::rnn_relu_forward_f32,
                         &KernelTable::rnn_relu_forward_f64, &KernelTable::rnn_relu_backward_f32,
                         &KernelTable::rnn_relu_backward_f64};
const CellEntry kLstm{kLstmTraits, &KernelTable::lstm_forward_f32,
                      &KernelTable::lstm_forward_f64, &KernelTable::lstm_backward_f32,
                      &KernelTable::lstm_backward_f64};
const CellEntry kGru{kGruTraits, &KernelTable::gru_forward_f32, &KernelTable::gru_forward_f64,
                     &KernelTable::gru_backward_f32, &KernelTable::gru_backward_f64};

// The arrays of one recurrent call, checked against x's dtype and sizes.
// The entries some cells or calls lack stay None (a default py::array would
// be an empty array, not a missing one).
struct Call {
  const CellEntry& cell;
  py::dtype dt;
  Sizes s;
  int threads = get_pool_threads();
  Precision precision = Precision::fp32;
  py::array x, h0, w_ih, w_hh, b, y, dhT;
  py::object c0 = py::none(), b_hh = py::none(), dy = py::none(), dcT = py::none();

  Call(const CellEntry& cell, py::handle x_obj, py::handle h0_obj, py::handle batch_sizes)
      : cell(cell) {
    x = checked_x(x_obj, batch_sizes, h0_obj, cell.traits.G, cell.traits.saved_per_unit, dt, s);
    h0 = state(h0_obj, "h0");
  }
  // A per-step array: (T, B, n), or (rows, n) for a packed batch.
  py::array per_step(py::handle obj, const char* name, size_t n) const {
    if (!s.offsets.empty()) return checked(obj, name, dt, {s.rows(), n});
    return checked(obj, name, dt, {s.T, s.B, n});
  }
  py::array new_per_step(size_t n) const {
    if (!s.offsets.empty()) return new_array(dt, {dim(s.rows()), dim(n)});
    return new_array(dt, {dim(s.T), dim(s.B), dim(n)});
  }
  py::array state(py::handle obj, const char* name) const { return checked(obj, name, dt, {s.B, s.H}); }
  void weights(py::handle w_ih_obj, py::handle w_hh_obj) {
    const size_t GH = cell.traits.G * s.H;
    w_ih = checked(w_ih_obj, "w_ih", dt, {GH, s.I});
    w_hh = checked(w_hh_obj, "w_hh", dt, {GH, s.H});
  }
  py::array bias(py::handle obj, const char* name) const {
    return checked(obj, name, dt, {cell.traits.G * s.H});
  }
  py::ssize_t dim(size_t n) const { return py::ssize_t(n); }
  // threads=None: the pool's; else this call's own count, 1 to the pool's.
  void set_threads(py::handle obj) {
    if (obj.is_none()) return;
    if (py::isinstance<py::bool_>(obj) || !py::isinstance<py::int_>(obj))
      throw py::type_error("threads must be an int or None");
    const long long n = obj.cast<long long>();
    if (n < 1 || n > get_pool_threads())
      throw py::value_error("threads must be between 1 and the pool's " +
                            std::to_string(get_pool_threads()) + " (fastrnn.set_num_threads), got " +
                            std::to_string(n));
    threads = int(n);
  }
  // precision="fp32" or "bf16"; bf16 only for float32 arrays.
  void set_precision(py::handle obj, const std::string& fn) {
    const std::string name = py::isinstance<py::str>(obj) ? obj.cast<std::string>() : "";
    if (name != "fp32" && name != "bf16")
      throw py::value_error(fn + ": precision must be 'fp32' or 'bf16', got " +
                            std::string(py::repr(obj)));
    if (name == "bf16" && !dt.equal(py::dtype::of<float>()))
      throw py::type_error(fn + ": precision='bf16' takes float32 arrays (its products round "
                           "float32 operands to bfloat16), got " + std::string(py::str(dt)) +
                           "; convert the arrays to float32 or use precision='fp32'");
    precision = name == "bf16" ? Precision::bf16 : Precision::fp32;
  }
};

// The data of an optional array argument, null where it is None.
template <class Real>
const Real* maybe(const py::object& a) {
  return a.is_none() ? nullptr : ptr<Real>(py::reinterpret_borrow<py::array>(a));
}

template <class Real>
Real* out_ptr_if(bool wanted, py::array& a) { return wanted ? out_ptr<Real>(a) : nullptr; }

template <class Real>
py::tuple forward(const Call& c, bool training) {
  const CellTraits& cell = c.cell.traits;
  const Sizes& s = c.s;
  py::array y = c.new_per_step(s.H);
  py::array cT;
  if (cell.cell_state) cT = new_array(c.dt, {c.dim(s.B), c.dim(s.H)});
  Workspace* ws = training ? new Workspace(cell, sizeof(Real), s) : nullptr;
  py::object saved = ws ? py::cast(ws, py::return_value_policy::take_ownership) : py::none();

  ForwardArgs<Real> args{s.T, s.B, s.I, s.H, s.x_step, s.x_row,
                         ptr<Real>(c.x), ptr<Real>(c.h0), maybe<Real>(c.c0),
                         ptr<Real>(c.w_ih), ptr<Real>(c.w_hh), ptr<Real>(c.b), maybe<Real>(c.b_hh),
                         s.offsets_or_null(), out_ptr<Real>(y), out_ptr_if<Real>(cell.cell_state, cT),
                         ws ? ws->saved<Real>() : nullptr, ws ? ws->x_saved<Real>() : nullptr,
                         c.threads, c.precision};
  const KernelTable& k = kernels();
  run_kernel(table_entry<Real>(k.*c.cell.forward_f32, k.*c.cell.forward_f64), args);
  if (cell.cell_state) return py::make_tuple(y, cT, saved);
  return py::make_tuple(y, saved);
}

py::tuple forward_entry(const CellEntry& cell, py::object x, py::object h0, py::object c0,
                        py::object w_ih, py::object w_hh, py::object b, py::object b_hh,
                        bool training, py::object batch_sizes, py::object threads,
                        py::object precision) {
  Call c(cell, x, h0, batch_sizes);
  c.set_threads(threads);
  c.set_precision(precision, std::string(cell.traits.name) + "_forward");
  if (cell.traits.cell_state) c.c0 = c.state(c0, "c0");
  c.weights(w_ih, w_hh);
  c.b = c.bias(b, cell.traits.separate_biases ? "b_ih" : "b");
  if (cell.traits.separate_biases) c.b_hh = c.bias(b_hh, "b_hh");
  return with_real_type(c.dt, [&](auto zero) { return forward<decltype(zero)>(c, training); });
}

const Workspace& checked_workspace(const Call& c, py::handle saved) {
  const std::string cell = c.cell.traits.name, fn = cell + "_backward";
  if (saved.is_none())
    throw py::value_error(fn + " needs the state saved by a training forward (got None)");
  if (!py::isinstance<Workspace>(saved))
    throw py::type_error(fn + ": saved must be the workspace returned by " + cell +
                         "_forward of this backend, got " +
                         std::string(py::str(py::type::of(saved).attr("__name__"))));
  const Workspace& ws = saved.cast<const Workspace&>();
  if (&ws.cell != &c.cell.traits)
    throw py::value_error(fn + ": saved comes from " + ws.cell.name + "_forward");
  if (ws.itemsize != size_t(c.dt.itemsize()))
    throw py::type_error(fn + ": saved comes from a forward of another dtype");
  const Sizes& s = c.s;
  if (ws.offsets != s.offsets)
    throw py::value_error(fn + ": batch_sizes differ from those of the forward that saved it");
  if (ws.T != s.T || ws.B != s.B || ws.I != s.I || ws.H != s.H)
    throw py::value_error(fn + ": saved comes from a forward of other sizes (T, B, I, H) = (" +
                          std::to_string(ws.T) + ", " + std::to_string(ws.B) + ", " +
                          std::to_string(ws.I) + ", " + std::to_string(ws.H) + ")");
  return ws;
}

template <class Real>
py::tuple backward(const Call& c, const Workspace& ws, bool need_dx) {
  const CellTraits& cell = c.cell.traits;
  const Sizes& s = c.s;
  const py::ssize_t GH = c.dim(cell.G * s.H);
  py::object dx = py::none();
  py::array dx_arr, dc0, db_ih;
  if (need_dx) dx = dx_arr = c.new_per_step(s.I);
  py::array dh0 = new_array(c.dt, {c.dim(s.B), c.dim(s.H)});
  if (cell.cell_state) dc0 = new_array(c.dt, {c.dim(s.B), c.dim(s.H)});
  py::array dw_ih = new_array(c.dt, {GH, c.dim(s.I)});
  py::array dw_hh = new_array(c.dt, {GH, c.dim(s.H)});
  if (cell.separate_biases) db_ih = new_array(c.dt, {GH});
  py::array db_hh = new_array(c.dt, {GH});

  BackwardArgs<Real> args{s.T, s.B, s.I, s.H, s.offsets_or_null(),
                          ptr<Real>(c.h0), maybe<Real>(c.c0), ptr<Real>(c.w_ih), ptr<Real>(c.w_hh),
                          ptr<Real>(c.y), maybe<Real>(c.dy), ptr<Real>(c.dhT), maybe<Real>(c.dcT),
                          ws.saved<Real>(), ws.x_saved<Real>(),
                          need_dx ? out_ptr<Real>(dx_arr) : nullptr, out_ptr<Real>(dh0),
                          out_ptr_if<Real>(cell.cell_state, dc0), out_ptr<Real>(dw_ih),
                          out_ptr<Real>(dw_hh), out_ptr_if<Real>(cell.separate_biases, db_ih),
                          out_ptr<Real>(db_hh), c.threads, c.precision};
  const KernelTable& k = kernels();
  run_kernel(table_entry<Real>(k.*c.cell.backward_f32, k.*c.cell.backward_f64), args);
  if (cell.cell_state) return py::make_tuple(dx, dh0, dc0, dw_ih, dw_hh, db_hh);
  if (cell.separate_biases) return py::make_tuple(dx, dh0, dw_ih, dw_hh, db_ih, db_hh);
  return py::make_tuple(dx, dh0, dw_ih, dw_hh, db_hh);
}

py::tuple backward_entry(const CellEntry& cell, py::object saved, py::object x, py::object h0,
                         py::object c0, py::object w_ih, py::object w_hh, py::object y,
                         py::object dy, py::object dhT, py::object dcT, bool need_dx,
                         py::object batch_sizes, py::object threads, py::object precision) {
  Call c(cell, x, h0, batch_sizes);
  c.set_threads(threads);
  c.set_precision(precision, std::string(cell.traits.name) + "_backward");
  const Workspace& ws = checked_workspace(c, saved);
  if (cell.traits.cell_state) c.c0 = c.state(c0, "c0");
  c.weights(w_ih, w_hh);
  c.y = c.per_step(y, "y", c.s.H);
  if (!dy.is_none()) c.dy = c.per_step(dy, "dy", c.s.H);
  c.dhT = c.state(dhT, "dhT");
  if (cell.traits.cell_state) c.dcT = c.state(dcT, "dcT");
  return with_real_type(c.dt, [&](auto zero) { return backward<decltype(zero)>(c, ws, need_dx); });
}

// <name>_forward and <name>_backward of an Elman RNN cell.
void register_rnn(py::module_& m, const CellEntry& cell, const std::string& name,
                  const std::string& nonlinearity) {
  m.def((name + "_forward").c_str(),
        [&cell](py::object x, py::object h0, py::object w_ih, py::object w_hh, py::object b,
                bool training, py::object batch_sizes, py::object threads, py::object precision) {
          return forward_entry(cell, x, h0, py::none(), w_ih, w_hh, b, py::none(), training,
                               batch_sizes, threads, precision);
        },
        py::arg("x"), py::arg("h0"), py::arg("w_ih"), py::arg("w_hh"), py::arg("b"),
        py::arg("training") = true, py::kw_only(), py::arg("batch_sizes") = py::none(), py::arg("threads") = py::none(),
        py::arg("precision") = "fp32",
        ("(y, saved) of the " + nonlinearity +
         " RNN for x (T, B, I), h0 (B, H), w_ih (H, I), w_hh (H, H), b (H,).").c_str());
  m.def((name + "_backward").c_str(),
        [&cell](py::object saved, py::object x, py::object h0, py::object w_ih, py::object w_hh,
                py::object y, py::object dy, py::object dhT, bool need_dx,
                py::object batch_sizes, py::object threads, py::object precision) {
          return backward_entry(cell, saved, x, h0, py::none(), w_ih, w_hh, y, dy, dhT,
                                py::none(), need_dx, batch_sizes, threads, precision);
        },
        py::arg("saved"), py::arg("x"), py::arg("h0"), py::arg("w_ih"), py::arg("w_hh"),
        py::arg("y"), py::arg("dy").none(true), py::arg("dhT"), py::arg("need_dx") = true,
        py::kw_only(), py::arg("batch_sizes") = py::none(), py::arg("threads") = py::none(),
        py::arg("precision") = "fp32",
        "(dx, dh0, dw_ih, dw_hh, db); dy may be None, dx is None unless need_dx.");
}

}  // namespace

void register_recurrent(py::module_& m) {
  py::class_<Workspace>(m, "Workspace",
                        "What a training forward keeps for its backward (opaque).")
      .def_property_readonly("cell", [](const Workspace& w) { return w.cell.name; })
      .def_property_readonly("nbytes", [](const Workspace& w) { return w.elements * w.itemsize; })
      .def("__repr__", [](const Workspace& w) {
        return std::string("<fastrnn._core.Workspace ") + w.cell.name + " float" +
               std::to_string(8 * w.itemsize) + " T=" + std::to_string(w.T) +
               " B=" + std::to_string(w.B) + " I=" + std::to_string(w.I) +
               " H=" + std::to_string(w.H) + ">";
      });

  // x may be any (T, B, I) view whose last axis is contiguous (see checked_x),
  // and a training forward keeps its own copy of x for the backward.
  m.attr("reads_x_views") = true;
  // Calls with threads=1 from different Python threads run at the same time
  // (a one-thread job runs inline, outside the pool; see parallel.h).
  m.attr("concurrent_single_thread_calls") = true;
  register_rnn(m, kRnn, "rnn", "tanh");
  register_rnn(m, kRnnRelu, "rnn_relu", "ReLU");
  m.def("lstm_forward",
        [](py::object x, py::object h0, py::object c0, py::object w_ih, py::object w_hh,
           py::object b, bool training, py::object batch_sizes, py::object threads,
           py::object precision) {
          return forward_entry(kLstm, x, h0, c0, w_ih, w_hh, b, py::none(), training,
                               batch_sizes, threads, precision);
        },
        py::arg("x"), py::arg("h0"), py::arg("c0"), py::arg("w_ih"), py::arg("w_hh"),
        py::arg("b"), py::arg("training") = true, py::kw_only(),
        py::arg("batch_sizes") = py::none(), py::arg("threads") = py::none(),
        py::arg("precision") = "fp32",
        "(y, cT, saved) for x (T, B, I), h0, c0 (B, H), w_ih (4H, I), w_hh (4H, H), b (4H,).");
  m.def("lstm_backward",
        [](py::object saved, py::object x, py::object h0, py::object c0, py::object w_ih,
           py::object w_hh, py::object y, py::object dy, py::object dhT, py::object dcT,
           bool need_dx, py::object batch_sizes, py::object threads, py::object precision) {
          return backward_entry(kLstm, saved, x, h0, c0, w_ih, w_hh, y, dy, dhT, dcT, need_dx,
                                batch_sizes, threads, precision);
        },
        py::arg("saved"), py::arg("x"), py::arg("h0"), py::arg("c0"), py::arg("w_ih"),
        py::arg("w_hh"), py::arg("y"), py::arg("dy").none(true), py::arg("dhT"),
        py::arg("dcT"), py::arg("need_dx") = true, py::kw_only(),
        py::arg("batch_sizes") = py::none(), py::arg("threads") = py::none(),
        py::arg("precision") = "fp32",
        "(dx, dh0, dc0, dw_ih, dw_hh, db); dy may be None, dx is None unless need_dx.");
  m.def("gru_forward",
        [](py::object x, py::object h0, py::object w_ih, py::object w_hh, py::object b_ih,
           py::object b_hh, bool training, py::object batch_sizes, py::object threads,
           py::object precision) {
          return forward_entry(kGru, x, h0, py::none(), w_ih, w_hh, b_ih, b_hh, training,
                               batch_sizes, threads, precision);
        },
        py::arg("x"), py::arg("h0"), py::arg("w_ih"), py::arg("w_hh"), py::arg("b_ih"),
        py::arg("b_hh"), py::arg("training") = true, py::kw_only(),
        py::arg("batch_sizes") = py::none(), py::arg("threads") = py::none(),
        py::arg("precision") = "fp32",
        "(y, saved) for x (T, B, I), h0 (B, H), w_ih (3H, I), w_hh (3H, H), b_ih, b_hh (3H,).");
  m.def("gru_backward",
        [](py::object saved, py::object x, py::object h0, py::object w_ih, py::object w_hh,
           py::object y, py::object dy, py::object dhT, bool need_dx, py::object batch_sizes,
           py::object threads, py::object precision) {
          return backward_entry(kGru, saved, x, h0, py::none(), w_ih, w_hh, y, dy, dhT,
                                py::none(), need_dx, batch_sizes, threads, precision);
        },
        py::arg("saved"), py::arg("x"), py::arg("h0"), py::arg("w_ih"), py::arg("w_hh"),
        py::arg("y"), py::arg("dy").none(true), py::arg("dhT"), py::arg("need_dx") = true,
        py::kw_only(), py::arg("batch_sizes") = py::none(), py::arg("threads") = py::none(),
        py::arg("precision") = "fp32",
        "(dx, dh0, dw_ih, dw_hh, db_ih, db_hh); dy may be None, dx is None unless need_dx.");
}

}  // namespace fastrnn
