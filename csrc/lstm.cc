// The LSTM cell over the shared recurrence driver (recurrence.h).
//
//   a_t = x_t W_ih^T + h_{t-1} W_hh^T + b, split into gates i, f, g, o (B, H each)
//   i = sigmoid(a_i), f = sigmoid(a_f), g = tanh(a_g), o = sigmoid(a_o)
//   c_t = f * c_{t-1} + i * g
//   h_t = o * tanh(c_t)
//
// Four gate panels per block of units, each reading [x_t | h_{t-1}], so a
// thread computes i, f, g, o of its units for a row panel as one tile. The
// saved workspace, per (t, b) row: the activated gates [i | f | g | o] (4H),
// then, after all T*B of those, every c_t (T, B, H): kGates and kCellStates.
// Inference keeps only the running cell state, in cT itself. Backward carries
// dc in dc0: after step 1 it is the answer.
#include "kernels.h"
#include "recurrence.h"

namespace fastrnn {
namespace FASTRNN_ISA_NS {

template <class Real>
struct LstmCell : CellBase<Real> {
  using typename CellBase<Real>::V;
  using typename CellBase<Real>::A;
  using CellBase<Real>::kLanes;
  using CellBase<Real>::NR;
  using CellBase<Real>::kVectors;
  using CellBase<Real>::gate_input;
  using CellBase<Real>::saved_at;
  static constexpr size_t G = cells::lstm.G;
  static constexpr GatePanel kPanels[] = {
      {0, Reads::x_and_h}, {1, Reads::x_and_h}, {2, Reads::x_and_h}, {3, Reads::x_and_h}};
  static constexpr SavedGroup kGates{0, G}, kCellStates{G, 1};

  // (A stream's step updates its c in place: c0 is cT.)
  static void forward_begin(const ForwardArgs<Real>& p) {
    if (p.saved == nullptr && p.cT != p.c0) std::memcpy(p.cT, p.c0, p.B * p.H * sizeof(Real));
  }
  // Training keeps every c_t: cT is each row's at its last step.
  static void forward_end(const ForwardArgs<Real>& p) {
    if (p.saved == nullptr) return;
    for (size_t t = 0; t < p.T; ++t)
      for (size_t b = step_batch(p, t + 1); b < step_batch(p, t); ++b)
        std::memcpy(p.cT + b * p.H, saved_at(p, kCellStates, step_offset(p, t) + b, 0, 0),
                    p.H * sizeof(Real));
  }

  FASTRNN_CELL_ROW void forward_row(const ForwardArgs<Real>& p, const ForwardRow<Real>& r, IO& io) {
    const size_t state = r.b * p.H + r.u0;
    const bool training = p.saved != nullptr;
    const Real* c_prev = !training ? p.cT + state
                         : r.first ? p.c0 + state
                                   : saved_at(p, kCellStates, r.prev_row, 0, r.u0);
    const Real* c_in = io.in(c_prev);
    Real* c_out = io.out(training ? saved_at(p, kCellStates, r.row, 0, r.u0) : p.cT + state);
    Real* h_out = io.out(r.y);
    Real* gates_out[G] = {};
    if (training)
      for (size_t gate = 0; gate < G; ++gate)
        gates_out[gate] = io.out(saved_at(p, kGates, r.row, gate, r.u0));
    // Read again only by BPTT, after the whole forward: past the caches.
    constexpr bool stream = IO::kFull;
    // gate[k][v]: gate k (i, f, g, o) of the row's v-th vector of units.
    V gate[G][kVectors], tanh_c[1][kVectors];
    for (size_t k = 0; k < G; ++k)
      for (size_t v = 0; v < kVectors; ++v) gate[k][v] = gate_input(r, k, v);
    A::activate(gate, {Fn::sigmoid, Fn::sigmoid, Fn::tanh, Fn::sigmoid});
    for (size_t v = 0; v < kVectors; ++v) {
      const size_t l = v * kLanes;
      const V c = gate[1][v] * vload<V>(c_in + l) + gate[0][v] * gate[2][v];
      if (training)
        for (size_t k = 0; k < G; ++k) store_saved(gates_out[k] + l, gate[k][v], stream);
      vstore(c_out + l, c);
      tanh_c[0][v] = c;
    }
    A::activate(tanh_c, {Fn::tanh});
    for (size_t v = 0; v < kVectors; ++v)
      vstore(h_out + v * kLanes, gate[3][v] * tanh_c[0][v]);
  }

