// The tanh RNN cell: rnn_forward, then rnn_backward.
//
//   a_t = x_t W_ih^T + h_{t-1} W_hh^T + b        x_t (B, I), h_t (B, H)
//   h_t = tanh(a_t)
//
// Threads split the hidden units into blocks of NR; each thread packs its
// slice of the weights once per call ([W_ih | W_hh] forward, W_hh backward)
// and keeps it cache-resident for every step, while x_t, h_{t-1} and da_{t+1}
// are read where they lie. One barrier per step: h_t (forward) or da_t
// (backward) of all units must be complete before the next step's product
// reads it. Backward adds each step's share of dW_ih, dW_hh and db as it
// goes, and leaves dx to one product after the loop. The saved workspace is a
// copy of x; backward reads y besides.
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
  const int nt = step_threads(p.threads, B, K, H, hidden_blocks);
  reserve_scratch(nt, kSlotRecurrent, ceil_div(hidden_blocks, nt) * K * NR * sizeof(Real));

  auto task = [&](int tid, int n) {
    save_inputs(p, tid, n);
    size_t hb0, hb1;
    split_range(hidden_blocks, tid, n, hb0, hb1);
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
    for (size_t t = 0; t < T; ++t) {
      const Real* x_t = p.x + t * p.x_step;
      const Real* h_prev = t == 0 ? p.h0 : p.y + (t - 1) * B * H;
      for (size_t hb = hb0; hb < hb1; ++hb) {
        const size_t u0 = hb * NR, nu = min_size(NR, H - u0);
        const Real* bias = p.b + u0;
        if (nu < NR) {
          for (size_t c = 0; c < NR; ++c) edge_bias[c] = c < nu ? p.b[u0 + c] : Real(0);
          bias = edge_bias;
        }
        for (size_t r0 = 0; r0 < B; r0 += MR) {
          const size_t m = min_size(MR, B - r0);
          rows_tile(m, 1, TileA<Real>{I, x_t + r0 * p.x_row, p.x_row, H, h_prev + r0 * H, H},
                    w + (hb - hb0) * K * NR, K * NR, tile);
          for (size_t r = 0; r < m; ++r) {
            // A full block is written straight into y; a partial one is staged.
            Real* y_row = p.y + (t * B + r0 + r) * H + u0;
            Real* h_out = nu == NR ? y_row : h_new;
            for (size_t l = 0; l < NR; l += L)
              vstore(h_out + l, Act<Real>::tanh(vload<V>(tile + r * NR + l) + vload<V>(bias + l)));
            if (nu < NR) std::memcpy(y_row, h_new, nu * sizeof(Real));
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
// da is kept in unit panels (gemm.h). At each step, for a thread's units:
//   [dW_ih | dW_hh] += da_t^T [x_t | h_{t-1}],  db += sum over rows of da_t  (4)
// and after the loop, when wanted, dx = da W_ih in one GEMM.
template <class Real>
void rnn_backward(const BackwardArgs<Real>& p) {
  using V = typename Simd<Real>::V;
  constexpr size_t L = Tile<Real>::L, MR = Tile<Real>::MR, NR = Tile<Real>::NR;
  const size_t T = p.T, B = p.B, I = p.I, H = p.H;

  const size_t hidden_blocks = ceil_div(H, NR);
  // da of every step is kept only for dx; otherwise steps t and t + 1 take turns.
  const size_t kept = p.dx != nullptr ? T : 2, slabs = kept * B * NR;
  auto step_rows = [&](size_t t) { return (t % kept) * B; };
  Buffer<Real> da_panels(hidden_blocks * slabs);
  Real* da = da_panels.data();
  // [dW_ih | dW_hh]^T and db in the padded unit order, summed step by step.
  Buffer<Real> dw_transposed((I + H) * hidden_blocks * NR), db_padded(hidden_blocks * NR);
  const int nt = step_threads(p.threads, B, H, H, hidden_blocks);
  const size_t panel = hidden_blocks * NR * NR;  // one block's packed W_hh columns
  reserve_scratch(nt, kSlotRecurrent, ceil_div(hidden_blocks, nt) * panel * sizeof(Real));
  reserve_scratch(nt, kSlotPackA, step_inputs_size<Real>(B, I, H) * sizeof(Real));

  auto task = [&](int tid, int n) {
    size_t hb0, hb1;
    split_range(hidden_blocks, tid, n, hb0, hb1);
    Real* w = static_cast<Real*>(scratch(tid, kSlotRecurrent));
    Real* inputs = static_cast<Real*>(scratch(tid, kSlotPackA));
    for (size_t hb = hb0; hb < hb1; ++hb)  // B (k, u) = w_hh[k, u], k in unit-panel order
      pack_panel_weights(1, H, p.w_hh, H, hb * NR, min_size(NR, H - hb * NR),
                         w + (hb - hb0) * panel);
    alignas(64) Real tile[MR * NR];
    alignas(64) Real edge[2][NR];  // staging for a partial block: h, dy
    for (size_t t = T; t-- > 0;) {
      for (size_t hb = hb0; hb < hb1; ++hb) {
        const size_t u0 = hb * NR, nu = min_size(NR, H - u0);
        for (size_t r0 = 0; r0 < B; r0 += MR) {
          const size_t m = min_size(MR, B - r0);
          if (t + 1 < T) {
            panels_tile(m, hidden_blocks, da + (step_rows(t + 1) + r0) * NR, slabs,
                        w + (hb - hb0) * panel, tile);
          } else {
            for (size_t r = 0; r < m; ++r) stage(tile + r * NR, p.dhT + (r0 + r) * H + u0, nu);
          }
          for (size_t r = 0; r < m; ++r) {
            const size_t row = (t * B + r0 + r) * H + u0;
            const Real* h_in = p.y + row;
            const Real* dy_in = p.dy != nullptr ? p.dy + row : nullptr;
            // Whole vectors into the unit panel; a partial block is staged
            // zero-padded, so the padding lanes of da come out exactly zero.
            Real* da_out = da + hb * slabs + (step_rows(t) + r0 + r) * NR;
            if (nu < NR) {
              stage(edge[0], h_in, nu);
              h_in = edge[0];
              if (dy_in != nullptr) {
                stage(edge[1], dy_in, nu);
                dy_in = edge[1];
              }
            }
            for (size_t l = 0; l < NR; l += L) {
              V dh = vload<V>(tile + r * NR + l);
              if (dy_in != nullptr) dh += vload<V>(dy_in + l);                 // (1)
              V h = vload<V>(h_in + l);
              vstore(da_out + l, dh * (Real(1) - h * h));                        // (2)
            }
          }
        }
      }
      // This thread's units of da_t are complete: their share of the weight
      // gradients now, while they are in cache: (4).
      pack_step_inputs(B, I, H, p.x_saved + t * B * I, t == 0 ? p.h0 : p.y + (t - 1) * B * H,
                       inputs);
      step_weight_grads(B, I, H, inputs, da + step_rows(t) * NR, slabs, hb0, hb1,
                        dw_transposed.data(), hidden_blocks * NR, db_padded.data(), t + 1 < T);
      parallel_barrier();
    }
    initial_state_grad(B, H, hidden_blocks, da, slabs, w, hb0, hb1, p.dh0);  // (3) for t = 1
  };
  run_parallel(nt, task);

  bptt_parameter_grads(p, da, slabs, 1, dw_transposed.data(), db_padded.data());
}

template void rnn_forward<float>(const ForwardArgs<float>&);
template void rnn_forward<double>(const ForwardArgs<double>&);
template void rnn_backward<float>(const BackwardArgs<float>&);
template void rnn_backward<double>(const BackwardArgs<double>&);

}  // namespace FASTRNN_ISA_NS
}  // namespace fastrnn
