// fastrnn._core: the compiled backend. This is the only file that includes
// pybind11. It converts and checks every argument (types, dtypes, shapes,
// layout), allocates the outputs, releases the GIL and calls the kernels of
// the ISA path chosen by dispatch.cc. The kernel contract is the one written
// at the top of fastrnn/_reference.py.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "common.h"
#include "dispatch.h"
#include "memory.h"
#include "threadpool.h"

namespace py = pybind11;

#ifndef FASTRNN_VERSION
#define FASTRNN_VERSION "unknown"
#endif

namespace fastrnn {
namespace {

constexpr int kMaxThreads = 1024;

enum class Cell { rnn, lstm };

const char* cell_name(Cell cell) { return cell == Cell::rnn ? "rnn" : "lstm"; }

// What a training forward keeps for its backward, in one allocation: for the
// LSTM the activated gates (T, B, 4H) and every cell state (T, B, H), and for
// both cells x as the forward read it (T, B, I; the RNN's backward reads y
// besides). Opaque to Python.
class Workspace {
 public:
  Workspace(Cell cell, size_t itemsize, size_t T, size_t B, size_t I, size_t H)
      : cell(cell), itemsize(itemsize), T(T), B(B), I(I), H(H),
        elements((cell == Cell::lstm ? T * B * 5 * H : 0) + T * B * I) {
    if (elements != 0) data = aligned_malloc(elements * itemsize);
  }
  ~Workspace() { aligned_free(data, elements * itemsize); }
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;

  template <class Real>
  Real* gates() const { return at<Real>(0); }
  template <class Real>
  Real* c_all() const { return at<Real>(T * B * 4 * H); }
  template <class Real>
  Real* x_saved() const { return at<Real>(elements - T * B * I); }  // last

  const Cell cell;
  const size_t itemsize, T, B, I, H, elements;
  void* data = nullptr;

