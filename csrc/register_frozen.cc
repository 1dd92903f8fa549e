// Inference of frozen models in fastrnn._core: for now the int8 products of
// gemm_int8.h, reachable from Python for the tests that hold every ISA path
// to fastrnn/_quantize.py's integers.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <string>
#include <vector>

#include "checks.h"
#include "dispatch.h"
#include "gemm_int8.h"
#include "memory.h"

namespace fastrnn {
namespace {

// A byte buffer from aligned_malloc, 64-byte aligned, freed with its owner.
class Bytes {
 public:
  explicit Bytes(size_t n) : n_(n), data_(static_cast<uint8_t*>(aligned_malloc(n ? n : 1))) {}
  ~Bytes() { aligned_free(data_, n_ ? n_ : 1); }
  Bytes(const Bytes&) = delete;
  Bytes& operator=(const Bytes&) = delete;
  uint8_t* data() { return data_; }

 private:
  size_t n_;
  uint8_t* data_;
};

py::array checked_typed(py::handle obj, const char* name, const py::dtype& dt,
                        std::vector<size_t> shape) {
  return checked(obj, name, dt, shape);
}

// (codes int8 (M, K), scales float32 (M,)) of a float32 (M, K), as the kernels
// quantize x_t and h_{t-1}: codes as signed values, whatever the path stores.
py::tuple quantize_rows_entry(py::object a_obj) {
  const py::array a = checked_typed(a_obj, "a", py::dtype::of<float>(), {kAnySize, kAnySize});
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
  seg.q_a = checked_typed(q_a, ("q_" + name).c_str(), i8, {M, kAnySize});
  M = seg.q_a.shape(0);
  seg.K = seg.q_a.shape(1);
  seg.s_a = checked_typed(s_a, ("s_" + name).c_str(), f32, {M});
  seg.q_w = checked_typed(q_w, ("q_w_" + name).c_str(), i8, {N, seg.K});
  N = seg.q_w.shape(0);
  seg.s_w = checked_typed(s_w, ("s_w_" + name).c_str(), f32, {N});
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
    auto codes = [&](const Segment& s) {
      return s.K ? static_cast<const int8_t*>(s.q_w.data()) + j0 * s.K : nullptr;
    };
    auto scales = [&](const Segment& s) {
      return s.K ? static_cast<const float*>(s.s_w.data()) + j0 : nullptr;
    };
    k.pack_panel(Int8PanelSource{n, x.K, codes(x), x.K, scales(x), h.K, codes(h), h.K, scales(h)},
                 packed.data() + p * panel_bytes);
  }
  // The path's own encoding of the codes, rows padded to whole groups of 4.
  auto encoded = [&](const Segment& s, Bytes& out) {
    const size_t ld = int8_row_bytes(s.K);
    std::memset(out.data(), k.offset, M * ld);
    for (size_t r = 0; r < M; ++r)
      for (size_t c = 0; c < s.K; ++c)
        out.data()[r * ld + c] =
            static_cast<uint8_t>(static_cast<const int8_t*>(s.q_a.data())[r * s.K + c] + k.offset);
  };
  Bytes a_x(M * int8_row_bytes(x.K)), a_h(M * int8_row_bytes(h.K));
  encoded(x, a_x);
  encoded(h, a_h);
  std::vector<float> tile(M * ldt);
  const float* s_x_rows = x.K ? static_cast<const float*>(x.s_a.data()) : nullptr;
  const float* s_h_rows = h.K ? static_cast<const float*>(h.s_a.data()) : nullptr;
  {
    py::gil_scoped_release release;
    for (size_t r0 = 0; r0 < M; r0 += k.MR) {
      const size_t m = std::min(k.MR, M - r0);
      const Int8Rows rows{x.K, a_x.data() + r0 * int8_row_bytes(x.K), int8_row_bytes(x.K),
                          s_x_rows ? s_x_rows + r0 : nullptr,
                          h.K, a_h.data() + r0 * int8_row_bytes(h.K), int8_row_bytes(h.K),
                          s_h_rows ? s_h_rows + r0 : nullptr};
      k.tile(m, panels, rows, packed.data(), panel_bytes, tile.data() + r0 * ldt, ldt);
    }
  }
  py::array_t<float> out({py::ssize_t(M), py::ssize_t(N)});
  for (size_t r = 0; r < M; ++r)
    std::memcpy(out.mutable_data(r, 0), tile.data() + r * ldt, N * sizeof(float));
  return out;
}

}  // namespace

void register_frozen(py::module_& m) {
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
