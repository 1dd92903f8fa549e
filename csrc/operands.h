// The operand types of the recurrence's products: what the driver
// (recurrence.h) packs and what the tiles read, per precision. The time loop,
// the cells, the row IO and the threading are the same for every type; an
// operand type says only how the weights are packed, how a forward step's A
// operand [x_t | h_{t-1}] is presented, and how BPTT's products read da and
// the step inputs.
//
//   NativeOperands<Real>  precision "fp32" (and float64): the arrays as they
//                         are; [x_t | h_{t-1}] and da read where they lie.
//   Bf16Operands          precision "bf16": pairs of bfloat16 (bf16.h),
//                         rounded as they are packed: the weights once per
//                         call, [x_t | h_{t-1}] once per step and thread, da
//                         once per step by the thread that computed it.
//
// Each has, with Packed its element (kPer values along k each):
//   rows(K)                 elements along k for K values
//   finite(w, n)            whether n packed weights hold no NaN or infinity
//   pack_weights            a forward B panel: n <= NR rows of W over K
//   pack_unit_weights       BPTT's B panel for da W (the padded unit order)
//   step_inputs             a forward step's A operand; .rows(r0, x, h) is the
//                           TileA of rows r0.. over x_t, h_{t-1} or both
//   input_rows              the A operand of x alone over M rows `stride`
//                           apart: several steps' inputs projected at once
//   da_size, round_da, da_operand
//                           BPTT's da as the products read it (da's layout)
//   step_inputs_size, pack_step_inputs, weight_grad_panels
//                           a BPTT step's weight-gradient operands: the packed
//                           [x_t | h_{t-1}]^T (A) and its da (B panels)
#pragma once

#include "bf16.h"
#include "gemm.h"

#include <type_traits>

namespace fastrnn {
namespace FASTRNN_ISA_NS {

// Unit panel q of a G-gate side covers units [first, first + count) of gate
// `gate`; count is below NR only in a gate's last block.
struct UnitBlock {
  size_t gate, first, count;
};

template <class Real>
inline UnitBlock unit_block(size_t q, size_t H) {
  constexpr size_t NR = Tile<Real>::NR;
  const size_t HB = ceil_div(H, NR), first = (q % HB) * NR;
  return UnitBlock{q / HB, first, min_size(NR, H - first)};
}

// The gate of position `position` of BPTT's W_ih-side groups of da, which
// hold the E input-only gates first (recurrence.h's header).
inline size_t input_side_gate(size_t position, size_t G, size_t E) {
  return position < E ? G - E + position : position - E;
}

// Where a weight-gradient step's B panels are: the W_ih side's, the W_hh
// side's, and the distance between consecutive unit panels.
template <class Packed>
struct GradPanels {
  const Packed* x;
  const Packed* h;
  size_t stride;
};

template <class Real>
struct NativeOperands {
  using Packed = Real;
  static constexpr size_t kPer = 1;
  static size_t rows(size_t K) { return K; }

  // Whether n packed weights hold no NaN or infinity.
  static bool finite(const Real* w, size_t n) {
    using Bits = std::conditional_t<sizeof(Real) == 4, uint32_t, uint64_t>;
    constexpr Bits kExponent = sizeof(Real) == 4 ? Bits(0x7F800000u) : Bits(0x7FF0000000000000u);
    Bits non_finite = 0;
    for (size_t i = 0; i < n; ++i) {
      Bits b;
      std::memcpy(&b, w + i, sizeof b);
      non_finite |= Bits((b & kExponent) == kExponent);
    }
    return non_finite == 0;
  }

  static void pack_weights(size_t n, size_t K, const Real* w, size_t ldw, Real* out) {
    pack_b_panel(n, K, w, 1, ldw, out);
  }

  // The B panel of da W for output columns [j0, j0 + n) of W (G*H x ldw): row
  // (q, c) of the padded unit order holds W[gate*H + u, j0 .. j0+n) for unit
  // u = (q % HB)*NR + c of gate q / HB, and zeros past H.
  static void pack_unit_weights(size_t G, size_t H, const Real* w, size_t ldw, size_t j0,
                                size_t n, Real* out) {
    constexpr size_t NR = Tile<Real>::NR;
    for (size_t q = 0; q < G * ceil_div(H, NR); ++q) {
      const auto [gate, u0, units] = unit_block<Real>(q, H);
      Real* slab = out + q * NR * NR;
      pack_b_panel(n, units, w + (gate * H + u0) * ldw + j0, ldw, 1, slab);
      std::memset(slab + units * NR, 0, (NR - units) * NR * sizeof(Real));
    }
  }

