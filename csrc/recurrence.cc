// What the recurrence driver does once per call, after BPTT's time loop
// (recurrence.h): the weight and bias gradients out of the padded unit
// order, and the input gradient as one GEMM.
#include "recurrence.h"

namespace fastrnn {
namespace FASTRNN_ISA_NS {

template <class Real>
void bptt_parameter_grads(const BackwardArgs<Real>& p, const Real* da, size_t slabs, size_t G,
                          size_t E, const Real* dw_transposed, const Real* db_hh_padded,
                          const Real* db_ih_padded) {
  constexpr size_t NR = Tile<Real>::NR;
  const size_t rows = total_rows(p), I = p.I, H = p.H, HB = ceil_div(H, NR), Q = G * HB;

  // Unpad and transpose [dW_ih | dW_hh]^T (I + H rows, Q*NR columns) into
  // dW_ih (G*H, I) and dW_hh (G*H, H); the biases from their padded columns
  // (db_ih is db_hh for the gates whose two sides share one gradient).
  auto finish = [&](int tid, int n) {
    size_t q0, q1;
    split_range(Q, tid, n, q0, q1);
    for (size_t q = q0; q < q1; ++q) {
      const auto [gate, u0, units] = unit_block<Real>(q, H);
      const Real* db_ih_source = gate + E < G ? db_hh_padded : db_ih_padded;
      for (size_t c = 0; c < units; ++c) {
        const size_t j = gate * H + u0 + c;
        p.db_hh[j] = db_hh_padded[q * NR + c];
        p.db_ih[j] = db_ih_source[q * NR + c];
        const Real* column = dw_transposed + q * NR + c;
        for (size_t i = 0; i < I; ++i) p.dw_ih[j * I + i] = column[i * Q * NR];
        for (size_t i = 0; i < H; ++i) p.dw_hh[j * H + i] = column[(I + i) * Q * NR];
      }
    }
  };
  run_parallel(static_cast<int>(min_size(size_t(p.threads), Q)), finish);

  if (p.dx.data != nullptr && I > 0) {  // (with I = 0, dx is empty)
    // dx = da_ih W_ih over the W_ih side's groups [0, G) of da, whose gates
    // run G - E .. G - 1, then 0 .. G - E - 1: W_ih's rows padded in that order.
    Buffer<Real> w_pad(Q * NR * I);
    for (size_t q = 0; q < Q; ++q) {
      const auto [position, u0, units] = unit_block<Real>(q, H);
      const size_t gate = position < E ? G - E + position : position - E;
      std::memcpy(w_pad.data() + q * NR * I, p.w_ih + (gate * H + u0) * I,
                  units * I * sizeof(Real));
      std::memset(w_pad.data() + (q * NR + units) * I, 0, (NR - units) * I * sizeof(Real));
    }
    // dx's rows from the first in memory: step T - 1's of a reverse run.
    Real* dx = p.dx.step < 0 ? p.dx.data + ptrdiff_t(p.T - 1) * p.dx.step : p.dx.data;
    Gemm<Real> inputs_grad{rows, I, Q * NR, da, 0, 0, w_pad.data(), I, 1, dx, I};
    inputs_grad.a_slabs = slabs;
    gemm(inputs_grad, p.threads);
  }
}

template void bptt_parameter_grads<float>(const BackwardArgs<float>&, const float*, size_t,
                                          size_t, size_t, const float*, const float*,
                                          const float*);
template void bptt_parameter_grads<double>(const BackwardArgs<double>&, const double*, size_t,
                                           size_t, size_t, const double*, const double*,
                                           const double*);

}  // namespace FASTRNN_ISA_NS
}  // namespace fastrnn
