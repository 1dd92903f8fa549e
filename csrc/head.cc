// The sequence classifier's head, forward and backward in one call: logits =
// h W^T + b, mean softmax cross-entropy against integer labels, and the
// gradients of that loss. Tiny next to the recurrence; it is compiled so that
// a training step does not pay for a dozen small NumPy calls between kernels.
// fastrnn/model.py computes the same with NumPy where this is not available.
#include "kernels.h"

#include <vector>

namespace fastrnn {
namespace FASTRNN_ISA_NS {

template <class Real>
static Real dot(const Real* a, const Real* b, size_t n) {
  using V = typename Simd<Real>::V;
  constexpr size_t kLanes = Simd<Real>::kLanes;
  V acc[2] = {};
  size_t k = 0;
  for (; k + 2 * kLanes <= n; k += 2 * kLanes) {
    acc[0] += vload<V>(a + k) * vload<V>(b + k);
    acc[1] += vload<V>(a + k + kLanes) * vload<V>(b + k + kLanes);
  }
  const V both = acc[0] + acc[1];
  Real sum = 0;
  for (size_t l = 0; l < kLanes; ++l) sum += both[l];
  for (; k < n; ++k) sum += a[k] * b[k];
  return sum;
}

// Per row b, with z = h_b W^T + bias and m its largest entry (NaN if any is NaN):
//   log p = (z - m) - log(sum exp(z - m)),  loss = -mean_b log p[label_b]
//   dz = (p - onehot(label_b)) / B,  dh_b = dz W,  dW += dz^T h_b,  db += dz
// Rows are summed in order: the result does not depend on threads.
template <class Real>
void classifier_head(const HeadArgs<Real>& a) {
  const size_t B = a.B, H = a.H, C = a.C;
  std::vector<Real> dz(C);
  std::fill(a.dw, a.dw + C * H, Real(0));
  std::fill(a.db, a.db + C, Real(0));
  double loss = 0;
  for (size_t b = 0; b < B; ++b) {
    const Real* h = a.h + b * H;
    for (size_t c = 0; c < C; ++c) dz[c] = a.bias[c] + dot(h, a.w + c * H, H);
    Real top = dz[0];
    for (size_t c = 1; c < C && !std::isnan(top); ++c)
      if (dz[c] > top || std::isnan(dz[c])) top = dz[c];
    Real total = 0;
    for (size_t c = 0; c < C; ++c) total += std::exp(dz[c] - top);
    const Real log_total = std::log(total);
    const size_t label = size_t(a.labels[b]);
    int64_t best = -1;
    Real best_value = 0;
    for (size_t c = 0; c < C; ++c) {
      const Real log_p = (dz[c] - top) - log_total;
      if (c == label) loss -= double(log_p);
      // argmax as NumPy's: the first largest, or the first NaN
      const bool nan = std::isnan(log_p);
      if (best < 0 || (!std::isnan(best_value) && (nan || log_p > best_value))) {
        best = int64_t(c);
        best_value = log_p;
      }
      dz[c] = (std::exp(log_p) - Real(c == label)) / Real(B);
    }
    a.predictions[b] = best;
    Real* dh = a.dh + b * H;
    std::fill(dh, dh + H, Real(0));
    for (size_t c = 0; c < C; ++c) {
      const Real* w = a.w + c * H;
      Real* dw = a.dw + c * H;
      for (size_t k = 0; k < H; ++k) {
        dh[k] += dz[c] * w[k];
        dw[k] += dz[c] * h[k];
      }
      a.db[c] += dz[c];
    }
  }
  *a.loss = loss / double(B);
}

template void classifier_head<float>(const HeadArgs<float>&);
template void classifier_head<double>(const HeadArgs<double>&);

}  // namespace FASTRNN_ISA_NS
}  // namespace fastrnn