  // [x_t | h_{t-1}] where they lie; h_{t-1} copied first where other threads
  // wrote parts of it (h_shared): read in place, each of its cache lines
  // came from the other core as the microkernel reached it, and a 2-thread
  // RNN step at the origin shape took 20.6 us instead of 17.0.
  struct StepInputs {
    const Real* x_t;
    size_t x_row;
    const Real* h_prev;
    size_t h_row, I, H;
    TileA<Real> rows(size_t r0, bool x, bool h) const {
      return TileA<Real>{x ? I : 0, x ? x_t + r0 * x_row : x_t, x_row, h ? H : 0,
                         h ? h_prev + r0 * h_row : h_prev, h_row};
    }
  };
  static size_t step_scratch(size_t B, size_t, size_t H) { return B * H * sizeof(Real); }
  static StepInputs step_inputs(size_t B, size_t I, size_t H, const Real* x_t, size_t x_row,
                                const Real* h_prev, size_t h_row, bool h_shared, void* scratch) {
    if (!h_shared) return StepInputs{x_t, x_row, h_prev, h_row, I, H};
    Real* copy = static_cast<Real*>(scratch);
    for (size_t b = 0; b < B; ++b) std::memcpy(copy + b * H, h_prev + b * h_row, H * sizeof(Real));
    return StepInputs{x_t, x_row, copy, H, I, H};
  }
  static size_t input_scratch(size_t, size_t) { return 0; }
  static StepInputs input_rows(size_t, size_t I, const Real* x, size_t stride, void*) {
    return StepInputs{x, stride, nullptr, 0, I, 0};
  }

  // BPTT's products read da itself.
  static size_t da_size(size_t) { return 0; }
  static void round_da(size_t, const Real*, Real*) {}
  static const Real* da_operand(const Real* da, const Real*) { return da; }

  // [x_t | h_{t-1}]^T (I + H rows over K = B) for a step's weight gradients:
  // x_t's rows in ceil(I/MR) panels, then h_{t-1}'s in ceil(H/MR), each MR*B.
  static size_t step_inputs_size(size_t B, size_t I, size_t H) {
    constexpr size_t MR = Tile<Real>::MR;
    return (ceil_div(I, MR) + ceil_div(H, MR)) * MR * B;
  }
  // h_prev's rows lie h_row apart (y's row stride, or H for h0).
  static void pack_step_inputs(size_t B, size_t I, size_t H, const Real* x_t, const Real* h_prev,
                               size_t h_row, Real* out) {
    constexpr size_t MR = Tile<Real>::MR;
    pack_a_block(I, B, x_t, 1, I, out);
    pack_a_block(H, B, h_prev, 1, h_row, out + ceil_div(I, MR) * MR * B);
  }
  // da's unit panels (B rows each) are B panels as they lie.
  static size_t grad_panels_size(size_t, size_t) { return 0; }
  static GradPanels<Real> weight_grad_panels(size_t, const Real* x_panels, const Real* h_panels,
                                             size_t slab_stride, size_t, Real*) {
    return GradPanels<Real>{x_panels, h_panels, slab_stride};
  }
};

struct Bf16Operands {
  using Packed = Bf16Pair;
  static constexpr size_t kPer = 2;
  static constexpr size_t MR = Tile<float>::MR, NR = Tile<float>::NR;
  static size_t rows(size_t K) { return pair_count(K); }

  // Whether n packed pairs hold no NaN or infinity (in either half).
  static bool finite(const Bf16Pair* w, size_t n) {
    uint32_t non_finite = 0;
    for (size_t i = 0; i < n; ++i) {
      uint32_t b;
      std::memcpy(&b, w + i, sizeof b);
      non_finite |= uint32_t((b & 0x7F80u) == 0x7F80u) | uint32_t((b & 0x7F800000u) == 0x7F800000u);
    }
    return non_finite == 0;
  }

  static void pack_weights(size_t n, size_t K, const float* w, size_t ldw, Bf16Pair* out) {
    pack_weight_pairs(n, K, w, ldw, out);
  }

  // As NativeOperands', with units (c, c + 1) of a unit panel in one pair row.
  static void pack_unit_weights(size_t G, size_t H, const float* w, size_t ldw, size_t j0,
                                size_t n, Bf16Pair* out) {
    pack_unit_pairs(G, H, w, ldw, j0, n, out, [](size_t gate) { return gate; });
  }
  // gate_of maps a unit panel's gate position to the row block of W it reads.
  template <class GateOf>
  static void pack_unit_pairs(size_t G, size_t H, const float* w, size_t ldw, size_t j0,
                              size_t n, Bf16Pair* out, GateOf gate_of) {
    for (size_t q = 0; q < G * ceil_div(H, NR); ++q) {
      const auto [position, u0, units] = unit_block<float>(q, H);
      const float* rows = w + (gate_of(position) * H + u0) * ldw + j0;
      for (size_t c = 0; c < NR; c += 2) {
        Bf16Pair* out_row = out + (q * NR + c) / 2 * NR;
        if (c < units)
          pack_pair_row(n, rows + c * ldw, c + 1 < units ? rows + (c + 1) * ldw : nullptr,
                        out_row);
        else
          std::memset(static_cast<void*>(out_row), 0, NR * sizeof(Bf16Pair));
      }
    }
  }

