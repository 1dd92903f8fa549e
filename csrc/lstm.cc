// The LSTM cell: lstm_forward, then lstm_backward.
//
//   a_t = x_t W_ih^T + h_{t-1} W_hh^T + b, split into gates i, f, g, o (B, H each)
//   i = sigmoid(a_i), f = sigmoid(a_f), g = tanh(a_g), o = sigmoid(a_o)
//   c_t = f * c_{t-1} + i * g
//   h_t = o * tanh(c_t)
// The saved workspace holds the activated gates (T, B, 4H), every c_t (T, B, H)
// and a copy of x, which BPTT reads instead of the caller's array.
//
// Threads split the hidden units into blocks of NR. Forward packs
// [W_ih | W_hh] so that one block's four gate panels lie together: a thread
// computes i, f, g, o of its units for MR rows as one tile, reading x_t and
// h_{t-1} rows in place (input projection included), and applies the cell
// while the tile is cache-hot, so each unit's state never leaves its thread.
// One barrier per step. Backward keeps only dGates_t (as unit panels, see
// gemm.h) and the running dc in the loop, and each thread adds its units'
// share of the weight and bias gradients at every step, while dGates_t is
// still in its cache; the input gradient is one large product after the loop.
#include "gemm.h"
#include "kernels.h"