  // BPTT, for t = T..1, with dh, dc carried from step t+1:
  //   dh_t  = dy_t + dh                                   (1)
  //   do    = dh_t * tanh(c_t)                            (2)
  //   dc_t  = dc + dh_t * o * (1 - tanh(c_t)^2)           (3)
  //   di    = dc_t * g,  dg = dc_t * i                    (4)
  //   df    = dc_t * c_{t-1}                              (5)
  //   dc    = dc_t * f            (carried to t-1)        (6)
  //   da_t  = [di i(1-i), df f(1-f), dg (1-g^2), do o(1-o)]  (7)
  //   dh    = da_t W_hh           (carried to t-1)        (8)  the driver
  static void backward_begin(const BackwardArgs<Real>& p) {
    std::memcpy(p.dc0, p.dcT, p.B * p.H * sizeof(Real));
  }

  FASTRNN_CELL_ROW void backward_row(const BackwardArgs<Real>& p, const BackwardRow<Real>& r,
                                     IO& io) {
    const size_t state = r.b * p.H + r.u0;
    const Real* gates_in[G];
    for (size_t gate = 0; gate < G; ++gate)
      gates_in[gate] = io.in(saved_at(p, kGates, r.row, gate, r.u0));
    const Real* c_in = io.in(saved_at(p, kCellStates, r.row, 0, r.u0));
    const Real* c_prev_in =
        io.in(r.first ? p.c0 + state : saved_at(p, kCellStates, r.prev_row, 0, r.u0));
    const Real* dy_in = r.dy != nullptr ? io.in(r.dy) : nullptr;
    Real* dc = io.in_out(p.dc0 + state);
    V tanh_cs[1][kVectors];
    for (size_t v = 0; v < kVectors; ++v) tanh_cs[0][v] = vload<V>(c_in + v * kLanes);
    A::activate(tanh_cs, {Fn::tanh});
    for (size_t v = 0; v < kVectors; ++v) {
      const size_t l = v * kLanes;
      V i = vload<V>(gates_in[0] + l), f = vload<V>(gates_in[1] + l);
      V g = vload<V>(gates_in[2] + l), o = vload<V>(gates_in[3] + l);
      V dh_t = vload<V>(r.dh + l);
      if (dy_in != nullptr) dh_t += vload<V>(dy_in + l);                            // (1)
      V tanh_c = tanh_cs[0][v];
      V d_o = dh_t * tanh_c;                                                         // (2)
      V dc_t = vload<V>(dc + l) + dh_t * o * (Real(1) - tanh_c * tanh_c);            // (3)
      V d_i = dc_t * g, d_g = dc_t * i;                                              // (4)
      V d_f = dc_t * vload<V>(c_prev_in + l);                                        // (5)
      vstore(dc + l, dc_t * f);                                                      // (6)
      vstore(r.da[0] + l, d_i * i * (Real(1) - i));                                  // (7)
      vstore(r.da[1] + l, d_f * f * (Real(1) - f));
      vstore(r.da[2] + l, d_g * (Real(1) - g * g));
      vstore(r.da[3] + l, d_o * o * (Real(1) - o));
    }
  }
};

FASTRNN_DEFINE_CELL_KERNELS(lstm, LstmCell)

}  // namespace FASTRNN_ISA_NS
}  // namespace fastrnn