  // Rows of [x_t | h_{t-1}] rounded: IP pairs of x_t, then HP of h_{t-1}, so
  // that a panel over both reads one segment.
  struct StepInputs {
    const Bf16Pair* a;
    size_t ld, IP, HP;
    TileA<Bf16Pair> rows(size_t r0, bool x, bool h) const {
      const Bf16Pair* row = a + r0 * ld;
      return TileA<Bf16Pair>{(x ? IP : 0) + (h ? HP : 0), x ? row : row + IP, ld, 0, nullptr, 0};
    }
  };
  static size_t step_scratch(size_t B, size_t I, size_t H) {
    return B * (pair_count(I) + pair_count(H)) * sizeof(Bf16Pair);
  }
  static StepInputs step_inputs(size_t B, size_t I, size_t H, const float* x_t, size_t x_row,
                                const float* h_prev, size_t h_row, bool, void* scratch) {
    const size_t IP = pair_count(I), HP = pair_count(H), ld = IP + HP;
    uint16_t* out = static_cast<uint16_t*>(scratch);
    for (size_t b = 0; b < B; ++b) {
      round_row(I, x_t + b * x_row, out + 2 * b * ld);
      round_row(H, h_prev + b * h_row, out + 2 * (b * ld + IP));
    }
    return StepInputs{as_pairs(out), ld, IP, HP};
  }
  static size_t input_scratch(size_t M, size_t I) { return M * pair_count(I) * sizeof(Bf16Pair); }
  static StepInputs input_rows(size_t M, size_t I, const float* x, size_t stride, void* scratch) {
    const size_t IP = pair_count(I);
    uint16_t* out = static_cast<uint16_t*>(scratch);
    for (size_t r = 0; r < M; ++r) round_row(I, x + r * stride, out + 2 * r * IP);
    return StepInputs{as_pairs(out), IP, IP, 0};
  }

  // A mirror of da rounded, in da's layout: n values (whole slab rows, so n is
  // even) at a time.
  static size_t da_size(size_t elements) { return elements / 2; }
  static void round_da(size_t n, const float* da, Bf16Pair* rounded) {
    round_row(n, da, reinterpret_cast<uint16_t*>(rounded));
  }
  static const Bf16Pair* da_operand(const float*, const Bf16Pair* rounded) { return rounded; }

  // The weight gradients sum over the batch, so their pairs run along b:
  // [x_t | h_{t-1}]^T in MR-row panels, element (m, b/2) at m + (b/2)*MR.
  static size_t step_inputs_size(size_t B, size_t I, size_t H) {
    return (ceil_div(I, MR) + ceil_div(H, MR)) * MR * pair_count(B);
  }
  static void pack_step_inputs(size_t B, size_t I, size_t H, const float* x_t,
                               const float* h_prev, size_t h_row, Bf16Pair* out) {
    pack_transposed_pairs(B, I, x_t, I, out);
    pack_transposed_pairs(B, H, h_prev, h_row, out + ceil_div(I, MR) * MR * pair_count(B));
  }
  // Rows (b, b + 1) of m columns of a (B, m) array, rows lda apart, paired and
  // dealt into MR-row panels.
  static void pack_transposed_pairs(size_t B, size_t m, const float* a, size_t lda,
                                    Bf16Pair* out) {
    const size_t BP = pair_count(B);
    Bf16Pair row[1024];
    for (size_t bp = 0; bp < BP; ++bp) {
      const float* even = a + 2 * bp * lda;
      const float* odd = 2 * bp + 1 < B ? even + lda : nullptr;
      for (size_t i0 = 0; i0 < m; i0 += 1024 / MR * MR) {  // a row in stack-sized pieces
        const size_t n = min_size(m - i0, 1024 / MR * MR);
        pair_rows(n, even + i0, odd ? odd + i0 : nullptr, row);
        for (size_t i = 0; i < n; i += MR)
          std::memcpy(static_cast<void*>(out + ((i0 + i) / MR * BP + bp) * MR), row + i,
                      min_size(MR, n - i) * sizeof(Bf16Pair));
      }
    }
  }
  // da's n unit panels of B rows (slab_stride apart) as B panels paired along b:
  // rows (b, b + 1) of a slab in one pair row. The W_hh side's panels are the
  // W_ih side's for the gates whose two sides share one da: paired once.
  static size_t grad_panels_size(size_t B, size_t n) { return 2 * n * pair_count(B) * NR; }
  static GradPanels<Bf16Pair> weight_grad_panels(size_t B, const float* x_panels,
                                                 const float* h_panels, size_t slab_stride,
                                                 size_t n, Bf16Pair* out) {
    const size_t stride = pair_count(B) * NR;
    auto pair_slabs = [&](const float* panels, Bf16Pair* dst) {
      for (size_t q = 0; q < n; ++q)
        for (size_t b = 0; b < B; b += 2)
          pack_pair_row(NR, panels + q * slab_stride + b * NR,
                        b + 1 < B ? panels + q * slab_stride + (b + 1) * NR : nullptr,
                        dst + q * stride + b / 2 * NR);
      return dst;
    };
    const Bf16Pair* x = pair_slabs(x_panels, out);
    const Bf16Pair* h = h_panels == x_panels ? x : pair_slabs(h_panels, out + n * stride);
    return GradPanels<Bf16Pair>{x, h, stride};
  }
};

}  // namespace FASTRNN_ISA_NS
}  // namespace fastrnn