 private:
  template <class Real>
  Real* at(size_t offset) const { return static_cast<Real*>(data) + offset; }
};

// a * b, or ValueError if it does not fit in 64 bits.
size_t checked_mul(size_t a, size_t b) {
  size_t out;
  if (__builtin_mul_overflow(a, b, &out)) throw py::value_error("array sizes overflow 64 bits");
  return out;
}

std::string shape_str(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t d = 0; d < a.ndim(); ++d) s += (d ? ", " : "") + std::to_string(a.shape(d));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

std::string expected_str(const std::vector<size_t>& shape) {
  std::string s = "(";
  for (size_t d = 0; d < shape.size(); ++d) s += (d ? ", " : "") + std::to_string(shape[d]);
  return s + (shape.size() == 1 ? ",)" : ")");
}

// The dtype of x: exactly float32 or float64; the other arrays must match it.
py::dtype float_dtype_of(const py::handle& x, const char* name = "x") {
  if (!py::isinstance<py::array>(x))
    throw py::type_error(std::string(name) + " must be a numpy.ndarray, got " +
                         std::string(py::str(py::type::of(x).attr("__name__"))));
  py::dtype dt = py::reinterpret_borrow<py::array>(x).dtype();
  if (!dt.equal(py::dtype::of<float>()) && !dt.equal(py::dtype::of<double>()))
    throw py::type_error(std::string(name) + " must have dtype float32 or float64, got " +
                         std::string(py::str(dt)));
  return dt;
}

// Checks one array argument and returns it. shape entries of SIZE_MAX are
// free (they define a size the caller reads back).
py::array checked(const py::handle& obj, const char* name, const py::dtype& dt,
                  const std::vector<size_t>& shape);

// x (T, B, I) of float32 or float64: the dtype every other array must have.
// Only its last axis must be contiguous: the first two may have any
// non-negative strides, so a batch-first (B, T, I) array transposed to
// (T, B, I) is read where it lies (read_sizes turns the strides into
// x_step and x_row).
py::array checked_x(const py::handle& obj, py::dtype& dt) {
  dt = float_dtype_of(obj);
  auto x = py::reinterpret_borrow<py::array>(obj);
  if (x.ndim() != 3) throw py::value_error("x must be 3-D (T, B, I), got shape " + shape_str(x));
  const int flags = py::detail::array_proxy(x.ptr())->flags;
  const py::ssize_t item = dt.itemsize();
  // (An empty x is not read: read_sizes refuses it with a better message.)
  bool strided = x.size() > 0 && x.shape(2) > 1 && x.strides(2) != item;
  for (int d = 0; d < 2 && x.size() > 0; ++d)
    strided = strided || (x.shape(d) > 1 && (x.strides(d) < 0 || x.strides(d) % item != 0));
  if (strided)
    throw py::value_error("x must have a contiguous last axis and non-negative strides "
                          "(numpy.ascontiguousarray)");
  if (!(flags & py::detail::npy_api::NPY_ARRAY_ALIGNED_))
    throw py::value_error("x must be aligned (numpy.ascontiguousarray)");
  return x;
}

py::array checked(const py::handle& obj, const char* name, const py::dtype& dt,
                  const std::vector<size_t>& shape) {
  if (!py::isinstance<py::array>(obj))
    throw py::type_error(std::string(name) + " must be a numpy.ndarray, got " +
                         std::string(py::str(py::type::of(obj).attr("__name__"))));
  auto a = py::reinterpret_borrow<py::array>(obj);
  if (!a.dtype().equal(dt))
    throw py::type_error(std::string(name) + " has dtype " + std::string(py::str(a.dtype())) +
                         ", expected " + std::string(py::str(dt)));
  bool same = a.ndim() == static_cast<py::ssize_t>(shape.size());
  for (size_t d = 0; same && d < shape.size(); ++d)
    same = shape[d] == SIZE_MAX || static_cast<size_t>(a.shape(d)) == shape[d];
  if (!same)
    throw py::value_error(std::string(name) + " must have shape " + expected_str(shape) +
                          ", got " + shape_str(a));
  const int flags = py::detail::array_proxy(a.ptr())->flags;
  if (!(flags & py::detail::npy_api::NPY_ARRAY_C_CONTIGUOUS_) ||
      !(flags & py::detail::npy_api::NPY_ARRAY_ALIGNED_))
    throw py::value_error(std::string(name) +
                          " must be C-contiguous and aligned (numpy.ascontiguousarray)");
  return a;
}

template <class Real>
const Real* ptr(const py::array& a) { return static_cast<const Real*>(a.data()); }

template <class Real>
Real* out_ptr(py::array& a) { return static_cast<Real*>(a.mutable_data()); }

int pool_threads() { return get_pool_threads(); }

// The sizes every kernel call shares, read from x (T, B, I) and h0 (B, H),
// and x's strides in elements (see ForwardArgs).
struct Sizes {
  size_t T, B, I, H;
  size_t x_step, x_row;
};

Sizes read_sizes(const py::array& x, const py::handle& h0_obj, const py::dtype& dt) {
  if (x.ndim() != 3)
    throw py::value_error("x must be 3-D (T, B, I), got shape " + shape_str(x));
  // An axis of one entry is never stepped along: its stride is unused.
  auto elements = [&](int d) { return x.shape(d) > 1 ? size_t(x.strides(d) / dt.itemsize()) : 0; };
  Sizes s{size_t(x.shape(0)), size_t(x.shape(1)), size_t(x.shape(2)), 0, elements(0), elements(1)};
  if (s.T == 0 || s.B == 0)
    throw py::value_error("x (T, B, I) needs at least one time step and one sequence, got " +
                          shape_str(x));
  py::array h0 = checked(h0_obj, "h0", dt, {s.B, SIZE_MAX});
  s.H = size_t(h0.shape(1));
  if (s.H == 0) throw py::value_error("h0 must have at least one hidden unit, got shape (B, 0)");
  checked_mul(checked_mul(checked_mul(s.T, s.B), 4), s.H);  // the largest buffer a kernel sizes
  checked_mul(checked_mul(s.T, s.B), 5 * s.H + s.I);          // the LSTM workspace
  checked_mul(checked_mul(s.T, s.B), s.I);
  checked_mul(checked_mul(4, s.H), s.I + s.H);
  return s;
}

// A C-contiguous output array. Its memory comes from aligned_malloc, so the
// large ones (y, dx) are reused from call to call like the kernels' buffers.
py::array new_array(const py::dtype& dt, std::vector<py::ssize_t> shape) {
  size_t bytes = size_t(dt.itemsize());
  for (py::ssize_t d : shape) bytes = checked_mul(bytes, size_t(d));
  struct Block {
    void* data;
    size_t bytes;
  };
  Block* block = new Block{aligned_malloc(bytes), bytes};
  py::capsule owner(block, [](void* p) {
    Block* b = static_cast<Block*>(p);
    aligned_free(b->data, b->bytes);
    delete b;
  });
  return py::array(dt, std::move(shape), {}, block->data, owner);
}

// The float32 or float64 entry of a kernel table pair.
template <class Real, class F32, class F64>
auto table_entry(F32 f32, F64 f64) {
  if constexpr (sizeof(Real) == 4) return f32; else return f64;
}

// Calls a kernel with the GIL released: other Python threads run meanwhile.
template <class Args>
void run_kernel(void (*kernel)(const Args&), const Args& args) {
  py::gil_scoped_release release;
  kernel(args);
}

// ------------------------------------------------------------------ forward

template <class Real>
py::tuple forward(Cell cell, py::array x, py::array h0, py::object c0, py::array w_ih,
                  py::array w_hh, py::array b, bool training, const py::dtype& dt,
                  const Sizes& s) {
  py::array y = new_array(dt, {py::ssize_t(s.T), py::ssize_t(s.B), py::ssize_t(s.H)});
  py::array cT;
  if (cell == Cell::lstm) cT = new_array(dt, {py::ssize_t(s.B), py::ssize_t(s.H)});
  Workspace* ws = training ? new Workspace(cell, sizeof(Real), s.T, s.B, s.I, s.H) : nullptr;
  py::object saved = ws ? py::cast(ws, py::return_value_policy::take_ownership) : py::none();

  ForwardArgs<Real> args{};
  args.T = s.T;
  args.B = s.B;
  args.I = s.I;
  args.H = s.H;
  args.x_step = s.x_step;
  args.x_row = s.x_row;
  args.x = ptr<Real>(x);
  args.h0 = ptr<Real>(h0);
  args.c0 = cell == Cell::lstm ? ptr<Real>(py::reinterpret_borrow<py::array>(c0)) : nullptr;
  args.w_ih = ptr<Real>(w_ih);
  args.w_hh = ptr<Real>(w_hh);
  args.b = ptr<Real>(b);
  args.y = out_ptr<Real>(y);
  args.cT = cell == Cell::lstm ? out_ptr<Real>(cT) : nullptr;
  if (ws != nullptr) {
    args.x_saved = ws->x_saved<Real>();
    if (cell == Cell::lstm) {
      args.gates = ws->gates<Real>();
      args.c_all = ws->c_all<Real>();
    }
  }
  args.threads = pool_threads();
  const KernelTable& k = kernels();
  run_kernel(cell == Cell::rnn ? table_entry<Real>(k.rnn_forward_f32, k.rnn_forward_f64)
                               : table_entry<Real>(k.lstm_forward_f32, k.lstm_forward_f64),
             args);
  if (cell == Cell::rnn) return py::make_tuple(y, saved);
  return py::make_tuple(y, cT, saved);
}

py::tuple forward_entry(Cell cell, py::object x_obj, py::object h0_obj, py::object c0_obj,
                        py::object w_ih_obj, py::object w_hh_obj, py::object b_obj,
                        bool training) {
  py::dtype dt;
  py::array x = checked_x(x_obj, dt);
  const Sizes s = read_sizes(x, h0_obj, dt);
  const size_t G = cell == Cell::lstm ? 4 : 1;
  py::array h0 = checked(h0_obj, "h0", dt, {s.B, s.H});
  if (cell == Cell::lstm) checked(c0_obj, "c0", dt, {s.B, s.H});
  py::array w_ih = checked(w_ih_obj, "w_ih", dt, {G * s.H, s.I});
  py::array w_hh = checked(w_hh_obj, "w_hh", dt, {G * s.H, s.H});
  py::array b = checked(b_obj, "b", dt, {G * s.H});
  if (dt.equal(py::dtype::of<float>()))
    return forward<float>(cell, x, h0, c0_obj, w_ih, w_hh, b, training, dt, s);
  return forward<double>(cell, x, h0, c0_obj, w_ih, w_hh, b, training, dt, s);
}

// ----------------------------------------------------------------- backward

template <class Real>
py::tuple backward(Cell cell, const Workspace& ws, py::array h0, py::object c0, py::array w_ih,
                   py::array w_hh, py::array y, py::object dy, py::array dhT, py::object dcT,
                   bool need_dx, const py::dtype& dt, const Sizes& s) {
  const size_t G = cell == Cell::lstm ? 4 : 1;
  auto shape2 = [](size_t a, size_t b) { return std::vector<py::ssize_t>{py::ssize_t(a), py::ssize_t(b)}; };
  py::object dx = py::none();
  py::array dx_arr;
  if (need_dx) {
    dx_arr = new_array(dt, {py::ssize_t(s.T), py::ssize_t(s.B), py::ssize_t(s.I)});
    dx = dx_arr;
  }
  py::array dh0 = new_array(dt, shape2(s.B, s.H));
  py::array dc0;
  if (cell == Cell::lstm) dc0 = new_array(dt, shape2(s.B, s.H));
  py::array dw_ih = new_array(dt, shape2(G * s.H, s.I));
  py::array dw_hh = new_array(dt, shape2(G * s.H, s.H));
  py::array db = new_array(dt, {py::ssize_t(G * s.H)});

  BackwardArgs<Real> args{};
  args.T = s.T;
  args.B = s.B;
  args.I = s.I;
  args.H = s.H;
  args.h0 = ptr<Real>(h0);
  args.w_ih = ptr<Real>(w_ih);
  args.w_hh = ptr<Real>(w_hh);
  args.y = ptr<Real>(y);
  args.dy = dy.is_none() ? nullptr : ptr<Real>(py::reinterpret_borrow<py::array>(dy));
  args.dhT = ptr<Real>(dhT);
  args.dx = need_dx ? out_ptr<Real>(dx_arr) : nullptr;
  args.dh0 = out_ptr<Real>(dh0);
  args.dw_ih = out_ptr<Real>(dw_ih);
  args.dw_hh = out_ptr<Real>(dw_hh);
  args.db = out_ptr<Real>(db);
  if (cell == Cell::lstm) {
    args.c0 = ptr<Real>(py::reinterpret_borrow<py::array>(c0));
    args.dcT = ptr<Real>(py::reinterpret_borrow<py::array>(dcT));
    args.dc0 = out_ptr<Real>(dc0);
    args.gates = ws.gates<Real>();
    args.c_all = ws.c_all<Real>();
  }
  args.x_saved = ws.x_saved<Real>();
  args.threads = pool_threads();
  const KernelTable& k = kernels();
  run_kernel(cell == Cell::rnn ? table_entry<Real>(k.rnn_backward_f32, k.rnn_backward_f64)
                               : table_entry<Real>(k.lstm_backward_f32, k.lstm_backward_f64),
             args);
  if (cell == Cell::rnn) return py::make_tuple(dx, dh0, dw_ih, dw_hh, db);
  return py::make_tuple(dx, dh0, dc0, dw_ih, dw_hh, db);
}

py::tuple backward_entry(Cell cell, py::object saved, py::object x_obj, py::object h0_obj,
                         py::object c0_obj, py::object w_ih_obj, py::object w_hh_obj,
                         py::object y_obj, py::object dy_obj, py::object dhT_obj,
                         py::object dcT_obj, bool need_dx) {
  const std::string fn = std::string(cell_name(cell)) + "_backward";
  if (saved.is_none())
    throw py::value_error(fn + " needs the state saved by a training forward (got None)");
  if (!py::isinstance<Workspace>(saved))
    throw py::type_error(fn + ": saved must be the workspace returned by " + cell_name(cell) +
                         "_forward of this backend, got " +
                         std::string(py::str(py::type::of(saved).attr("__name__"))));
  const Workspace& ws = saved.cast<const Workspace&>();
  py::dtype dt;
  py::array x = checked_x(x_obj, dt);
  const Sizes s = read_sizes(x, h0_obj, dt);
  if (ws.cell != cell)
    throw py::value_error(fn + ": saved comes from " + cell_name(ws.cell) + "_forward");
  if (ws.itemsize != dt.itemsize())
    throw py::type_error(fn + ": saved comes from a forward of another dtype");
  if (ws.T != s.T || ws.B != s.B || ws.I != s.I || ws.H != s.H)
    throw py::value_error(fn + ": saved comes from a forward of other sizes (T, B, I, H) = (" +
                          std::to_string(ws.T) + ", " + std::to_string(ws.B) + ", " +
                          std::to_string(ws.I) + ", " + std::to_string(ws.H) + ")");
  const size_t G = cell == Cell::lstm ? 4 : 1;
  py::array h0 = checked(h0_obj, "h0", dt, {s.B, s.H});
  if (cell == Cell::lstm) checked(c0_obj, "c0", dt, {s.B, s.H});
  py::array w_ih = checked(w_ih_obj, "w_ih", dt, {G * s.H, s.I});
  py::array w_hh = checked(w_hh_obj, "w_hh", dt, {G * s.H, s.H});
  py::array y = checked(y_obj, "y", dt, {s.T, s.B, s.H});
  if (!dy_obj.is_none()) checked(dy_obj, "dy", dt, {s.T, s.B, s.H});
  py::array dhT = checked(dhT_obj, "dhT", dt, {s.B, s.H});
  if (cell == Cell::lstm) checked(dcT_obj, "dcT", dt, {s.B, s.H});
  if (dt.equal(py::dtype::of<float>()))
    return backward<float>(cell, ws, h0, c0_obj, w_ih, w_hh, y, dy_obj, dhT, dcT_obj, need_dx,
                           dt, s);
  return backward<double>(cell, ws, h0, c0_obj, w_ih, w_hh, y, dy_obj, dhT, dcT_obj, need_dx, dt,
                          s);
}

// ------------------------------------------------------------------- Adam

// An ndarray of dtype dt, C-contiguous and aligned (and writeable if asked).
bool plain_array(const py::handle& obj, const py::dtype& dt, bool writeable) {
  if (!py::isinstance<py::array>(obj)) return false;
  auto a = py::reinterpret_borrow<py::array>(obj);
  const int flags = py::detail::array_proxy(a.ptr())->flags;
  return a.dtype().equal(dt) && (flags & py::detail::npy_api::NPY_ARRAY_C_CONTIGUOUS_) &&
         (flags & py::detail::npy_api::NPY_ARRAY_ALIGNED_) &&
         (!writeable || (flags & py::detail::npy_api::NPY_ARRAY_WRITEABLE_));
}

bool overlaps(const py::array& a, const py::array& b) {
  const char* a0 = static_cast<const char*>(a.data());
  const char* b0 = static_cast<const char*>(b.data());
  return a0 < b0 + b.nbytes() && b0 < a0 + a.nbytes();
}

// Adam's update of one parameter in one pass, when the arrays allow it:
// param, exp_avg, exp_avg_sq writeable, all four of one dtype (float32 or
// float64) and size, C-contiguous, the gradient apart from the other three.
// Returns False otherwise, leaving everything untouched: fastrnn.optim then
// does the same update with NumPy ufuncs, which give the same bits.
bool adam_update_entry(py::object param, py::object grad, py::object exp_avg,
                       py::object exp_avg_sq, double beta1, double beta2, double step_size,
                       double bias_correction2_sqrt, double eps) {
  if (!py::isinstance<py::array>(param)) return false;
  const py::dtype dt = py::reinterpret_borrow<py::array>(param).dtype();
  const bool f32 = dt.equal(py::dtype::of<float>());
  if (!f32 && !dt.equal(py::dtype::of<double>())) return false;
  if (!plain_array(param, dt, true) || !plain_array(grad, dt, false) ||
      !plain_array(exp_avg, dt, true) || !plain_array(exp_avg_sq, dt, true))
    return false;
  auto p = py::reinterpret_borrow<py::array>(param), g = py::reinterpret_borrow<py::array>(grad);
  auto m = py::reinterpret_borrow<py::array>(exp_avg);
  auto v = py::reinterpret_borrow<py::array>(exp_avg_sq);
  const py::ssize_t n = p.size();
  if (g.size() != n || m.size() != n || v.size() != n) return false;
  if (overlaps(g, p) || overlaps(g, m) || overlaps(g, v) || overlaps(p, m) || overlaps(p, v) ||
      overlaps(m, v))
    return false;
  auto run = [&](auto zero) {
    using Real = decltype(zero);
    const AdamArgs<Real> args{out_ptr<Real>(p), ptr<Real>(g), out_ptr<Real>(m), out_ptr<Real>(v),
                              size_t(n), Real(1.0 - beta1), Real(beta2), Real(1.0 - beta2),
                              Real(bias_correction2_sqrt), Real(eps), Real(-step_size)};
    const KernelTable& k = kernels();
    run_kernel(table_entry<Real>(k.adam_update_f32, k.adam_update_f64), args);
  };
  if (f32) run(0.0f); else run(0.0);
  return true;
}

// ------------------------------------------------------------------- head

// The classifier head in one call (csrc/head.cc): h (B, H), weight (C, H),
// bias (C,) of one float dtype, labels (B,) int64 in [0, C) ->
// (loss, predictions, dh, dweight, dbias).
py::tuple classifier_head_entry(py::object h_obj, py::object w_obj, py::object bias_obj,
                                py::object labels_obj) {
  const py::dtype dt = float_dtype_of(h_obj, "h");
  auto h_arr = py::reinterpret_borrow<py::array>(h_obj);
  if (h_arr.ndim() != 2 || h_arr.shape(0) == 0 || h_arr.shape(1) == 0)
    throw py::value_error("h must be 2-D (B, H) with B, H >= 1, got shape " + shape_str(h_arr));
  const size_t B = size_t(h_arr.shape(0)), H = size_t(h_arr.shape(1));
  py::array h = checked(h_obj, "h", dt, {B, H});
  py::array w = checked(w_obj, "weight", dt, {SIZE_MAX, H});
  const size_t C = size_t(w.shape(0));
  if (C == 0) throw py::value_error("weight must have at least one class (row)");
  py::array bias = checked(bias_obj, "bias", dt, {C});
  py::array labels = checked(labels_obj, "labels", py::dtype::of<int64_t>(), {B});
  const int64_t* label = static_cast<const int64_t*>(labels.data());
  const auto [low, high] = std::minmax_element(label, label + B);
  if (*low < 0 || *high >= int64_t(C))
    throw py::value_error("labels must lie in [0, " + std::to_string(C) + "), got range [" +
                          std::to_string(*low) + ", " + std::to_string(*high) + "]");
  py::array predictions = new_array(py::dtype::of<int64_t>(), {py::ssize_t(B)});
  py::array dh = new_array(dt, {py::ssize_t(B), py::ssize_t(H)});
  py::array dw = new_array(dt, {py::ssize_t(C), py::ssize_t(H)});
  py::array db = new_array(dt, {py::ssize_t(C)});
  double loss = 0;
  auto run = [&](auto zero) {
    using Real = decltype(zero);
    const HeadArgs<Real> args{B, H, C, ptr<Real>(h), ptr<Real>(w), ptr<Real>(bias), label,
                              &loss, static_cast<int64_t*>(predictions.mutable_data()),
                              out_ptr<Real>(dh), out_ptr<Real>(dw), out_ptr<Real>(db)};
    const KernelTable& k = kernels();
    run_kernel(table_entry<Real>(k.classifier_head_f32, k.classifier_head_f64), args);
  };
  if (dt.equal(py::dtype::of<float>())) run(0.0f); else run(0.0);
  return py::make_tuple(loss, predictions, dh, dw, db);
}

// ------------------------------------------------------------------ module

py::dict build_info() {
  py::dict d;
  d["version"] = FASTRNN_VERSION;
#if defined(__clang__)
  d["compiler"] = "clang " __clang_version__;
#elif defined(__GNUC__)
  d["compiler"] = "gcc " __VERSION__;
#else
  d["compiler"] = "unknown";
#endif
  d["kernel_path"] = kernels().isa;
  d["isa_supported"] = supported_isas();
  d["isa_compiled"] = compiled_isas();
  d["cpu_features"] = cpu_features();
  d["threads"] = get_pool_threads();
  return d;
}

void set_num_threads(py::object n) {
  if (py::isinstance<py::bool_>(n) || !py::isinstance<py::int_>(n))
    throw py::type_error("number of threads must be an int, got " +
                         std::string(py::str(py::type::of(n).attr("__name__"))));
  const long long value = n.cast<long long>();
  if (value < 1 || value > kMaxThreads)
    throw py::value_error("number of threads must be between 1 and " +
                          std::to_string(kMaxThreads) + ", got " + std::to_string(value));
  set_pool_threads(static_cast<int>(value));
}

}  // namespace
}  // namespace fastrnn

