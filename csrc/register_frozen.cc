// Frozen models in fastrnn._core (fastrnn/frozen.py is the Python side):
//
//   PackedWeights   one layer direction's weights prepared once, as the
//                   forward's panels (fp32, bf16 or int8) with its gate
//                   panels' biases, for the ISA path that packed them;
//   frozen_forward  a cell's inference forward over PackedWeights;
//   Stream          B sequences stepped one frame at a time through a stack
//                   of PackedWeights: its states live here, and a step is one
//                   call that allocates nothing and releases the GIL.
//
// And, for the tests that hold every ISA path to fastrnn/_quantize.py's
// integers, the int8 products of gemm_int8.h on their own.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "checks.h"
#include "dispatch.h"
#include "gemm_int8.h"
#include "memory.h"
#include "parallel.h"

namespace fastrnn {
namespace {

// A byte buffer from aligned_malloc, 64-byte aligned, freed with its owner.
class Bytes {
 public:
  explicit Bytes(size_t n) : n_(n ? n : 1), data_(static_cast<uint8_t*>(aligned_malloc(n_))) {}
  ~Bytes() { aligned_free(data_, n_); }
  Bytes(const Bytes&) = delete;
  Bytes& operator=(const Bytes&) = delete;
  uint8_t* data() { return data_; }
  const uint8_t* data() const { return data_; }
  template <class T>
  T* as() { return reinterpret_cast<T*>(data_); }
  template <class T>
  const T* as() const { return reinterpret_cast<const T*>(data_); }

 private:
  size_t n_;
  uint8_t* data_;
};

// ------------------------------------------------------------ the cells

template <class Args>
using Kernel = void (*)(const Args&);

// The index in cells.h's list (and the kernel table) of the cell `name`.
size_t frozen_cell(const std::string& name) {
  std::string names;
  for (size_t i = 0; i < kCellCount; ++i) {
    if (name == kCells[i].name) return i;
    names += (i ? ", " : "") + std::string(kCells[i].name);
  }
  throw py::value_error("unknown cell '" + name + "'; choose " + names);
}

Precision precision_named(const std::string& name) {
  if (name == "fp32") return Precision::fp32;
  if (name == "bf16") return Precision::bf16;
  if (name == "int8") return Precision::int8;
  throw py::value_error("precision must be 'fp32', 'bf16' or 'int8', got '" + name + "'");
}

const char* precision_name(Precision p) {
  return p == Precision::bf16 ? "bf16" : p == Precision::int8 ? "int8" : "fp32";
}

// ------------------------------------------------------------ PackedWeights

class PackedWeights {
 public:
  PackedWeights(size_t cell, py::dtype dt, Precision precision, size_t I, size_t H,
                const KernelTable& table, size_t packed_bytes, size_t bias_count)
      : cell(cell), traits(kCells[cell]), dt(std::move(dt)), precision(precision), I(I), H(H),
        table(table),
        packed(packed_bytes), biases(bias_count * this->dt.itemsize()),
        packed_bytes(packed_bytes), bias_bytes(bias_count * this->dt.itemsize()) {}

  const size_t cell;  // in cells.h's list
  const CellTraits& traits;
  const py::dtype dt;
  const Precision precision;
  const size_t I, H;
  const KernelTable& table;  // the ISA path whose panels these are
  Bytes packed, biases;
  const size_t packed_bytes, bias_bytes;

