// Gate panels per operand type, and the int8 operand type of frozen models.
//
// PanelProducts<Ops> says how the driver (recurrence.h) sizes, packs and
// multiplies one gate panel: NR units of one gate over x_t (K1 = I), h_{t-1}
// (K2 = H) or both. For the dense operand types of operands.h a panel is
// Ops::rows(K1) + Ops::rows(K2) rows of NR elements and the tiles of gemm.h
// multiply it. For Int8Operands a panel is gemm_int8.h's (a head of column
// scales, then int8 codes in groups of 4), the activations are quantized per
// step, and its tiles return dequantized float32 gate sums: the cells use
// them as they use float32 ones (fastrnn/_quantize.py has the arithmetic).
// int8 panels are packed from codes and scales only when a model is frozen:
// an int8 forward always reads prepared weights (ForwardArgs::packed).
#pragma once

#include "gemm.h"
#include "gemm_int8.h"
#include "operands.h"

#include <type_traits>

namespace fastrnn {
namespace FASTRNN_ISA_NS {

// What the panels of a block are packed from: float rows of W_ih and W_hh
// (dense types), or int8 codes with a scale per row (int8).
template <class Real>
struct WeightRows {
  const Real* w_ih;
  const Real* w_hh;
  const int8_t* q_ih = nullptr;
  const int8_t* q_hh = nullptr;
  const float* s_ih = nullptr;
  const float* s_hh = nullptr;
};

template <class Ops>
struct PanelProducts {
  using Packed = typename Ops::Packed;

  // Packed elements of a panel of depths K1 (x_t) and K2 (h_{t-1}).
  template <class Real>
  static size_t elements(size_t K1, size_t K2) {
    return (Ops::rows(K1) + Ops::rows(K2)) * Tile<Real>::NR;
  }
  // n <= NR units from row `row` of W_ih (K1 != 0) and of W_hh (K2 != 0).
  template <class Real>
  static void pack(size_t n, size_t K1, size_t K2, const WeightRows<Real>& w, size_t row,
                   Packed* out) {
    if (K1 != 0) {
      Ops::pack_weights(n, K1, w.w_ih + row * K1, K1, out);
      out += Ops::rows(K1) * Tile<Real>::NR;
    }
    if (K2 != 0) Ops::pack_weights(n, K2, w.w_hh + row * K2, K2, out);
  }
  template <class Real, class Rows>
  static void tile(size_t m, size_t P, const Rows& a, const Packed* panels, size_t panel_stride,
                   const TileOut<Real>& out) {
    compute_tile<Real, ALayout::Rows>(m, P, a, panels, panel_stride, out);
  }
  // out (+)= rows r0.. of h_{t-1} times the W_hh part of P panels whose W_ih
  // part is x_depth deep: a step whose input projection out holds already.
  // `backwards` may take the panels in reverse order (the sums are the same).
  template <class Real, class Inputs>
  static void recurrent_tile(size_t m, size_t P, const Inputs& in, size_t r0, size_t x_depth,
                             const Packed* panels, size_t panel_stride, const TileOut<Real>& out,
                             bool backwards) {
    constexpr size_t NR = Tile<Real>::NR;
    const auto a = in.rows(r0, false, true);
    const Packed* w = panels + Ops::rows(x_depth) * NR;
    // One float row streams W_hh from L2: two panels a call read it faster than
    // four (T=28, H=128 LSTM at batch 1), and taken backwards every other step
    // they start on the pair the step before read last, still in L1.
    if constexpr (std::is_same_v<Packed, Real>) {
      if (m == 1 && P % 2 == 0) {
        for (size_t i = 0; i < P; i += 2) {
          const size_t q = backwards ? P - 2 - i : i;
          micro_kernel<Real, 1, 2, ALayout::Rows>(a.K1, a.a1, a.lda1, a.K2, a.a2, a.lda2,
                                                 w + q * panel_stride, panel_stride,
                                                 out.tile + q * NR, out.ldt, out.add);
        }
        return;
      }
    }
    tile(m, P, a, w, panel_stride, out);
  }
};

struct Int8Operands {
  using Packed = uint8_t;
  // Codes and finite scales: quantization refuses NaN and infinite weights.
  static bool finite(const uint8_t*, size_t) { return true; }

