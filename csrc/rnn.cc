// The tanh RNN cell: rnn_forward, then rnn_backward.
//
//   a_t = x_t W_ih^T + h_{t-1} W_hh^T + b        x_t (B, I), h_t (B, H)
//   h_t = tanh(a_t)
//
// Threads split the hidden units into blocks of NR; each thread packs its
// slice of W_hh once per call and keeps it cache-resident for every step.
// One barrier per step: h_t (forward) or da_t (backward) of all units must be
// complete before the next step's product reads it.
#include "gemm.h"
#include "kernels.h"

namespace fastrnn {
namespace FASTRNN_ISA_NS {

// x (T, B, I), h0 (B, H), w_ih (H, I), w_hh (H, H), b (H,) -> y (T, B, H).
template <class Real>
void rnn_forward(const ForwardArgs<Real>& p) {
  using V = typename Simd<Real>::V;
  constexpr size_t L = Tile<Real>::L, MR = Tile<Real>::MR, NR = Tile<Real>::NR;
  const size_t T = p.T, B = p.B, I = p.I, H = p.H;

  // The input projection of every step is one GEMM, written straight into y;
  // the loop then adds the recurrent part and activates in place.
  gemm(Gemm<Real>{T * B, H, I, p.x, I, 1, p.w_ih, 1, I, p.y, H, false, p.b}, p.threads);

  const size_t hidden_blocks = ceil_div(H, NR);
  const size_t packed_state = ceil_div(B, MR) * MR * H;
  Buffer<Real> states(2 * packed_state);  // h_{t-1} and h_t, packed as A panels
  pack_rows(B, H, p.h0, states.data());
  const int nt = step_threads(p.threads, B, H, 1, hidden_blocks);
  reserve_scratch(nt, kSlotRecurrent, ceil_div(hidden_blocks, nt) * H * NR * sizeof(Real));
  Real* packed = states.data();

  auto task = [&](int tid, int n) {
    size_t hb0, hb1;
    split_range(hidden_blocks, tid, n, hb0, hb1);
    Real* w = static_cast<Real*>(scratch(tid, kSlotRecurrent));
    for (size_t hb = hb0; hb < hb1; ++hb)  // B (k, j) = w_hh[j*H + k]
      pack_b_panel(min_size(NR, H - hb * NR), H, p.w_hh + hb * NR * H, 1, H,
                   w + (hb - hb0) * H * NR);
    alignas(64) Real tile[MR * NR];
    alignas(64) Real a[NR];
    for (size_t t = 0; t < T; ++t) {
      const Real* h_prev = packed + (t & 1) * packed_state;
      Real* h_next = packed + ((t + 1) & 1) * packed_state;
      Real* y_t = p.y + t * B * H;
      for (size_t hb = hb0; hb < hb1; ++hb) {
        const size_t u0 = hb * NR, nu = min_size(NR, H - u0);
        for (size_t r0 = 0; r0 < B; r0 += MR) {
          const size_t m = min_size(MR, B - r0);
          compute_tile(m, 1, H, h_prev + r0 * H, w + (hb - hb0) * H * NR, H * NR, tile);
          for (size_t r = 0; r < m; ++r) {
            Real* y_row = y_t + (r0 + r) * H + u0;
            for (size_t c = 0; c < NR; ++c) a[c] = c < nu ? tile[r * NR + c] + y_row[c] : Real(0);
            for (size_t l = 0; l < NR; l += L) vstore(a + l, Act<Real>::tanh(vload<V>(a + l)));
            for (size_t c = 0; c < nu; ++c) {
              y_row[c] = a[c];
              h_next[r0 * H + (u0 + c) * MR + r] = a[c];
            }
          }
        }
      }
      parallel_barrier();
    }
  };
  run_parallel(nt, task);
}

// BPTT, for t = T..1, with dh carried from step t+1:
//   dh_t = dy_t + dh                                   (1)
//   da_t = dh_t * (1 - h_t^2)                          (2)
//   dh   = da_t W_hh           (carried to t-1)        (3)
// after the loop, one GEMM each:
//   dW_ih = sum_t da_t^T x_t,  dW_hh = sum_t da_t^T h_{t-1},  db = sum_t da_t,
//   dx_t = da_t W_ih
template <class Real>
void rnn_backward(const BackwardArgs<Real>& p) {
  constexpr size_t MR = Tile<Real>::MR, NR = Tile<Real>::NR;
  const size_t T = p.T, B = p.B, I = p.I, H = p.H;

  Buffer<Real> da_all(T * B * H);
  Real* da = da_all.data();
  const size_t hidden_blocks = ceil_div(H, NR);
  const size_t packed_grad = ceil_div(B, MR) * MR * H;
  Buffer<Real> grads(2 * packed_grad);  // da_{t+1} and da_t, packed as A panels
  Real* packed = grads.data();
  const int nt = step_threads(p.threads, B, H, 1, hidden_blocks);
  reserve_scratch(nt, kSlotRecurrent, ceil_div(hidden_blocks, nt) * H * NR * sizeof(Real));

  auto task = [&](int tid, int n) {
    size_t hb0, hb1;
    split_range(hidden_blocks, tid, n, hb0, hb1);
    Real* w = static_cast<Real*>(scratch(tid, kSlotRecurrent));
    for (size_t hb = hb0; hb < hb1; ++hb)  // B (k, u) = w_hh[k*H + u]
      pack_b_panel(min_size(NR, H - hb * NR), H, p.w_hh + hb * NR, H, 1, w + (hb - hb0) * H * NR);
    alignas(64) Real tile[MR * NR];
    for (size_t t = T; t-- > 0;) {
      const Real* da_next = packed + ((t + 1) & 1) * packed_grad;
      Real* da_packed = packed + (t & 1) * packed_grad;
      for (size_t hb = hb0; hb < hb1; ++hb) {
        const size_t u0 = hb * NR, nu = min_size(NR, H - u0);
        for (size_t r0 = 0; r0 < B; r0 += MR) {
          const size_t m = min_size(MR, B - r0);
          if (t + 1 < T) {
            compute_tile(m, 1, H, da_next + r0 * H, w + (hb - hb0) * H * NR, H * NR, tile);
          } else {
            for (size_t r = 0; r < m; ++r)
              for (size_t c = 0; c < nu; ++c) tile[r * NR + c] = p.dhT[(r0 + r) * H + u0 + c];
          }
          for (size_t r = 0; r < m; ++r) {
            const size_t row = (t * B + r0 + r) * H + u0;
            for (size_t c = 0; c < nu; ++c) {
              Real dh = tile[r * NR + c] + (p.dy != nullptr ? p.dy[row + c] : Real(0));  // (1)
              Real h = p.y[row + c];
              Real d = dh * (Real(1) - h * h);                                            // (2)
              da[row + c] = d;
              da_packed[r0 * H + (u0 + c) * MR + r] = d;
            }
          }
        }
      }
      parallel_barrier();
    }
    for (size_t hb = hb0; hb < hb1; ++hb) {  // (3) for t = 1: dh0 = da_1 W_hh
      const size_t u0 = hb * NR, nu = min_size(NR, H - u0);
      for (size_t r0 = 0; r0 < B; r0 += MR) {
        const size_t m = min_size(MR, B - r0);
        compute_tile(m, 1, H, packed + r0 * H, w + (hb - hb0) * H * NR, H * NR, tile);
        for (size_t r = 0; r < m; ++r)
          for (size_t c = 0; c < nu; ++c) p.dh0[(r0 + r) * H + u0 + c] = tile[r * NR + c];
      }
    }
  };
  run_parallel(nt, task);

  const size_t TB = T * B;
  gemm(Gemm<Real>{H, I, TB, da, 1, H, p.x, I, 1, p.dw_ih, I, false, nullptr}, p.threads);
  gemm(Gemm<Real>{H, H, B, da, 1, H, p.h0, H, 1, p.dw_hh, H, false, nullptr}, p.threads);
  gemm(Gemm<Real>{H, H, TB - B, da + B * H, 1, H, p.y, H, 1, p.dw_hh, H, true, nullptr},
       p.threads);
  column_sums(TB, H, da, H, p.db, p.threads);
  if (p.dx != nullptr)
    gemm(Gemm<Real>{TB, I, H, da, H, 1, p.w_ih, I, 1, p.dx, I, false, nullptr}, p.threads);
}

template void rnn_forward<float>(const ForwardArgs<float>&);
template void rnn_forward<double>(const ForwardArgs<double>&);
template void rnn_backward<float>(const BackwardArgs<float>&);
template void rnn_backward<double>(const BackwardArgs<double>&);

}  // namespace FASTRNN_ISA_NS
}  // namespace fastrnn