  template <class Real>
  Kernel<ForwardArgs<Real>> forward() const {
    return table_entry<Real>(table.cells_f32[cell].forward, table.cells_f64[cell].forward);
  }
  // ForwardArgs for a forward of these weights, the call's arrays left to the caller.
  template <class Real>
  ForwardArgs<Real> args() const {
    ForwardArgs<Real> p{};
    p.I = I;
    p.H = H;
    p.precision = precision;
    p.packed = packed.data();
    p.panel_biases = biases.as<Real>();
    return p;
  }
  std::string repr() const {
    return std::string("<fastrnn._core.PackedWeights ") + traits.name + " " +
           precision_name(precision) + " I=" + std::to_string(I) + " H=" + std::to_string(H) +
           ", " + std::to_string(packed_bytes + bias_bytes) + " bytes for " + table.isa + ">";
  }
};

using Packed = std::shared_ptr<PackedWeights>;

// Largest depth of an int8 product whose sums cannot overflow int32 on the
// vpdpbusd path (fastrnn/_quantize.py's MAX_DEPTH).
constexpr size_t kInt8MaxDepth = (2147483647ull) / (255 * 127);

// pack_weights(cell, w_ih, w_hh, b_ih, b_hh, precision, s_ih, s_hh): for fp32
// and bf16, w_ih and w_hh are the float weights; for int8 their codes (int8),
// with s_ih, s_hh the float32 scale of every row.
Packed pack_entry(const std::string& cell_name, py::object w_ih_obj, py::object w_hh_obj,
                  py::object b_ih_obj, py::object b_hh_obj, const std::string& precision_text,
                  py::object s_ih_obj, py::object s_hh_obj) {
  const size_t cell = frozen_cell(cell_name);
  const CellTraits& traits = kCells[cell];
  const Precision precision = precision_named(precision_text);
  const bool int8 = precision == Precision::int8;
  const py::dtype dt = int8 ? py::dtype::of<float>() : float_dtype_of(w_ih_obj, "w_ih");
  if (precision == Precision::bf16 && !dt.equal(py::dtype::of<float>()))
    throw py::type_error("precision 'bf16' takes float32 weights");
  const py::dtype wt = int8 ? py::dtype::of<int8_t>() : dt;
  const py::array w_ih = checked(w_ih_obj, "w_ih", wt, {kAnySize, kAnySize});
  const size_t GH = w_ih.shape(0), I = w_ih.shape(1), G = traits.G;
  if (GH == 0 || GH % G != 0)
    throw py::value_error("w_ih must have G*H rows (G = " + std::to_string(G) + " for " +
                          traits.name + "), got " + shape_str(w_ih));
  const size_t H = GH / G;
  const py::array w_hh = checked(w_hh_obj, "w_hh", wt, {GH, H});
  const py::array b_ih = checked(b_ih_obj, "b_ih", dt, {GH});
  const py::array b_hh = checked(b_hh_obj, "b_hh", dt, {GH});
  py::array s_ih, s_hh;
  if (int8) {
    s_ih = checked(s_ih_obj, "s_ih", py::dtype::of<float>(), {GH});
    s_hh = checked(s_hh_obj, "s_hh", py::dtype::of<float>(), {GH});
    if (I > kInt8MaxDepth || H > kInt8MaxDepth)
      throw py::value_error("int8 products take at most " + std::to_string(kInt8MaxDepth) +
                            " inputs and hidden units (their int32 sums would overflow)");
  }
  const KernelTable& table = kernels();
  return with_real_type(dt, [&](auto zero) -> Packed {
    using Real = decltype(zero);
    PackArgs<Real> a{I, H, precision,
                     int8 ? nullptr : ptr<Real>(w_ih), int8 ? nullptr : ptr<Real>(w_hh),
                     int8 ? ptr<int8_t>(w_ih) : nullptr, int8 ? ptr<int8_t>(w_hh) : nullptr,
                     int8 ? ptr<float>(s_ih) : nullptr, int8 ? ptr<float>(s_hh) : nullptr,
                     ptr<Real>(b_ih), ptr<Real>(b_hh),
                     nullptr, nullptr, nullptr, nullptr};
    size_t packed_bytes = 0, bias_count = 0;
    a.packed_bytes = &packed_bytes;
    a.bias_count = &bias_count;
    const auto pack = table_entry<Real>(table.cells_f32[cell].pack, table.cells_f64[cell].pack);
    pack(a);  // the sizes
    auto out = std::make_shared<PackedWeights>(cell, dt, precision, I, H, table, packed_bytes,
                                               bias_count);
    a.packed = out->packed.data();
    a.panel_biases = out->biases.as<Real>();
    run_kernel(pack, a);
    return out;
  });
}

// -------------------------------------------------------- frozen_forward

// (y, [cT,] None) of x through `weights`, as <cell>_forward(..., training=False)
// gives them: x (T, B, I) (any strides, last axis contiguous) or packed with
// batch_sizes.
py::tuple frozen_forward_entry(const Packed& weights, py::object x_obj, py::object h0_obj,
                               py::object c0_obj, py::object batch_sizes, py::object threads) {
  const PackedWeights& w = *weights;
  const CellTraits& cell = w.traits;
  py::dtype dt;
  Sizes s;
  const StepView x = checked_x(x_obj, batch_sizes, h0_obj, cell, dt, s);
  if (!dt.equal(w.dt))
    throw py::type_error("x has dtype " + std::string(py::str(dt)) + ", these weights take " +
                         std::string(py::str(w.dt)));
  if (s.I != w.I || s.H != w.H)
    throw py::value_error("x and h0 give (I, H) = (" + std::to_string(s.I) + ", " +
                          std::to_string(s.H) + "), these weights are for (" +
                          std::to_string(w.I) + ", " + std::to_string(w.H) + ")");
  const py::array h0 = checked(h0_obj, "h0", dt, {s.B, s.H});
  py::array c0;
  if (cell.cell_state) c0 = checked(c0_obj, "c0", dt, {s.B, s.H});
  const int nt = checked_threads(threads, get_pool_threads());
  const py::ssize_t B = s.B, H = s.H;
  py::array y = s.offsets.empty() ? new_array(dt, {py::ssize_t(s.T), B, H})
                                  : new_array(dt, {py::ssize_t(s.rows()), H});
  py::array cT;
  if (cell.cell_state) cT = new_array(dt, {B, H});
  with_real_type(dt, [&](auto zero) {
    using Real = decltype(zero);
    ForwardArgs<Real> p = w.args<Real>();
    p.T = s.T;
    p.B = s.B;
    p.x = {ptr<Real>(x.array), x.step, x.row};
    p.h0 = ptr<Real>(h0);
    p.c0 = cell.cell_state ? ptr<Real>(c0) : nullptr;
    p.offsets = s.offsets_or_null();
    p.y = {out_ptr<Real>(y), ptrdiff_t(s.B * s.H), s.H};
    p.cT = cell.cell_state ? out_ptr<Real>(cT) : nullptr;
    p.threads = nt;
    run_kernel(w.forward<Real>(), p);
  });
  if (cell.cell_state) return py::make_tuple(y, cT, py::none());
  return py::make_tuple(y, py::none());
}

// ------------------------------------------------------------------ Stream

class Stream {
 public:
  Stream(const std::vector<Packed>& layers, size_t B, py::object head_weight,
         py::object head_bias)
      : layers_(checked_stack(layers)), B_(B), H_(layers_[0]->H), L_(layers_.size()),
        lstm_(layers_[0]->traits.cell_state), dt_(layers_[0]->dt),
        item_(size_t(dt_.itemsize())), h_{Bytes(L_ * B * H_ * item_), Bytes(L_ * B * H_ * item_)},
        c_(lstm_ ? L_ * B * H_ * item_ : 0) {
    if (B == 0) throw py::value_error("batch_size must be at least 1");
    if (!head_weight.is_none()) {
      const py::array w = checked(head_weight, "head_weight", dt_, {kAnySize, H_});
      C_ = w.shape(0);
      const py::array b = checked(head_bias, "head_bias", dt_, {C_});
      head_.resize((C_ * H_ + C_) * item_);
      std::memcpy(head_.data(), w.data(), C_ * H_ * item_);
      std::memcpy(head_.data() + C_ * H_ * item_, b.data(), C_ * item_);
    }
    set_state(py::none(), py::none());
  }

