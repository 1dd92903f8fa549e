// The training helpers of fastrnn._core: Adam's update of one parameter and
// the classifier head, each one compiled pass where NumPy would make many.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <string>

#include "checks.h"
#include "common.h"
#include "dispatch.h"

namespace fastrnn {
namespace {

// ------------------------------------------------------------------- Adam

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
  if (!dt.equal(py::dtype::of<float>()) && !dt.equal(py::dtype::of<double>())) return false;
  if (!plain_array(param, dt, true) || !plain_array(grad, dt, false) ||
      !plain_array(exp_avg, dt, true) || !plain_array(exp_avg_sq, dt, true))
    return false;
  auto p = py::reinterpret_borrow<py::array>(param), g = py::reinterpret_borrow<py::array>(grad);
  auto m = py::reinterpret_borrow<py::array>(exp_avg);
  auto v = py::reinterpret_borrow<py::array>(exp_avg_sq);
  const py::ssize_t n = p.size();
  if (g.size() != n || m.size() != n || v.size() != n) return false;
  if (may_overlap(g, p) || may_overlap(g, m) || may_overlap(g, v) || may_overlap(p, m) ||
      may_overlap(p, v) || may_overlap(m, v))
    return false;
  with_real_type(dt, [&](auto zero) {
    using Real = decltype(zero);
    const AdamArgs<Real> args{out_ptr<Real>(p), ptr<Real>(g), out_ptr<Real>(m), out_ptr<Real>(v),
                              size_t(n), Real(1.0 - beta1), Real(beta2), Real(1.0 - beta2),
                              Real(bias_correction2_sqrt), Real(eps), Real(-step_size)};
    const KernelTable& k = kernels();
    run_kernel(table_entry<Real>(k.adam_update_f32, k.adam_update_f64), args);
  });
  return true;
}

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
  py::array w = checked(w_obj, "weight", dt, {kAnySize, H});
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
  with_real_type(dt, [&](auto zero) {
    using Real = decltype(zero);
    const HeadArgs<Real> args{B, H, C, ptr<Real>(h), ptr<Real>(w), ptr<Real>(bias), label,
                              &loss, static_cast<int64_t*>(predictions.mutable_data()),
                              out_ptr<Real>(dh), out_ptr<Real>(dw), out_ptr<Real>(db)};
    const KernelTable& k = kernels();
    run_kernel(table_entry<Real>(k.classifier_head_f32, k.classifier_head_f64), args);
  });
  return py::make_tuple(loss, predictions, dh, dw, db);
}

}  // namespace

void register_training(py::module_& m) {
  m.def("adam_update", &adam_update_entry, py::arg("param"), py::arg("grad"),
        py::arg("exp_avg"), py::arg("exp_avg_sq"), py::arg("beta1"), py::arg("beta2"),
        py::arg("step_size"), py::arg("bias_correction2_sqrt"), py::arg("eps"),
        "Adam's update of one parameter in place, in one pass; False (nothing done) when the "
        "arrays do not allow it (see fastrnn.optim.Adam).");
  m.def("classifier_head", &classifier_head_entry, py::arg("h"), py::arg("weight"),
        py::arg("bias"), py::arg("labels"),
        "Linear head + mean softmax cross-entropy and its gradients in one call: "
        "(loss, predictions, dh, dweight, dbias).");
}

}  // namespace fastrnn
