// The Elman RNN cell over the shared recurrence driver (recurrence.h), with
// tanh (rnn_*) or ReLU (rnn_relu_*) as torch.nn.RNN's nonlinearity:
//
//   a_t = x_t W_ih^T + h_{t-1} W_hh^T + b        x_t (B, I), h_t (B, H)
//   h_t = tanh(a_t)  or  max(a_t, 0)
//
// One gate panel per block of units, reading [x_t | h_{t-1}]. The saved
// workspace is only the driver's copy of x: BPTT reads h_t from y.
#include "kernels.h"
#include "recurrence.h"

namespace fastrnn {
namespace FASTRNN_ISA_NS {

enum class Nonlinearity { tanh, relu };

template <class Real, Nonlinearity kAct>
struct RnnCell : CellBase<Real> {
  using typename CellBase<Real>::V;
  using CellBase<Real>::kLanes;
  using CellBase<Real>::NR;
  using CellBase<Real>::kVectors;
  using CellBase<Real>::gate_input;
  static constexpr size_t G = cells::rnn.G;
  static constexpr GatePanel kPanels[] = {{0, Reads::x_and_h}};
  static constexpr bool kRowsApart = true;  // see CellBase

  // y (T, B, H) <- h_t.
  FASTRNN_CELL_ROW void forward_row(const ForwardArgs<Real>&, const ForwardRow<Real>& r, IO& io) {
    Real* h = io.out(r.y);
    V a[1][kVectors];
    for (size_t v = 0; v < kVectors; ++v) a[0][v] = gate_input(r, 0, v);
    if constexpr (kAct == Nonlinearity::tanh) Act<Real>::activate(a, {Fn::tanh});
    for (size_t v = 0; v < kVectors; ++v) {
      // relu keeps NaN, as torch's does: a < 0 is false for it.
      if constexpr (kAct == Nonlinearity::relu) a[0][v] = a[0][v] < Real(0) ? V{} : a[0][v];
      vstore(h + v * kLanes, a[0][v]);
    }
  }

  // BPTT, for t = T..1, with dh carried from step t+1:
  //   dh_t = dy_t + dh                                   (1)
  //   da_t = dh_t * (1 - h_t^2)   (tanh)                 (2)
  //   da_t = dh_t * [h_t > 0]     (relu)
  //   dh   = da_t W_hh           (carried to t-1)        (3)  the driver

  FASTRNN_CELL_ROW void backward_row(const BackwardArgs<Real>&, const BackwardRow<Real>& r,
                                     IO& io) {
    const Real* h_in = io.in(r.y);
    const Real* dy_in = r.dy != nullptr ? io.in(r.dy) : nullptr;
    for (size_t l = 0; l < NR; l += kLanes) {
      V dh = vload<V>(r.dh + l);
      if (dy_in != nullptr) dh += vload<V>(dy_in + l);                      // (1)
      V h = vload<V>(h_in + l);
      if constexpr (kAct == Nonlinearity::tanh)
        vstore(r.da[0] + l, dh * (Real(1) - h * h));                        // (2)
      else
        vstore(r.da[0] + l, h > Real(0) ? dh : V{});
    }
  }
};

template <class Real>
using TanhRnnCell = RnnCell<Real, Nonlinearity::tanh>;
template <class Real>
using ReluRnnCell = RnnCell<Real, Nonlinearity::relu>;

FASTRNN_DEFINE_CELL_KERNELS(rnn, TanhRnnCell)
FASTRNN_DEFINE_CELL_KERNELS(rnn_relu, ReluRnnCell)

}  // namespace FASTRNN_ISA_NS
}  // namespace fastrnn