PYBIND11_MODULE(_core, m) {
  using namespace fastrnn;
  m.doc() = "fastrnn compiled backend: RNN and LSTM forward and BPTT kernels";
  // FASTRNN_ISA asking for an unknown path or more than the CPU has fails the
  // import, never a silent fallback. pybind11 turns any error here into an
  // ImportError; its __cause__ is this ValueError, which _backends re-raises.
  try {
    select_isa_from_environment();
  } catch (const std::invalid_argument& e) {
    PyErr_SetString(PyExc_ValueError, e.what());
    throw py::error_already_set();
  }

  py::class_<Workspace>(m, "Workspace",
                        "What a training forward keeps for its backward (opaque).")
      .def_property_readonly("cell", [](const Workspace& w) { return cell_name(w.cell); })
      .def_property_readonly("nbytes", [](const Workspace& w) { return w.elements * w.itemsize; })
      .def("__repr__", [](const Workspace& w) {
        return std::string("<fastrnn._core.Workspace ") + cell_name(w.cell) + " float" +
               std::to_string(8 * w.itemsize) + " T=" + std::to_string(w.T) +
               " B=" + std::to_string(w.B) + " I=" + std::to_string(w.I) +
               " H=" + std::to_string(w.H) + ">";
      });

  m.attr("name") = "cpp";
  // x may be any (T, B, I) view whose last axis is contiguous (see checked_x),
  // and a training forward keeps its own copy of x for the backward.
  m.attr("reads_x_views") = true;
  m.def("rnn_forward",
        [](py::object x, py::object h0, py::object w_ih, py::object w_hh, py::object b,
           bool training) {
          return forward_entry(Cell::rnn, x, h0, py::none(), w_ih, w_hh, b, training);
        },
        py::arg("x"), py::arg("h0"), py::arg("w_ih"), py::arg("w_hh"), py::arg("b"),
        py::arg("training") = true,
        "(y, saved) for x (T, B, I), h0 (B, H), w_ih (H, I), w_hh (H, H), b (H,).");
  m.def("rnn_backward",
        [](py::object saved, py::object x, py::object h0, py::object w_ih, py::object w_hh,
           py::object y, py::object dy, py::object dhT, bool need_dx) {
          return backward_entry(Cell::rnn, saved, x, h0, py::none(), w_ih, w_hh, y, dy, dhT,
                                py::none(), need_dx);
        },
        py::arg("saved"), py::arg("x"), py::arg("h0"), py::arg("w_ih"), py::arg("w_hh"),
        py::arg("y"), py::arg("dy").none(true), py::arg("dhT"), py::arg("need_dx") = true,
        "(dx, dh0, dw_ih, dw_hh, db); dy may be None, dx is None unless need_dx.");
  m.def("lstm_forward",
        [](py::object x, py::object h0, py::object c0, py::object w_ih, py::object w_hh,
           py::object b, bool training) {
          return forward_entry(Cell::lstm, x, h0, c0, w_ih, w_hh, b, training);
        },
        py::arg("x"), py::arg("h0"), py::arg("c0"), py::arg("w_ih"), py::arg("w_hh"),
        py::arg("b"), py::arg("training") = true,
        "(y, cT, saved) for x (T, B, I), h0, c0 (B, H), w_ih (4H, I), w_hh (4H, H), b (4H,).");
  m.def("lstm_backward",
        [](py::object saved, py::object x, py::object h0, py::object c0, py::object w_ih,
           py::object w_hh, py::object y, py::object dy, py::object dhT, py::object dcT,
           bool need_dx) {
          return backward_entry(Cell::lstm, saved, x, h0, c0, w_ih, w_hh, y, dy, dhT, dcT,
                                need_dx);
        },
        py::arg("saved"), py::arg("x"), py::arg("h0"), py::arg("c0"), py::arg("w_ih"),
        py::arg("w_hh"), py::arg("y"), py::arg("dy").none(true), py::arg("dhT"),
        py::arg("dcT"), py::arg("need_dx") = true,
        "(dx, dh0, dc0, dw_ih, dw_hh, db); dy may be None, dx is None unless need_dx.");
  m.def("adam_update", &adam_update_entry, py::arg("param"), py::arg("grad"),
        py::arg("exp_avg"), py::arg("exp_avg_sq"), py::arg("beta1"), py::arg("beta2"),
        py::arg("step_size"), py::arg("bias_correction2_sqrt"), py::arg("eps"),
        "Adam's update of one parameter in place, in one pass; False (nothing done) when the "
        "arrays do not allow it (see fastrnn.optim.Adam).");
  m.def("classifier_head", &classifier_head_entry, py::arg("h"), py::arg("weight"),
        py::arg("bias"), py::arg("labels"),
        "Linear head + mean softmax cross-entropy and its gradients in one call: "
        "(loss, predictions, dh, dweight, dbias).");
  m.def("set_num_threads", &set_num_threads, py::arg("n"),
        "Threads the kernels use (1 to 1024).");
  m.def("get_num_threads", &get_pool_threads);
  m.def("build_info", &build_info, "Facts about this build and the kernel path chosen.");
  m.def("release_cached_memory", &release_cached_memory,
        "Return the freed large buffers kept for reuse to the system; the bytes released.");
  m.def("_set_isa", [](const std::string& name) { select_isa(name); }, py::arg("name"),
        "Tests only: switch the kernel path (generic, avx2, avx512) in this process.");
}