  // x_t (B, I) -> h_t (B, H) of the last layer, or the head's logits (B, C).
  py::array step(py::object x_obj, py::object out_obj) {
    const py::array x = checked_frame(x_obj);
    py::array out = output(out_obj);
    Busy busy(busy_);
    const size_t x_row = x.shape(0) > 1 ? size_t(x.strides(0)) / item_ : layers_[0]->I;
    with_real_type(dt_, [&](auto zero) {
      using Real = decltype(zero);
      const Real* input = ptr<Real>(x);
      Real* result = out_ptr<Real>(out);
      py::gil_scoped_release release;
      advance<Real>(input, x_row, result);
    });
    return out;
  }

  // (h (L, B, H), c (L, B, H) or None): copies of the state after the last step.
  py::tuple state() {
    Busy busy(busy_);
    const std::vector<py::ssize_t> shape{py::ssize_t(L_), py::ssize_t(B_), py::ssize_t(H_)};
    py::array h(dt_, shape);
    std::memcpy(h.mutable_data(), h_[current_].data(), L_ * B_ * H_ * item_);
    if (!lstm_) return py::make_tuple(h, py::none());
    py::array c(dt_, shape);
    std::memcpy(c.mutable_data(), c_.data(), L_ * B_ * H_ * item_);
    return py::make_tuple(h, c);
  }

