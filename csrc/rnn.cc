// The tanh RNN cell: rnn_forward, then rnn_backward.
//
//   a_t = x_t W_ih^T + h_{t-1} W_hh^T + b        x_t (B, I), h_t (B, H)
//   h_t = tanh(a_t)
//
// Threads split the hidden units into blocks of NR; each thread packs its
// slice of the weights once per call ([W_ih | W_hh] forward, W_hh backward)
// and keeps it cache-resident for every step. One barrier per step: h_t
// (forward) or da_t (backward) of all units must be complete before the next
// step's product reads it. Backward leaves dW_ih, dW_hh, db and dx to large
// GEMMs after the loop.
#include "gemm.h"
#include "kernels.h"

namespace fastrnn {
namespace FASTRNN_ISA_NS {

// x (T, B, I), h0 (B, H), w_ih (H, I), w_hh (H, H), b (H,) -> y (T, B, H).
template <class Real>
void rnn_forward(const ForwardArgs<Real>& p) {
  using V = typename Simd<Real>::V;
  constexpr size_t L = Tile<Real>::L, MR = Tile<Real>::MR, NR = Tile<Real>::NR;
  const size_t T = p.T, B = p.B, I = p.I, H = p.H, K = I + H;

  // Each step multiplies [x_t | h_{t-1}] by [W_ih | W_hh]^T in one tile pass:
  // the input projection never makes a round trip through memory.
  const size_t hidden_blocks = ceil_div(H, NR);
  const size_t row_panels = ceil_div(B, MR);
  const size_t packed_x_step = row_panels * MR * I;
  const size_t packed_state = row_panels * MR * H;
  Buffer<Real> inputs(T * packed_x_step + 1);
  Buffer<Real> states(2 * packed_state);  // h_{t-1} and h_t, packed as A panels
  pack_rows(B, H, p.h0, states.data());
  const int nt = step_threads(p.threads, B, K, H, hidden_blocks);
  reserve_scratch(nt, kSlotRecurrent, ceil_div(hidden_blocks, nt) * K * NR * sizeof(Real));
  Real* xpack = inputs.data();
  Real* packed = states.data();

  auto task = [&](int tid, int n) {
    size_t hb0, hb1, t0, t1;
    split_range(hidden_blocks, tid, n, hb0, hb1);
    split_range(T, tid, n, t0, t1);
    for (size_t t = t0; t < t1; ++t) pack_rows(B, I, p.x + t * B * I, xpack + t * packed_x_step);
    Real* w = static_cast<Real*>(scratch(tid, kSlotRecurrent));
    for (size_t hb = hb0; hb < hb1; ++hb) {  // B (k, j) = [w_ih | w_hh][j, k]
      const size_t nu = min_size(NR, H - hb * NR);
      Real* panel = w + (hb - hb0) * K * NR;
      pack_b_panel(nu, I, p.w_ih + hb * NR * I, 1, I, panel);
      pack_b_panel(nu, H, p.w_hh + hb * NR * H, 1, H, panel + I * NR);
    }
    alignas(64) Real tile[MR * NR];
    alignas(64) Real h_new[NR];
    alignas(64) Real edge_bias[NR];
    parallel_barrier();  // every x_t packed
    for (size_t t = 0; t < T; ++t) {
      const Real* h_prev = packed + (t & 1) * packed_state;
      Real* h_next = packed + ((t + 1) & 1) * packed_state;
      for (size_t hb = hb0; hb < hb1; ++hb) {
        const size_t u0 = hb * NR, nu = min_size(NR, H - u0);
        const Real* bias = p.b + u0;
        if (nu < NR) {
          for (size_t c = 0; c < NR; ++c) edge_bias[c] = c < nu ? p.b[u0 + c] : Real(0);
          bias = edge_bias;
        }
        for (size_t r0 = 0; r0 < B; r0 += MR) {
          const size_t m = min_size(MR, B - r0);
          compute_tile(m, 1, I, xpack + t * packed_x_step + r0 * I, H, h_prev + r0 * H,
                       w + (hb - hb0) * K * NR, K * NR, tile);
          for (size_t r = 0; r < m; ++r) {
            for (size_t l = 0; l < NR; l += L)
              vstore(h_new + l, Act<Real>::tanh(vload<V>(tile + r * NR + l) + vload<V>(bias + l)));
            std::memcpy(p.y + (t * B + r0 + r) * H + u0, h_new, nu * sizeof(Real));
            Real* h_packed = h_next + r0 * H + u0 * MR + r;
            for (size_t c = 0; c < nu; ++c) h_packed[c * MR] = h_new[c];
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
  const int nt = step_threads(p.threads, B, H, H, hidden_blocks);
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

  bptt_parameter_grads(p, da, H);  // (after the loop) weight, bias, input grads
}

template void rnn_forward<float>(const ForwardArgs<float>&);
template void rnn_forward<double>(const ForwardArgs<double>&);
template void rnn_backward<float>(const BackwardArgs<float>&);
template void rnn_backward<double>(const BackwardArgs<double>&);

}  // namespace FASTRNN_ISA_NS
}  // namespace fastrnn
