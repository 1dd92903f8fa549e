// The one argument checker of fastrnn._core: every entry point converts and
// checks its arrays here (types, dtypes, shapes, layout, sizes) before any
// kernel runs, so a bad argument is a Python exception naming the fix.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>
#include <vector>

#include "common.h"

namespace fastrnn {

namespace py = pybind11;

// Marks a size the caller reads back from the array instead of checking it.
constexpr size_t kAnySize = SIZE_MAX;

// a * b, or ValueError if it does not fit in 64 bits.
size_t checked_mul(size_t a, size_t b);

std::string shape_str(const py::array& a);

// The dtype of x: exactly float32 or float64 (other arrays must match it).
py::dtype float_dtype_of(const py::handle& x, const char* name = "x");

// obj as an ndarray of dtype dt and this shape (kAnySize entries are free),
// C-contiguous and aligned; else TypeError or ValueError naming `name`.
py::array checked(const py::handle& obj, const char* name, const py::dtype& dt,
                  const std::vector<size_t>& shape);

// An ndarray of dtype dt, C-contiguous and aligned (and writeable if asked):
// for the entry points that fall back to NumPy rather than raise.
bool plain_array(const py::handle& obj, const py::dtype& dt, bool writeable);

// The sizes every recurrent kernel call shares: T, B, I, H, and for a packed
// batch T + 1 row offsets (see ForwardArgs), else no offsets.
struct Sizes {
  size_t T, B, I, H;
  std::vector<size_t> offsets;
  size_t rows() const { return offsets.empty() ? T * B : offsets.back(); }
  const size_t* offsets_or_null() const { return offsets.empty() ? nullptr : offsets.data(); }
};

// A per-step array as checked: the array and its strides in elements
// (StepArray in common.h; step is 0 for a packed batch's rows).
struct StepView {
  py::array array;
  ptrdiff_t step;
  size_t row;
};

// x of float32 or float64, whose dtype becomes dt, and the sizes, with h0's
// H, checking that every buffer a kernel of this cell sizes fits 64 bits.
// Without batch_sizes (None), x is (T, B, I), read through its strides as
// checked_steps says: a batch-first (B, T, I) array transposed to (T, B, I)
// is read where it lies. With batch_sizes (T,) int64, non-increasing from
// B = h0's rows down to at least 1, x is a packed batch (sum of batch_sizes, I).
StepView checked_x(const py::handle& obj, const py::handle& batch_sizes, const py::handle& h0,
                   const CellTraits& cell, py::dtype& dt, Sizes& sizes);

// obj as a per-step array of dtype dt with n values per row: (T, B, n), or
// (rows, n) for a packed batch, whose last axis is contiguous and whose other
// strides are non-negative (any gaps, e.g. one half of a (T, B, 2n) array);
// writeable if asked. TypeError or ValueError naming `name` and the fix.
StepView checked_steps(const py::handle& obj, const char* name, const py::dtype& dt,
                       const Sizes& sizes, size_t n, bool writeable = false);

// A packed batch's T + 1 row offsets from batch_sizes (T,) int64, checked
// against B sequences; no offsets for None.
std::vector<size_t> checked_offsets(const py::handle& batch_sizes, size_t B);

// Whether the memory two arrays span intersects (their bounds, as
// numpy.may_share_memory: views with gaps between them may count).
bool may_overlap(const py::array& a, const py::array& b);

// A call's own thread count: None keeps the pool's, else an int from 1 to
// the pool's (fastrnn.set_num_threads).
int checked_call_threads(const py::handle& threads);

// A C-contiguous output array. Its memory comes from aligned_malloc, so the
// large ones (y, dx) are reused from call to call like the kernels' buffers.
py::array new_array(const py::dtype& dt, std::vector<py::ssize_t> shape);

template <class Real>
const Real* ptr(const py::array& a) { return static_cast<const Real*>(a.data()); }

template <class Real>
Real* out_ptr(py::array& a) { return static_cast<Real*>(a.mutable_data()); }

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

// Runs f(Real{}) with Real the C++ type of dt (float32 or float64).
template <class F>
decltype(auto) with_real_type(const py::dtype& dt, F&& f) {
  if (dt.equal(py::dtype::of<float>())) return f(0.0f);
  return f(0.0);
}

// The registration of each area of the module.
void register_recurrent(py::module_& m);
void register_training(py::module_& m);

}  // namespace fastrnn