  // The state to go on from: h (and c for the LSTM) (L, B, H); None is zeros.
  // Both are checked before either is taken.
  void set_state(py::object h_obj, py::object c_obj) {
    if (!lstm_ && !c_obj.is_none()) throw py::value_error("only the LSTM has a cell state c");
    const std::vector<size_t> shape{L_, B_, H_};
    const py::object h = h_obj.is_none() ? h_obj : checked(h_obj, "h", dt_, shape);
    const py::object c = c_obj.is_none() ? c_obj : checked(c_obj, "c", dt_, shape);
    Busy busy(busy_);
    const size_t bytes = L_ * B_ * H_ * item_;
    auto load = [&](const py::object& from, uint8_t* to) {
      if (from.is_none()) std::memset(to, 0, bytes);
      else std::memcpy(to, py::reinterpret_borrow<py::array>(from).data(), bytes);
    };
    current_ = 0;
    load(h, h_[0].data());
    if (lstm_) load(c, c_.data());
  }

  size_t batch_size() const { return B_; }
  size_t nbytes() const { return (2 + lstm_) * L_ * B_ * H_ * item_ + head_.size(); }

 private:
  // One thread at a time: a second caller gets an error, not a torn state.
  class Busy {
   public:
    explicit Busy(std::atomic<bool>& flag) : flag_(flag) {
      if (flag_.exchange(true))
        throw std::runtime_error("this stream is stepping in another thread; give each thread "
                                 "its own stream (frozen.stream())");
    }
    ~Busy() { flag_.store(false); }

   private:
    std::atomic<bool>& flag_;
  };

  static const std::vector<Packed>& checked_stack(const std::vector<Packed>& layers) {
    if (layers.empty()) throw py::value_error("a stream needs at least one layer");
    for (size_t k = 0; k < layers.size(); ++k) {
      if (!layers[k] || !layers[0]) throw py::value_error("a stream's layers must be PackedWeights");
      const PackedWeights& w = *layers[k];
      const PackedWeights& first = *layers[0];
      if (w.cell != first.cell || w.precision != first.precision || !w.dt.equal(first.dt) ||
          w.H != first.H || (k > 0 && w.I != first.H))
        throw py::value_error("a stream's layers must be one cell, precision, dtype and H, "
                              "each reading the one below (layer " + std::to_string(k) +
                              " does not)");
    }
    return layers;
  }

