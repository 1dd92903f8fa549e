#include "checks.h"

#include "memory.h"
#include "parallel.h"

#include <utility>

namespace fastrnn {
namespace {

// A free size (kAnySize) prints as a letter of the sizes legend would: "n".
std::string expected_str(const std::vector<size_t>& shape) {
  std::string s = "(";
  for (size_t d = 0; d < shape.size(); ++d)
    s += (d ? ", " : "") + (shape[d] == kAnySize ? std::string("n") : std::to_string(shape[d]));
  return s + (shape.size() == 1 ? ",)" : ")");
}

int array_flags(const py::array& a) { return py::detail::array_proxy(a.ptr())->flags; }

std::string type_name(const py::handle& obj) {
  return std::string(py::str(py::type::of(obj).attr("__name__")));
}

}  // namespace

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

py::dtype float_dtype_of(const py::handle& x, const char* name) {
  if (!py::isinstance<py::array>(x))
    throw py::type_error(std::string(name) + " must be a numpy.ndarray, got " + type_name(x));
  py::dtype dt = py::reinterpret_borrow<py::array>(x).dtype();
  if (!dt.equal(py::dtype::of<float>()) && !dt.equal(py::dtype::of<double>()))
    throw py::type_error(std::string(name) + " must have dtype float32 or float64, got " +
                         std::string(py::str(dt)));
  return dt;
}

namespace {

// obj as an ndarray of dtype dt and this shape (kAnySize entries are free),
// whatever its layout; else TypeError or ValueError naming `name`.
py::array shaped(const py::handle& obj, const char* name, const py::dtype& dt,
                 const std::vector<size_t>& shape) {
  if (!py::isinstance<py::array>(obj))
    throw py::type_error(std::string(name) + " must be a numpy.ndarray, got " + type_name(obj));
  auto a = py::reinterpret_borrow<py::array>(obj);
  if (!a.dtype().equal(dt))
    throw py::type_error(std::string(name) + " has dtype " + std::string(py::str(a.dtype())) +
                         ", expected " + std::string(py::str(dt)));
  bool same = a.ndim() == static_cast<py::ssize_t>(shape.size());
  for (size_t d = 0; same && d < shape.size(); ++d)
    same = shape[d] == kAnySize || static_cast<size_t>(a.shape(d)) == shape[d];
  if (!same)
    throw py::value_error(std::string(name) + " must have shape " + expected_str(shape) +
                          ", got " + shape_str(a));
  return a;
}

}  // namespace

py::array checked(const py::handle& obj, const char* name, const py::dtype& dt,
                  const std::vector<size_t>& shape) {
  py::array a = shaped(obj, name, dt, shape);
  const int flags = array_flags(a);
  if (!(flags & py::detail::npy_api::NPY_ARRAY_C_CONTIGUOUS_) ||
      !(flags & py::detail::npy_api::NPY_ARRAY_ALIGNED_))
    throw py::value_error(std::string(name) +
                          " must be C-contiguous and aligned (numpy.ascontiguousarray)");
  return a;
}

bool plain_array(const py::handle& obj, const py::dtype& dt, bool writeable) {
  if (!py::isinstance<py::array>(obj)) return false;
  auto a = py::reinterpret_borrow<py::array>(obj);
  const int flags = array_flags(a);
  return a.dtype().equal(dt) && (flags & py::detail::npy_api::NPY_ARRAY_C_CONTIGUOUS_) &&
         (flags & py::detail::npy_api::NPY_ARRAY_ALIGNED_) &&
         (!writeable || (flags & py::detail::npy_api::NPY_ARRAY_WRITEABLE_));
}

std::vector<size_t> checked_offsets(const py::handle& obj, size_t B) {
  if (obj.is_none()) return {};
  if (py::isinstance<py::array>(obj) && py::reinterpret_borrow<py::array>(obj).ndim() != 1)
    throw py::value_error("batch_sizes must be 1-D (T,), got shape " +
                          shape_str(py::reinterpret_borrow<py::array>(obj)));
  py::array sizes = checked(obj, "batch_sizes", py::dtype::of<int64_t>(), {kAnySize});
  const size_t T = size_t(sizes.shape(0));
  if (T == 0) throw py::value_error("batch_sizes needs at least one time step");
  const int64_t* n = static_cast<const int64_t*>(sizes.data());
  if (n[0] != int64_t(B))
    throw py::value_error("batch_sizes[0] must equal the batch of h0 (" + std::to_string(B) +
                          "), got " + std::to_string(n[0]));
  std::vector<size_t> offsets(T + 1, 0);
  for (size_t t = 0; t < T; ++t) {
    if (n[t] < 1 || (t > 0 && n[t] > n[t - 1]))
      throw py::value_error("batch_sizes must be non-increasing and at least 1 (the rows "
                            "sorted by length, longest first), got " + std::to_string(n[t]) +
                            " at step " + std::to_string(t));
    offsets[t + 1] = offsets[t] + size_t(n[t]);
  }
  return offsets;
}

StepView checked_steps(const py::handle& obj, const char* name, const py::dtype& dt,
                       const Sizes& s, size_t n, bool writeable) {
  const bool packed = !s.offsets.empty();
  const py::array a = shaped(obj, name, dt, packed ? std::vector<size_t>{s.rows(), n}
                                                     : std::vector<size_t>{s.T, s.B, n});
  // An axis of one entry is never stepped along: its stride is unused.
  const py::ssize_t item = dt.itemsize(), last = a.ndim() - 1;
  auto elements = [&](py::ssize_t d) { return a.shape(d) > 1 ? a.strides(d) / item : 0; };
  bool readable = a.size() == 0 || a.shape(last) <= 1 || a.strides(last) == item;
  for (py::ssize_t d = 0; d < last && a.size() > 0; ++d)
    readable = readable && (a.shape(d) <= 1 || (a.strides(d) >= 0 && a.strides(d) % item == 0));
  if (!readable)
    throw py::value_error(std::string(name) + " must have a contiguous last axis and "
                          "non-negative strides (numpy.ascontiguousarray)");
  const int flags = array_flags(a);
  if (!(flags & py::detail::npy_api::NPY_ARRAY_ALIGNED_))
    throw py::value_error(std::string(name) + " must be aligned (numpy.ascontiguousarray)");
  if (writeable && !(flags & py::detail::npy_api::NPY_ARRAY_WRITEABLE_))
    throw py::value_error(std::string(name) + " must be writeable");
  if (packed) return StepView{a, 0, size_t(elements(0))};
  return StepView{a, ptrdiff_t(elements(0)), size_t(elements(1))};
}

StepView checked_x(const py::handle& obj, const py::handle& batch_sizes, const py::handle& h0_obj,
                   const CellTraits& cell, py::dtype& dt, Sizes& s) {
  dt = float_dtype_of(obj);
  auto x = py::reinterpret_borrow<py::array>(obj);
  if (!batch_sizes.is_none()) {
    if (x.ndim() != 2)
      throw py::value_error("a packed x must be 2-D (sum of batch_sizes, I), got shape " +
                            shape_str(x));
    if (py::isinstance<py::array>(h0_obj) && py::reinterpret_borrow<py::array>(h0_obj).ndim() != 2)
      throw py::value_error("h0 must be 2-D (B, H), got shape " +
                            shape_str(py::reinterpret_borrow<py::array>(h0_obj)));
    py::array h0 = checked(h0_obj, "h0", dt, {kAnySize, kAnySize});
    const size_t B = size_t(h0.shape(0));
    s = Sizes{0, B, size_t(x.shape(1)), size_t(h0.shape(1)), checked_offsets(batch_sizes, B)};
    s.T = s.offsets.size() - 1;
    if (s.rows() != size_t(x.shape(0)))
      throw py::value_error("a packed x must have sum(batch_sizes) = " +
                            std::to_string(s.rows()) + " rows, got " + shape_str(x));
  } else {
    if (x.ndim() != 3)
      throw py::value_error("x must be 3-D (T, B, I), got shape " + shape_str(x));
    s = Sizes{size_t(x.shape(0)), size_t(x.shape(1)), size_t(x.shape(2)), 0, {}};
    if (s.T == 0 || s.B == 0)
      throw py::value_error("x (T, B, I) needs at least one time step and one sequence, got " +
                            shape_str(x));
    py::array h0 = checked(h0_obj, "h0", dt, {s.B, kAnySize});
    s.H = size_t(h0.shape(1));
  }
  if (s.H == 0) throw py::value_error("h0 must have at least one hidden unit, got shape (B, 0)");
  if (s.B == 0) throw py::value_error("h0 must have at least one sequence (row)");
  // The largest buffers a kernel sizes: da of every step (G+1 groups at
  // most), the workspace, x's copy, the packed weights.
  const size_t G = cell.G, rows = s.offsets.empty() ? checked_mul(s.T, s.B) : s.rows();
  checked_mul(checked_mul(rows, G + 1), s.H);
  checked_mul(rows, checked_mul(cell.saved_per_unit, s.H) + s.I);
  checked_mul(checked_mul(G + 1, s.H), s.I + s.H);
  return checked_steps(x, "x", dt, s, s.I);
}

namespace {

// [first, last) bytes of an array's elements.
std::pair<const char*, const char*> memory_bounds(const py::array& a) {
  const char* first = static_cast<const char*>(a.data());
  const char* last = first;
  for (py::ssize_t d = 0; d < a.ndim(); ++d) {
    if (a.shape(d) == 0) return {first, first};
    const py::ssize_t span = (a.shape(d) - 1) * a.strides(d);
    (span < 0 ? first : last) += span;
  }
  return {first, last + a.itemsize()};
}

}  // namespace

bool may_overlap(const py::array& a, const py::array& b) {
  const auto [a0, a1] = memory_bounds(a);
  const auto [b0, b1] = memory_bounds(b);
  return a0 < a1 && b0 < b1 && a0 < b1 && b0 < a1;
}

int checked_threads(const py::handle& obj, int pool) {
  if (obj.is_none()) return pool;
  if (py::isinstance<py::bool_>(obj) || !py::isinstance<py::int_>(obj))
    throw py::type_error("threads must be an int or None");
  const long long n = obj.cast<long long>();
  if (n < 1 || n > pool)
    throw py::value_error("threads must be between 1 and the pool's " + std::to_string(pool) +
                          " (fastrnn.set_num_threads), got " + std::to_string(n));
  return int(n);
}

int checked_call_threads(const py::handle& obj) {
  return checked_threads(obj, get_pool_threads());
}

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

}  // namespace fastrnn