  // [x_t | h_{t-1}] quantized: codes and a scale per row of each, in the
  // step's scratch. Each thread quantizes every row: its tiles read them all,
  // and B*(I + H) values cost little beside the step's B*(I + H)*G*H products.
  struct StepInputs {
    const uint8_t* x;
    const float* x_scales;
    size_t ldx;
    const uint8_t* h;
    const float* h_scales;
    size_t ldh, I, H;
    Int8Rows rows(size_t r0, bool with_x, bool with_h) const {
      return Int8Rows{with_x ? I : 0, x + r0 * ldx, ldx, x_scales + r0,
                      with_h ? H : 0, h + r0 * ldh, ldh, h_scales + r0};
    }
  };
  static size_t step_scratch(size_t B, size_t I, size_t H) {
    return B * (int8_row_bytes(I) + int8_row_bytes(H) + 2 * sizeof(float));
  }
  static StepInputs step_inputs(size_t B, size_t I, size_t H, const float* x_t, size_t x_row,
                                const float* h_prev, size_t h_row, bool, void* scratch) {
    const Int8Kernels& k = *int8_kernel_table();
    float* scales = static_cast<float*>(scratch);
    uint8_t* x = reinterpret_cast<uint8_t*>(scales + 2 * B);
    uint8_t* h = x + B * int8_row_bytes(I);
    k.quantize_rows(B, I, x_t, x_row, x, int8_row_bytes(I), scales);
    k.quantize_rows(B, H, h_prev, h_row, h, int8_row_bytes(H), scales + B);
    return StepInputs{x, scales, int8_row_bytes(I), h, scales + B, int8_row_bytes(H), I, H};
  }
  static size_t input_scratch(size_t M, size_t I) {
    return M * (int8_row_bytes(I) + sizeof(float));
  }
  static StepInputs input_rows(size_t M, size_t I, const float* x, size_t stride, void* scratch) {
    float* scales = static_cast<float*>(scratch);
    uint8_t* codes = reinterpret_cast<uint8_t*>(scales + M);
    int8_kernel_table()->quantize_rows(M, I, x, stride, codes, int8_row_bytes(I), scales);
    return StepInputs{codes, scales, int8_row_bytes(I), nullptr, nullptr, 0, I, 0};
  }
};

template <>
struct PanelProducts<Int8Operands> {
  using Packed = uint8_t;

  template <class Real>
  static size_t elements(size_t K1, size_t K2) {
    return int8_panel_bytes(Tile<float>::NR, K1, K2);
  }
  template <class Real>
  static void pack(size_t n, size_t K1, size_t K2, const WeightRows<Real>& w, size_t row,
                   Packed* out) {
    int8_kernel_table()->pack_panel(
        Int8PanelSource{n, K1, w.q_ih + row * K1, K1, w.s_ih + row, K2, w.q_hh + row * K2, K2,
                        w.s_hh + row},
        out);
  }
  template <class Real>
  static void tile(size_t m, size_t P, const Int8Rows& a, const Packed* panels,
                   size_t panel_stride, const TileOut<Real>& out) {
    int8_kernel_table()->tile(m, P, a, panels, panel_stride, out.tile, out.ldt, out.add);
  }
  // As the dense types': the panels' x_t segment is skipped (Int8Rows::a1 null).
  template <class Real>
  static void recurrent_tile(size_t m, size_t P, const Int8Operands::StepInputs& in, size_t r0,
                             size_t x_depth, const Packed* panels, size_t panel_stride,
                             const TileOut<Real>& out, bool) {
    Int8Rows rows = in.rows(r0, false, true);
    rows.K1 = x_depth;
    rows.a1 = nullptr;
    tile(m, P, rows, panels, panel_stride, out);
  }
};

}  // namespace FASTRNN_ISA_NS
}  // namespace fastrnn