  py::array checked_frame(py::object obj) const {
    if (!py::isinstance<py::array>(obj))
      throw py::type_error("x_t must be a numpy.ndarray (B, I), got " +
                           std::string(py::str(py::type::of(obj).attr("__name__"))));
    const auto x = py::reinterpret_borrow<py::array>(obj);
    if (!x.dtype().equal(dt_))
      throw py::type_error("x_t has dtype " + std::string(py::str(x.dtype())) +
                           ", the stream takes " + std::string(py::str(dt_)) +
                           " (x_t.astype(numpy." + std::string(py::str(dt_)) + "))");
    const size_t I = layers_[0]->I;
    if (x.ndim() != 2 || size_t(x.shape(0)) != B_ || size_t(x.shape(1)) != I)
      throw py::value_error("x_t must have shape (B, I) = (" + std::to_string(B_) + ", " +
                            std::to_string(I) + ") for this stream of batch_size=" +
                            std::to_string(B_) + ", got " + shape_str(x));
    const py::ssize_t item = py::ssize_t(item_);
    if ((I > 1 && x.strides(1) != item) ||
        (B_ > 1 && (x.strides(0) < py::ssize_t(I) * item || x.strides(0) % item != 0)))
      throw py::value_error("x_t must have a contiguous last axis and rows apart "
                            "(numpy.ascontiguousarray)");
    if (!(py::detail::array_proxy(x.ptr())->flags & py::detail::npy_api::NPY_ARRAY_ALIGNED_))
      throw py::value_error("x_t must be aligned (numpy.ascontiguousarray)");
    return x;
  }

  py::array output(py::object obj) const {
    const size_t width = C_ ? C_ : H_;
    if (obj.is_none()) return py::array(dt_, {py::ssize_t(B_), py::ssize_t(width)});
    py::array out = checked(obj, "out", dt_, {B_, width});
    if (!out.writeable()) throw py::value_error("out must be writeable");
    return out;
  }

  // Every layer one step, h ping-ponging between the two buffers, then the
  // last layer's h_t (or the head's logits) into result. With one thread the
  // kernels run inline on this one, in its own scratch.
  template <class Real>
  void advance(const Real* input, size_t x_row, Real* result) {
    const size_t next = 1 - current_, plane = B_ * H_;
    Real* h_in = h_[current_].as<Real>();
    Real* h_out = h_[next].as<Real>();
    Real* c = lstm_ ? c_.as<Real>() : nullptr;
    for (size_t k = 0; k < L_; ++k) {
      const PackedWeights& w = *layers_[k];
      ForwardArgs<Real> p = w.args<Real>();
      p.T = 1;
      p.B = B_;
      p.x = {input, ptrdiff_t(B_ * x_row), x_row};
      p.h0 = h_in + k * plane;
      p.c0 = p.cT = c ? c + k * plane : nullptr;
      p.y = {h_out + k * plane, ptrdiff_t(plane), H_};
      p.threads = 1;
      w.forward<Real>()(p);
      input = p.y.data;
      x_row = H_;
    }
    current_ = next;
    const Real* h_t = h_out + (L_ - 1) * plane;
    if (C_ == 0) {
      std::memcpy(result, h_t, plane * sizeof(Real));
      return;
    }
    const Real* weight = reinterpret_cast<const Real*>(head_.data());
    const Real* bias = weight + C_ * H_;
    for (size_t b = 0; b < B_; ++b)
      for (size_t j = 0; j < C_; ++j) {
        Real sum = 0;
        for (size_t u = 0; u < H_; ++u) sum += h_t[b * H_ + u] * weight[j * H_ + u];
        result[b * C_ + j] = sum + bias[j];
      }
  }

