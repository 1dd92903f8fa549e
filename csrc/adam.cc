// Adam's update of one parameter array in one pass over memory (the optimizer
// itself is fastrnn/optim.py). Compiled without FMA contraction (CMakeLists):
// every operation rounds exactly as the same sequence of NumPy ufuncs does,
// so whether this or NumPy runs never changes a result.
#include "kernels.h"

#include <cmath>

namespace fastrnn {
namespace FASTRNN_ISA_NS {

// For every i, in this order (as fastrnn/optim.py spells it out):
//   m = m + (g - m) * (1 - beta1)
//   v = v * beta2 + ((1 - beta2) * g) * g
//   p = p + (m / (sqrt(v) / bias_correction2_sqrt + eps)) * -step_size
template <class Real>
void adam_update(const AdamArgs<Real>& a) {
  Real* __restrict p = a.p;
  const Real* __restrict g = a.g;
  Real* __restrict m = a.m;
  Real* __restrict v = a.v;
  for (size_t i = 0; i < a.n; ++i) {
    const Real grad = g[i];
    const Real m_new = m[i] + (grad - m[i]) * a.one_minus_beta1;
    const Real v_new = v[i] * a.beta2 + (a.one_minus_beta2 * grad) * grad;
    const Real denominator = std::sqrt(v_new) / a.bias_correction2_sqrt + a.eps;
    m[i] = m_new;
    v[i] = v_new;
    p[i] = p[i] + (m_new / denominator) * a.minus_step_size;
  }
}

template void adam_update<float>(const AdamArgs<float>&);
template void adam_update<double>(const AdamArgs<double>&);

}  // namespace FASTRNN_ISA_NS
}  // namespace fastrnn
