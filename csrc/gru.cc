// The GRU cell over the shared recurrence driver (recurrence.h), as torch.nn.GRU:
//
//   r   = sigmoid(x_t W_ir^T + b_ir + h_{t-1} W_hr^T + b_hr)
//   z   = sigmoid(x_t W_iz^T + b_iz + h_{t-1} W_hz^T + b_hz)
//   hn  = h_{t-1} W_hn^T + b_hn
//   n   = tanh(x_t W_in^T + b_in + r * hn)
//   h_t = (1 - z) * n + z * h_{t-1}
//
// r multiplies the recurrent part of n, bias included, so n's input and
// recurrent sums are kept apart: four gate panels per block of units, r and z
// reading [x_t | h_{t-1}], then n's x_t part and its h_{t-1} part (n is the
// gate apart, recurrence.h). The driver folds their biases once per call into
// one H-row per panel: b_ir + b_hr, b_iz + b_hz, b_in, b_hn. The saved
// workspace, per (t, b) row: the activated gates [r | z | n] (3H), then,
// after all T*B of those, every hn (T, B, H): kGates and kHn.
#include "kernels.h"
#include "recurrence.h"

namespace fastrnn {
namespace FASTRNN_ISA_NS {

template <class Real>
struct GruCell : CellBase<Real> {
  using typename CellBase<Real>::V;
  using typename CellBase<Real>::A;
  using CellBase<Real>::kLanes;
  using CellBase<Real>::NR;
  using CellBase<Real>::kVectors;
  using CellBase<Real>::gate_input;
  using CellBase<Real>::saved_at;
  static constexpr size_t G = cells::gru.G;
  // BPTT's da groups: [da_n (input side) | da_r, da_z, da_hn (recurrent side)].
  static constexpr GatePanel kPanels[] = {
      {0, Reads::x_and_h}, {1, Reads::x_and_h}, {2, Reads::x}, {2, Reads::h}};
  static constexpr bool kCarriesDh = true;
  static constexpr SavedGroup kGates{0, G}, kHn{G, 1};

  FASTRNN_CELL_ROW void forward_row(const ForwardArgs<Real>& p, const ForwardRow<Real>& r, IO& io) {
    const bool training = p.saved != nullptr;
    const Real* h_prev = io.in(r.h_prev);
    Real* h_out = io.out(r.y);
    Real* saved_out[4] = {};  // r, z, n, hn
    if (training) {
      for (size_t gate = 0; gate < G; ++gate)
        saved_out[gate] = io.out(saved_at(p, kGates, r.row, gate, r.u0));
      saved_out[3] = io.out(saved_at(p, kHn, r.row, 0, r.u0));
    }
    // Read again only by BPTT, after the whole forward: past the caches.
    constexpr bool stream = IO::kFull;
    // Gates side by side over the row's vectors of units (Act::activate).
    V rz[2][kVectors], n[1][kVectors], hn[kVectors];
    for (size_t k = 0; k < 2; ++k)
      for (size_t v = 0; v < kVectors; ++v) rz[k][v] = gate_input(r, k, v);
    A::activate(rz, {Fn::sigmoid, Fn::sigmoid});
    for (size_t v = 0; v < kVectors; ++v) {
      hn[v] = gate_input(r, 3, v);
      n[0][v] = gate_input(r, 2, v) + rz[0][v] * hn[v];
    }
    A::activate(n, {Fn::tanh});
    for (size_t v = 0; v < kVectors; ++v) {
      const size_t l = v * kLanes;
      const V z = rz[1][v];
      if (training) {
        store_saved(saved_out[0] + l, rz[0][v], stream);
        store_saved(saved_out[1] + l, z, stream);
        store_saved(saved_out[2] + l, n[0][v], stream);
        store_saved(saved_out[3] + l, hn[v], stream);
      }
      vstore(h_out + l, (Real(1) - z) * n[0][v] + z * vload<V>(h_prev + l));
    }
  }

  // BPTT, for t = T..1, with dh carried from step t+1 (the numbers of
  // fastrnn/_reference.py's gru_backward):
  //   dh_t  = dy_t + dh                                   (1)
  //   dn    = dh_t * (1 - z)                              (2)
  //   dz    = dh_t * (h_{t-1} - n)                        (3)
  //   da_n  = dn * (1 - n^2)         (input side of n)    (4)
  //   dhn   = da_n * r               (recurrent side)     (5)
  //   dr    = da_n * hn                                   (6)
  //   da_r  = dr r (1 - r),  da_z = dz z (1 - z)          (7)
  //   dh    = dh_t * z               (the direct path)    (8)  kept in dh0
  //   dh   += [da_r, da_z, dhn] W_hh (carried to t-1)     (9)  the driver
  // and, by the driver, step by step: (10) dW_ih, db_ih from [da_r, da_z,
  // da_n] and x_t, dx after the loop; (11) dW_hh, db_hh from [da_r, da_z, dhn].
  static void backward_begin(const BackwardArgs<Real>& p) {
    std::memset(p.dh0, 0, p.B * p.H * sizeof(Real));
  }

  FASTRNN_CELL_ROW void backward_row(const BackwardArgs<Real>& p, const BackwardRow<Real>& r,
                                     IO& io) {
    const Real* saved_in[4];  // r, z, n, hn
    for (size_t gate = 0; gate < G; ++gate)
      saved_in[gate] = io.in(saved_at(p, kGates, r.row, gate, r.u0));
    saved_in[3] = io.in(saved_at(p, kHn, r.row, 0, r.u0));
    const Real* h_prev = io.in(r.h_prev);
    const Real* dy_in = r.dy != nullptr ? io.in(r.dy) : nullptr;
    Real* carried = io.in_out(p.dh0 + r.b * p.H + r.u0);
    for (size_t l = 0; l < NR; l += kLanes) {
      V rg = vload<V>(saved_in[0] + l), z = vload<V>(saved_in[1] + l);
      V n = vload<V>(saved_in[2] + l), hn = vload<V>(saved_in[3] + l);
      V dh_t = vload<V>(r.dh + l) + vload<V>(carried + l);                          // (9), (8)
      if (dy_in != nullptr) dh_t += vload<V>(dy_in + l);                            // (1)
      V dn = dh_t * (Real(1) - z);                                                   // (2)
      V dz = dh_t * (vload<V>(h_prev + l) - n);                                      // (3)
      V da_n = dn * (Real(1) - n * n);                                               // (4)
      vstore(r.da[0] + l, da_n);
      vstore(r.da[3] + l, da_n * rg);                                                // (5) dhn
      V dr = da_n * hn;                                                              // (6)
      vstore(r.da[1] + l, dr * rg * (Real(1) - rg));                                 // (7)
      vstore(r.da[2] + l, dz * z * (Real(1) - z));
      vstore(carried + l, dh_t * z);                                                 // (8)
    }
  }
};

FASTRNN_DEFINE_CELL_KERNELS(gru, GruCell)

}  // namespace FASTRNN_ISA_NS
}  // namespace fastrnn