namespace fastrnn {
namespace FASTRNN_ISA_NS {

constexpr size_t G = 4;

// x (T, B, I), h0, c0 (B, H), w_ih (4H, I), w_hh (4H, H), b (4H,)
//   -> y (T, B, H), cT (B, H); when training also gates (T, B, 4H), c_all (T, B, H).
template <class Real>
void lstm_forward(const ForwardArgs<Real>& p) {
  using V = typename Simd<Real>::V;
  using A = Act<Real>;
  constexpr size_t L = Tile<Real>::L, MR = Tile<Real>::MR, NR = Tile<Real>::NR;
  const size_t T = p.T, B = p.B, I = p.I, H = p.H, GH = G * H, K = I + H;
  const bool training = p.gates != nullptr;

  // Inference keeps only the running cell state, in cT itself.
  if (!training) std::memcpy(p.cT, p.c0, B * H * sizeof(Real));

  // Each step multiplies [x_t | h_{t-1}] by [W_ih | W_hh]^T in one tile pass:
  // the input projection never makes a round trip through memory.
  const size_t hidden_blocks = ceil_div(H, NR);
  const int nt = step_threads(p.threads, B, K, G * H, hidden_blocks);
  reserve_scratch(nt, kSlotRecurrent, ceil_div(hidden_blocks, nt) * G * K * NR * sizeof(Real));
  // The step's gate sums for every row of one hidden block, (B, G*NR).
  reserve_scratch(nt, kSlotTiles, ceil_div(B, MR) * MR * G * NR * sizeof(Real));
  // A long K (I + H) goes in blocks, so that one gate's block of B panel stays
  // in L1 while every row panel streams past it; with few rows the gates stay
  // together instead (more independent sums per microkernel call).
  const size_t k_blocks = ceil_div(K, kPanelBytesL1 / (NR * sizeof(Real)));
  const size_t kc = ceil_div(K, k_blocks);
  const bool gate_outer = k_blocks > 1 && B >= 3;

  auto task = [&](int tid, int n) {
    save_inputs(p, tid, n);
    size_t hb0, hb1;
    split_range(hidden_blocks, tid, n, hb0, hb1);
    Real* w = static_cast<Real*>(scratch(tid, kSlotRecurrent));
    Real* tiles = static_cast<Real*>(scratch(tid, kSlotTiles));
    for (size_t hb = hb0; hb < hb1; ++hb)
      for (size_t gate = 0; gate < G; ++gate) {  // B (k, j) = [w_ih | w_hh][gate*H + j, k]
        const size_t nu = min_size(NR, H - hb * NR), row = gate * H + hb * NR;
        Real* panel = w + ((hb - hb0) * G + gate) * K * NR;
        pack_b_panel(nu, I, p.w_ih + row * I, 1, I, panel);
        pack_b_panel(nu, H, p.w_hh + row * H, 1, H, panel + I * NR);
      }
    alignas(64) Real act[G][NR];
    alignas(64) Real c_new[NR];
    alignas(64) Real h_new[NR];
    alignas(64) Real edge_bias[G][NR];
    alignas(64) Real edge_c[NR];
    for (size_t t = 0; t < T; ++t) {
      const Real* x_t = p.x + t * p.x_step;
      const Real* h_prev = t == 0 ? p.h0 : p.y + (t - 1) * B * H;
      const Real* c_prev = training ? (t == 0 ? p.c0 : p.c_all + (t - 1) * B * H) : p.cT;
      Real* c_t = training ? p.c_all + t * B * H : p.cT;
      // Rows r0.. of [x_t | h_{t-1}], columns [k0, k1): a part of x_t, then of h_{t-1}.
      auto step_inputs = [&](size_t r0, size_t k0, size_t k1) {
        const size_t x_end = min_size(k1, I), h_begin = k0 > I ? k0 : I;
        const bool in_x = x_end > k0, in_h = k1 > h_begin;
        return TileA<Real>{in_x ? x_end - k0 : 0, in_x ? x_t + r0 * p.x_row + k0 : x_t, p.x_row,
                           in_h ? k1 - h_begin : 0,
                           in_h ? h_prev + r0 * H + (h_begin - I) : h_prev, H};
      };
      for (size_t hb = hb0; hb < hb1; ++hb) {
        const size_t u0 = hb * NR, nu = min_size(NR, H - u0);
        const bool full = nu == NR;
        const Real* bias[G];
        for (size_t gate = 0; gate < G; ++gate) {
          bias[gate] = full ? p.b + gate * H + u0 : edge_bias[gate];
          if (!full)
            for (size_t c = 0; c < NR; ++c) edge_bias[gate][c] = c < nu ? p.b[gate * H + u0 + c] : 0;
        }
        const Real* panels = w + (hb - hb0) * G * K * NR;
        // The cell on rows [r0, r0 + m) once their gate sums are complete.
        auto update_rows = [&](size_t r0, size_t m) {
          for (size_t b = r0; b < r0 + m; ++b) {
            const Real* tile_row = tiles + b * G * NR;
            const Real* c_in = c_prev + b * H + u0;
            // A full block is written straight into its rows; the last, partial
            // one goes through zero-padded staging and copies nu units out.
            Real* gates_out[G] = {act[0], act[1], act[2], act[3]};
            Real* c_out = c_new;
            Real* h_out = h_new;
            if (full) {
              if (training)
                for (size_t gate = 0; gate < G; ++gate)
                  gates_out[gate] = p.gates + (t * B + b) * GH + gate * H + u0;
              c_out = c_t + b * H + u0;
              h_out = p.y + (t * B + b) * H + u0;
            } else {
              stage(edge_c, c_in, nu);
              c_in = edge_c;
            }
            for (size_t l = 0; l < NR; l += L) {
              V i = A::sigmoid(vload<V>(tile_row + 0 * NR + l) + vload<V>(bias[0] + l));
              V f = A::sigmoid(vload<V>(tile_row + 1 * NR + l) + vload<V>(bias[1] + l));
              V g = A::tanh(vload<V>(tile_row + 2 * NR + l) + vload<V>(bias[2] + l));
              V o = A::sigmoid(vload<V>(tile_row + 3 * NR + l) + vload<V>(bias[3] + l));
              V c = f * vload<V>(c_in + l) + i * g;
              if (training && full) {  // read again only by BPTT, after the whole forward
                vstream(gates_out[0] + l, i);
                vstream(gates_out[1] + l, f);
                vstream(gates_out[2] + l, g);
                vstream(gates_out[3] + l, o);
              } else {
                vstore(gates_out[0] + l, i);
                vstore(gates_out[1] + l, f);
                vstore(gates_out[2] + l, g);
                vstore(gates_out[3] + l, o);
              }
              vstore(c_out + l, c);
              vstore(h_out + l, o * A::tanh(c));
            }
            if (!full) {
              if (training)
                for (size_t gate = 0; gate < G; ++gate)
                  std::memcpy(p.gates + (t * B + b) * GH + gate * H + u0, act[gate],
                              nu * sizeof(Real));
              std::memcpy(c_t + b * H + u0, c_new, nu * sizeof(Real));
              std::memcpy(p.y + (t * B + b) * H + u0, h_new, nu * sizeof(Real));
            }
          }
        };
        if (gate_outer) {
          for (size_t k0 = 0; k0 < K; k0 += kc)
            for (size_t gate = 0; gate < G; ++gate)
              for (size_t r0 = 0; r0 < B; r0 += MR)
                compute_tile<Real, ALayout::Rows>(
                    min_size(MR, B - r0), 1, step_inputs(r0, k0, min_size(K, k0 + kc)),
                    panels + (gate * K + k0) * NR, 0,
                    TileOut<Real>{tiles + (r0 * G + gate) * NR, G * NR, k0 > 0});
          for (size_t r0 = 0; r0 < B; r0 += MR) update_rows(r0, min_size(MR, B - r0));
        } else {  // one pass, the cell applied while a row panel's sums are hot
          for (size_t r0 = 0; r0 < B; r0 += MR) {
            const size_t m = min_size(MR, B - r0);
            rows_tile(m, G, step_inputs(r0, 0, K), panels, K * NR, tiles + r0 * G * NR);
            update_rows(r0, m);
          }
        }
      }
      parallel_barrier();
    }
    stream_fence();  // the streamed gates, visible to whichever thread runs BPTT
  };
  run_parallel(nt, task);
  if (training) std::memcpy(p.cT, p.c_all + (T - 1) * B * H, B * H * sizeof(Real));
}

// BPTT, for t = T..1, with dh, dc carried from step t+1:
//   dh_t  = dy_t + dh                                   (1)
//   do    = dh_t * tanh(c_t)                            (2)
//   dc_t  = dc + dh_t * o * (1 - tanh(c_t)^2)           (3)
//   di    = dc_t * g,  dg = dc_t * i                    (4)
//   df    = dc_t * c_{t-1}                              (5)
//   dc    = dc_t * f            (carried to t-1)        (6)
//   da_t  = [di i(1-i), df f(1-f), dg (1-g^2), do o(1-o)]  (7)
//   dh    = da_t W_hh           (carried to t-1)        (8)
// da is kept in unit panels (gemm.h). At each step, for a thread's units:
//   [dW_ih | dW_hh] += da_t^T [x_t | h_{t-1}],  db += sum over rows of da_t  (9)
// and after the loop, when wanted, dx = da W_ih in one GEMM.
template <class Real>
void lstm_backward(const BackwardArgs<Real>& p) {
  using V = typename Simd<Real>::V;
  using A = Act<Real>;
  constexpr size_t L = Tile<Real>::L, MR = Tile<Real>::MR, NR = Tile<Real>::NR;
  const size_t T = p.T, B = p.B, I = p.I, H = p.H, GH = G * H;

  const size_t hidden_blocks = ceil_div(H, NR), Q = G * hidden_blocks;
  // da of every step is kept only for dx; otherwise steps t and t + 1 take turns.
  const size_t kept = p.dx != nullptr ? T : 2, slabs = kept * B * NR;
  auto step_rows = [&](size_t t) { return (t % kept) * B; };
  Buffer<Real> da_panels(Q * slabs);
  Real* da = da_panels.data();
  // [dW_ih | dW_hh]^T and db in the padded unit order, summed step by step.
  Buffer<Real> dw_transposed((I + H) * Q * NR), db_padded(Q * NR);
  // dc runs in dc0 itself: after step 1 it is the answer.
  std::memcpy(p.dc0, p.dcT, B * H * sizeof(Real));
  const int nt = step_threads(p.threads, B, GH, H, hidden_blocks);
  reserve_scratch(nt, kSlotRecurrent, ceil_div(hidden_blocks, nt) * Q * NR * NR * sizeof(Real));
  reserve_scratch(nt, kSlotPackA, step_inputs_size<Real>(B, I, H) * sizeof(Real));

  auto task = [&](int tid, int n) {
    size_t hb0, hb1;
    split_range(hidden_blocks, tid, n, hb0, hb1);
    Real* w = static_cast<Real*>(scratch(tid, kSlotRecurrent));
    Real* inputs = static_cast<Real*>(scratch(tid, kSlotPackA));
    for (size_t hb = hb0; hb < hb1; ++hb)  // B (k, u) = w_hh[k, u], k in unit-panel order
      pack_panel_weights(G, H, p.w_hh, H, hb * NR, min_size(NR, H - hb * NR),
                         w + (hb - hb0) * Q * NR * NR);
    alignas(64) Real tile[MR * NR];
    alignas(64) Real dc[NR];
    alignas(64) Real edge[8][NR];
    for (size_t t = T; t-- > 0;) {
      const Real* c_prev_t = t == 0 ? p.c0 : p.c_all + (t - 1) * B * H;
      for (size_t hb = hb0; hb < hb1; ++hb) {
        const size_t u0 = hb * NR, nu = min_size(NR, H - u0);
        for (size_t r0 = 0; r0 < B; r0 += MR) {
          const size_t m = min_size(MR, B - r0);
          if (t + 1 < T) {
            panels_tile(m, Q, da + (step_rows(t + 1) + r0) * NR, slabs,
                        w + (hb - hb0) * Q * NR * NR, tile);
          } else {
            for (size_t r = 0; r < m; ++r) stage(tile + r * NR, p.dhT + (r0 + r) * H + u0, nu);
          }
          for (size_t r = 0; r < m; ++r) {
            const size_t b = r0 + r;
            const size_t row = (t * B + b) * H + u0;
            const Real* gates_in[G];
            const Real* c_in = p.c_all + row;
            const Real* c_prev_in = c_prev_t + b * H + u0;
            const Real* dc_in = p.dc0 + b * H + u0;
            const Real* dy_in = p.dy != nullptr ? p.dy + row : nullptr;
            for (size_t gate = 0; gate < G; ++gate)
              gates_in[gate] = p.gates + (t * B + b) * GH + gate * H + u0;
            // da goes to the unit panels as whole vectors. The state of a full
            // block is read and written in place; a partial block is staged
            // zero-padded, so the padding lanes of da come out exactly zero.
            Real* da_out[G];
            for (size_t gate = 0; gate < G; ++gate)
              da_out[gate] = da + (gate * hidden_blocks + hb) * slabs + (step_rows(t) + b) * NR;
            Real* dc_out = dc;
            if (nu == NR) {
              dc_out = p.dc0 + b * H + u0;
            } else {
              for (size_t gate = 0; gate < G; ++gate) {
                stage(edge[gate], gates_in[gate], nu);
                gates_in[gate] = edge[gate];
              }
              stage(edge[4], c_in, nu);
              stage(edge[5], c_prev_in, nu);
              stage(edge[6], dc_in, nu);
              c_in = edge[4];
              c_prev_in = edge[5];
              dc_in = edge[6];
              if (dy_in != nullptr) {
                stage(edge[7], dy_in, nu);
                dy_in = edge[7];
              }
            }
            for (size_t l = 0; l < NR; l += L) {
              V i = vload<V>(gates_in[0] + l), f = vload<V>(gates_in[1] + l);
              V g = vload<V>(gates_in[2] + l), o = vload<V>(gates_in[3] + l);
              V dh_t = vload<V>(tile + r * NR + l);
              if (dy_in != nullptr) dh_t += vload<V>(dy_in + l);                            // (1)
              V tanh_c = A::tanh(vload<V>(c_in + l));
              V d_o = dh_t * tanh_c;                                                         // (2)
              V dc_t = vload<V>(dc_in + l) + dh_t * o * (Real(1) - tanh_c * tanh_c);         // (3)
              V d_i = dc_t * g, d_g = dc_t * i;                                              // (4)
              V d_f = dc_t * vload<V>(c_prev_in + l);                                        // (5)
              vstore(dc_out + l, dc_t * f);                                                  // (6)
              vstore(da_out[0] + l, d_i * i * (Real(1) - i));                                // (7)
              vstore(da_out[1] + l, d_f * f * (Real(1) - f));
              vstore(da_out[2] + l, d_g * (Real(1) - g * g));
              vstore(da_out[3] + l, d_o * o * (Real(1) - o));
            }
            if (nu < NR) std::memcpy(p.dc0 + b * H + u0, dc, nu * sizeof(Real));
          }
        }
      }
      // This thread's units of da_t are complete: their share of the weight
      // gradients now, while they are in cache: (9).
      pack_step_inputs(B, I, H, p.x_saved + t * B * I, t == 0 ? p.h0 : p.y + (t - 1) * B * H,
                       inputs);
      for (size_t gate = 0; gate < G; ++gate)
        step_weight_grads(B, I, H, inputs, da + step_rows(t) * NR, slabs,
                          gate * hidden_blocks + hb0, gate * hidden_blocks + hb1,
                          dw_transposed.data(), Q * NR, db_padded.data(), t + 1 < T);
      parallel_barrier();
    }
    initial_state_grad(B, H, Q, da, slabs, w, hb0, hb1, p.dh0);  // (8) for t = 1
  };
  run_parallel(nt, task);

  bptt_parameter_grads(p, da, slabs, G, dw_transposed.data(), db_padded.data());
}

template void lstm_forward<float>(const ForwardArgs<float>&);
template void lstm_forward<double>(const ForwardArgs<double>&);
template void lstm_backward<float>(const BackwardArgs<float>&);
template void lstm_backward<double>(const BackwardArgs<double>&);

}  // namespace FASTRNN_ISA_NS
}  // namespace fastrnn