  const std::vector<Packed> layers_;  // kept alive: the frozen model may go first
  const size_t B_, H_, L_;
  const bool lstm_;
  const py::dtype dt_;
  const size_t item_;
  Bytes h_[2];
  Bytes c_;
  size_t current_ = 0;  // h_[current_] holds the latest h
  size_t C_ = 0;        // the head's classes, 0 without a head
  std::vector<uint8_t> head_;
  std::atomic<bool> busy_{false};
};

// ------------------------------------------------------- int8 test hooks

// (codes int8 (M, K), scales float32 (M,)) of a float32 (M, K), as the kernels
// quantize x_t and h_{t-1}: codes as signed values, whatever the path stores.
py::tuple quantize_rows_entry(py::object a_obj) {
  const py::array a = checked(a_obj, "a", py::dtype::of<float>(), {kAnySize, kAnySize});
  const size_t M = a.shape(0), K = a.shape(1), ldc = int8_row_bytes(K);
  const Int8Kernels& k = int8_kernels();
  Bytes codes(M * ldc);
  py::array_t<int8_t> out({py::ssize_t(M), py::ssize_t(K)});
  py::array_t<float> scales({py::ssize_t(M)});
  k.quantize_rows(M, K, ptr<float>(a), K, codes.data(), ldc, scales.mutable_data());
  for (size_t r = 0; r < M; ++r)
    for (size_t c = 0; c < K; ++c)
      out.mutable_at(r, c) = static_cast<int8_t>(int(codes.data()[r * ldc + c]) - k.offset);
  return py::make_tuple(out, scales);
}

// One segment of a product: activation codes (M, K) with scales (M,), and
// weight codes (N, K) with scales (N,); K = 0 when absent.
struct Segment {
  size_t K = 0;
  py::array q_a, s_a, q_w, s_w;
};

Segment checked_segment(py::handle q_a, py::handle s_a, py::handle q_w, py::handle s_w,
                        const char* which, size_t& M, size_t& N) {
  Segment seg;
  if (q_a.is_none()) return seg;
  const py::dtype i8 = py::dtype::of<int8_t>(), f32 = py::dtype::of<float>();
  const std::string name(which);
  seg.q_a = checked(q_a, ("q_" + name).c_str(), i8, {M, kAnySize});
  M = seg.q_a.shape(0);
  seg.K = seg.q_a.shape(1);
  seg.s_a = checked(s_a, ("s_" + name).c_str(), f32, {M});
  seg.q_w = checked(q_w, ("q_w_" + name).c_str(), i8, {N, seg.K});
  N = seg.q_w.shape(0);
  seg.s_w = checked(s_w, ("s_w_" + name).c_str(), f32, {N});
  return seg;
}

// The dequantized gate sums (M, N) of f32(q_x q_ih^T) * (s_x s_ih) +
// f32(q_h q_hh^T) * (s_h s_hh), either segment None, through the path's
// packing and tiles.
py::array products_entry(py::object q_x, py::object s_x, py::object q_ih, py::object s_ih,
                         py::object q_h, py::object s_h, py::object q_hh, py::object s_hh) {
  size_t M = kAnySize, N = kAnySize;
  const Segment x = checked_segment(q_x, s_x, q_ih, s_ih, "x", M, N);
  const Segment h = checked_segment(q_h, s_h, q_hh, s_hh, "h", M, N);
  if (M == kAnySize) throw py::value_error("products need q_x or q_h");
  const Int8Kernels& k = int8_kernels();
  const size_t NR = k.NR, panels = (N + NR - 1) / NR, ldt = panels * NR;
  const size_t panel_bytes = k.panel_bytes(x.K, h.K);
  Bytes packed(panels * panel_bytes);
  for (size_t p = 0; p < panels; ++p) {
    const size_t j0 = p * NR, n = std::min(NR, N - j0);
    auto codes = [&](const Segment& s) { return s.K ? ptr<int8_t>(s.q_w) + j0 * s.K : nullptr; };
    auto scales = [&](const Segment& s) { return s.K ? ptr<float>(s.s_w) + j0 : nullptr; };
    k.pack_panel(Int8PanelSource{n, x.K, codes(x), x.K, scales(x), h.K, codes(h), h.K, scales(h)},
                 packed.data() + p * panel_bytes);
  }
  // The path's own encoding of the codes, rows padded to whole groups of 4.
  auto encoded = [&](const Segment& s, Bytes& out) {
    const size_t ld = int8_row_bytes(s.K);
    std::memset(out.data(), k.offset, M * ld);
    for (size_t r = 0; r < M; ++r)
      for (size_t c = 0; c < s.K; ++c)
        out.data()[r * ld + c] = static_cast<uint8_t>(ptr<int8_t>(s.q_a)[r * s.K + c] + k.offset);
  };
  Bytes a_x(M * int8_row_bytes(x.K)), a_h(M * int8_row_bytes(h.K));
  encoded(x, a_x);
  encoded(h, a_h);
  std::vector<float> tile(M * ldt);
  const Int8Rows rows{x.K, a_x.data(), int8_row_bytes(x.K), x.K ? ptr<float>(x.s_a) : nullptr,
                      h.K, a_h.data(), int8_row_bytes(h.K), h.K ? ptr<float>(h.s_a) : nullptr};
  {
    py::gil_scoped_release release;
    k.tile(M, panels, rows, packed.data(), panel_bytes, tile.data(), ldt, false);
  }
  py::array_t<float> out({py::ssize_t(M), py::ssize_t(N)});
  for (size_t r = 0; r < M; ++r)
    std::memcpy(out.mutable_data(r, 0), tile.data() + r * ldt, N * sizeof(float));
  return out;
}

}  // namespace

void register_frozen(py::module_& m) {
  py::class_<PackedWeights, Packed>(
      m, "PackedWeights",
      "One layer direction's weights prepared once for a frozen model (opaque).")
      .def_property_readonly("cell", [](const PackedWeights& w) { return w.traits.name; })
      .def_property_readonly("precision",
                             [](const PackedWeights& w) { return precision_name(w.precision); })
      .def_property_readonly("kernel_path", [](const PackedWeights& w) { return w.table.isa; })
      .def_property_readonly("nbytes",
                             [](const PackedWeights& w) { return w.packed_bytes + w.bias_bytes; })
      .def("__repr__", &PackedWeights::repr);
  m.def("pack_weights", &pack_entry, py::arg("cell"), py::arg("w_ih"), py::arg("w_hh"),
        py::arg("b_ih"), py::arg("b_hh"), py::arg("precision") = "fp32",
        py::arg("s_ih") = py::none(), py::arg("s_hh") = py::none(),
        "PackedWeights of one layer direction for the kernel path in use: w_ih (G*H, I), "
        "w_hh (G*H, H) float (precision fp32 or bf16), or their int8 codes with the float32 "
        "scales of their rows s_ih, s_hh (G*H,) (precision int8); b_ih, b_hh (G*H,).");
  m.def("frozen_forward", &frozen_forward_entry, py::arg("weights"), py::arg("x"), py::arg("h0"),
        py::arg("c0") = py::none(), py::kw_only(), py::arg("batch_sizes") = py::none(),
        py::arg("threads") = py::none(),
        "(y, [cT,] None): the inference forward of x (T, B, I) from h0 (and c0) through "
        "PackedWeights, as <cell>_forward(..., training=False).");
  py::class_<Stream>(m, "Stream",
                     "B sequences stepped one frame at a time through a stack of PackedWeights.")
      .def(py::init<const std::vector<Packed>&, size_t, py::object, py::object>(),
           py::arg("layers"), py::arg("batch_size"), py::arg("head_weight") = py::none(),
           py::arg("head_bias") = py::none())
      .def("step", &Stream::step, py::arg("x_t"), py::arg("out") = py::none(),
           "x_t (B, I) -> the last layer's h_t (B, H), or the head's logits; into out if given.")
      .def("state", &Stream::state, "(h, c or None), each (L, B, H): copies.")
      .def("set_state", &Stream::set_state, py::arg("h"), py::arg("c") = py::none())
      .def_property_readonly("batch_size", &Stream::batch_size)
      .def_property_readonly("nbytes", &Stream::nbytes);

  m.def("_int8_quantize_rows", &quantize_rows_entry, py::arg("a"),
        "Tests only: (codes int8, scales float32) of each row of a float32 (M, K), as the "
        "int8 kernels quantize their activations.");
  m.def("_int8_products", &products_entry, py::arg("q_x"), py::arg("s_x"), py::arg("q_ih"),
        py::arg("s_ih"), py::arg("q_h") = py::none(), py::arg("s_h") = py::none(),
        py::arg("q_hh") = py::none(), py::arg("s_hh") = py::none(),
        "Tests only: the int8 kernels' dequantized sums f32(q_x q_ih^T) s_x s_ih + "
        "f32(q_h q_hh^T) s_h s_hh (M, N); either segment may be None.");
}

}  // namespace fastrnn
