#include "recurrent_call.h"

#include <initializer_list>
#include <string>

#include "common.h"
#include "dispatch.h"
#include "workspace.h"

namespace fastrnn {
namespace {

py::ssize_t dim(size_t n) { return py::ssize_t(n); }

// An array some cells or calls lack (c0, dy, dx): null, where a default
// py::array would be an empty array.
py::array missing() { return py::reinterpret_steal<py::array>(py::handle()); }

// What a forward and a backward take alike, checked: the call's thread count and
// precision, the initial states and the weights.
struct CallShared {
  int threads;
  Precision precision;
  py::array h0, c0, w_ih, w_hh;
};

// precision="fp32" or "bf16" (bfloat16 products, float32 arrays only).
Precision checked_precision(py::handle obj, const py::dtype& dt, const std::string& fn);

// What a forward and a backward check alike, against the call's dtype and sizes.
struct Arrays {
  const CellTraits& cell;
  const py::dtype& dt;
  const Sizes& s;

  py::array state(const py::handle& obj, const char* name) const {
    return checked(obj, name, dt, {s.B, s.H});
  }
  py::array w_ih(const py::handle& obj) const {
    return checked(obj, "w_ih", dt, {cell.G * s.H, s.I});
  }
  py::array w_hh(const py::handle& obj) const {
    return checked(obj, "w_hh", dt, {cell.G * s.H, s.H});
  }
  py::array bias(const py::handle& obj, const char* name) const {
    return checked(obj, name, dt, {cell.G * s.H});
  }
  template <class Call>
  CallShared call_shared(const Call& c, const std::string& fn) const {
    return CallShared{checked_call_threads(c.threads), checked_precision(c.precision, dt, fn),
                      state(c.h0, "h0"), cell.cell_state ? state(c.c0, "c0") : missing(),
                      w_ih(c.w_ih), w_hh(c.w_hh)};
  }
  // A new state, or a gradient of the weights: rows (G*H or B) of n.
  py::array new_rows(size_t rows, size_t n) const { return new_array(dt, {dim(rows), dim(n)}); }
  py::array new_vector(size_t n) const { return new_array(dt, {dim(n)}); }
  // A new C-order per-step array with n values a row.
  StepView new_steps(size_t n) const {
    if (!s.offsets.empty()) return StepView{new_rows(s.rows(), n), 0, n};
    return StepView{new_array(dt, {dim(s.T), dim(s.B), dim(n)}), ptrdiff_t(s.B * n), n};
  }
};

// A checked per-step array as the kernels read it: from step 0 of the
// recurrence, which a reverse run takes at time T - 1, stepping back.
template <class Ptr>
StepArray<Ptr> in_run_order(Ptr data, const StepView& v, size_t T, bool reverse) {
  if (!reverse) return StepArray<Ptr>{data, v.step, v.row};
  return StepArray<Ptr>{data + ptrdiff_t(T - 1) * v.step, -v.step, v.row};
}

template <class Real>
StepArray<const Real*> reading(const StepView& v, const Sizes& s, bool reverse) {
  return in_run_order(ptr<Real>(v.array), v, s.T, reverse);
}

template <class Real>
StepArray<Real*> writing(StepView& v, const Sizes& s, bool reverse) {
  return in_run_order(out_ptr<Real>(v.array), v, s.T, reverse);
}

template <class Real>
const Real* ptr_or_null(const py::array& a) { return a ? ptr<Real>(a) : nullptr; }

template <class Real>
Real* out_ptr_or_null(py::array& a) { return a ? out_ptr<Real>(a) : nullptr; }

void check_direction(const std::string& fn, bool reverse, const Sizes& s) {
  if (reverse && !s.offsets.empty())
    throw py::value_error(fn + ": reverse=True runs full-length sequences only; reverse a "
                          "packed batch's sequences within their lengths and pass reverse=False");
}

Precision checked_precision(py::handle obj, const py::dtype& dt, const std::string& fn) {
  const std::string name = py::isinstance<py::str>(obj) ? obj.cast<std::string>() : "";
  if (name != "fp32" && name != "bf16")
    throw py::value_error(fn + ": precision must be 'fp32' or 'bf16', got " +
                          std::string(py::repr(obj)));
  if (name == "bf16" && !dt.equal(py::dtype::of<float>()))
    throw py::type_error(fn + ": precision='bf16' takes float32 arrays (its products round "
                         "float32 operands to bfloat16), got " + std::string(py::str(dt)) +
                         "; convert the arrays to float32 or use precision='fp32'");
  return name == "bf16" ? Precision::bf16 : Precision::fp32;
}

}  // namespace

py::tuple run_forward(size_t index, const ForwardCall& c) {
  const CellTraits& cell = kCells[index];
  const std::string fn = std::string(cell.name) + "_forward";
  py::dtype dt;
  Sizes s;
  const StepView x = checked_x(c.x, c.batch_sizes, c.h0, cell, dt, s);
  check_direction(fn, c.reverse, s);
  const Arrays arrays{cell, dt, s};
  const CallShared shared = arrays.call_shared(c, fn);
  const int threads = shared.threads;
  const Precision precision = shared.precision;
  const py::array &h0 = shared.h0, &c0 = shared.c0, &w_ih = shared.w_ih, &w_hh = shared.w_hh;
  const py::array b_ih = arrays.bias(c.b_ih, "b_ih"), b_hh = arrays.bias(c.b_hh, "b_hh");
  StepView y = c.out.is_none() ? arrays.new_steps(s.H)
                               : checked_steps(c.out, "out", dt, s, s.H, true);
  if (!c.out.is_none())
    for (const py::array& input : {x.array, h0, c0, w_ih, w_hh, b_ih, b_hh})
      if (input && may_overlap(y.array, input))
        throw py::value_error(fn + ": out must not overlap an input (x, a state, a weight or a "
                              "bias): the kernel reads them while it writes y");
  py::array cT = cell.cell_state ? arrays.new_rows(s.B, s.H) : missing();

  return with_real_type(dt, [&](auto zero) -> py::tuple {
    using Real = decltype(zero);
    Workspace* ws = c.training ? new Workspace(cell, sizeof(Real), s, c.reverse) : nullptr;
    py::object saved = ws ? py::cast(ws, py::return_value_policy::take_ownership) : py::none();
    const ForwardArgs<Real> args{s.T, s.B, s.I, s.H, s.offsets_or_null(),
                                 reading<Real>(x, s, c.reverse), ptr<Real>(h0),
                                 ptr_or_null<Real>(c0), ptr<Real>(w_ih), ptr<Real>(w_hh),
                                 ptr<Real>(b_ih), ptr<Real>(b_hh),
                                 writing<Real>(y, s, c.reverse), out_ptr_or_null<Real>(cT),
                                 ws ? ws->saved<Real>() : nullptr,
                                 ws ? ws->x_saved<Real>() : nullptr, threads, precision};
    const KernelTable& k = kernels();
    run_kernel(table_entry<Real>(k.cells_f32[index].forward, k.cells_f64[index].forward), args);
    if (cell.cell_state) return py::make_tuple(y.array, cT, saved);
    return py::make_tuple(y.array, saved);
  });
}

py::tuple run_backward(size_t index, const BackwardCall& c) {
  const CellTraits& cell = kCells[index];
  const std::string fn = std::string(cell.name) + "_backward";
  // The workspace holds the sizes, the packed steps and the direction: the
  // caller's arrays are checked against it.
  const Workspace& ws = checked_workspace(c.saved, cell, fn);
  const Sizes& s = ws.sizes;
  const py::dtype dt = float_dtype_of(c.h0, "h0");
  if (size_t(dt.itemsize()) != ws.itemsize)
    throw py::type_error(fn + ": saved comes from a forward of another dtype (float" +
                         std::to_string(8 * ws.itemsize) + ")");
  if (checked_offsets(c.batch_sizes, s.B) != s.offsets)
    throw py::value_error(fn + ": batch_sizes differ from those of the forward that saved it");
  if (c.reverse != ws.reverse)
    throw py::value_error(fn + ": reverse=" + (c.reverse ? "True" : "False") +
                          ", but the forward that saved it ran the other way");
  const Arrays arrays{cell, dt, s};
  const CallShared shared = arrays.call_shared(c, fn);
  const int threads = shared.threads;
  const Precision precision = shared.precision;
  const py::array &h0 = shared.h0, &c0 = shared.c0, &w_ih = shared.w_ih, &w_hh = shared.w_hh;
  const StepView y = checked_steps(c.y, "y", dt, s, s.H);
  const StepView dy =
      c.dy.is_none() ? StepView{missing(), 0, 0} : checked_steps(c.dy, "dy", dt, s, s.H);
  const py::array dhT = arrays.state(c.dhT, "dhT");
  const py::array dcT = cell.cell_state ? arrays.state(c.dcT, "dcT") : missing();

  StepView dx = c.need_dx ? arrays.new_steps(s.I) : StepView{missing(), 0, 0};
  py::array dh0 = arrays.new_rows(s.B, s.H);
  py::array dc0 = cell.cell_state ? arrays.new_rows(s.B, s.H) : missing();
  py::array dw_ih = arrays.new_rows(cell.G * s.H, s.I), dw_hh = arrays.new_rows(cell.G * s.H, s.H);
  py::array db_ih = arrays.new_vector(cell.G * s.H), db_hh = arrays.new_vector(cell.G * s.H);

  return with_real_type(dt, [&](auto zero) -> py::tuple {
    using Real = decltype(zero);
    const StepArray<const Real*> no_dy{nullptr, 0, 0};
    const StepArray<Real*> no_dx{nullptr, 0, 0};
    const BackwardArgs<Real> args{s.T, s.B, s.I, s.H, s.offsets_or_null(),
                                  ptr<Real>(h0), ptr_or_null<Real>(c0),
                                  ptr<Real>(w_ih), ptr<Real>(w_hh),
                                  reading<Real>(y, s, c.reverse),
                                  dy.array ? reading<Real>(dy, s, c.reverse) : no_dy,
                                  ptr<Real>(dhT), ptr_or_null<Real>(dcT),
                                  ws.saved<Real>(), ws.x_saved<Real>(),
                                  dx.array ? writing<Real>(dx, s, c.reverse) : no_dx,
                                  out_ptr<Real>(dh0), out_ptr_or_null<Real>(dc0),
                                  out_ptr<Real>(dw_ih), out_ptr<Real>(dw_hh),
                                  out_ptr<Real>(db_ih), out_ptr<Real>(db_hh), threads,
                                  precision};
    const KernelTable& k = kernels();
    run_kernel(table_entry<Real>(k.cells_f32[index].backward, k.cells_f64[index].backward),
               args);
    const py::object dx_or_none = dx.array ? py::object(dx.array) : py::none();
    if (cell.cell_state) return py::make_tuple(dx_or_none, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh);
    return py::make_tuple(dx_or_none, dh0, dw_ih, dw_hh, db_ih, db_hh);
  });
}

}  // namespace fastrnn
