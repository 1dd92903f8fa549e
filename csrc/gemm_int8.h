// int8 products for frozen inference models, the arithmetic of
// fastrnn/_quantize.py: weight panels packed once, activations quantized per
// step with a scale per row, exact int32 sums, each dequantized once into
// float32 gate sums that the cells then use as they use float32 ones.
//
// Sizes: M rows of activations (the batch), K the depth of one product (I or
// H), N its output columns (G*H); NR output columns per panel, as the float32
// tile's (gemm.h), so a panel covers one block of units of one gate.
//
// A panel's two segments. A gate panel multiplies [x_t | h_{t-1}] by
// [W_ih | W_hh]^T, but x and h carry their own scales (and so do the rows of
// W_ih and W_hh): each segment has its own int32 sum, dequantized apart, and
// the two terms are added in float32, x's first. Either segment may be empty
// (the GRU's n gate reads x and h apart).
//
// Layout of a packed panel (int8_panel_bytes), 64-byte aligned:
//   Int8Columns             per segment and column: the weight scale s_w, and
//                           offset * sum_k q_w (the correction of the
//                           unsigned-activation paths; 0 elsewhere);
//   codes of segment 1      ceil(K1/4) groups, each NR columns of 4 int8 along K:
//                           q_w[j, k] at ((k/4)*NR + j)*4 + k%4, zero past K;
//   codes of segment 2      likewise over K2.
// Columns past n (the last block of units) are zero, scale and all.
//
// The activation paths: the kernels' int8 codes q in [-127, 127] are stored
// as q + kInt8Offset in a byte: 128 for vpdpbusd, which multiplies unsigned
// by signed bytes, 0 (q in two's complement) elsewhere. Rows of codes are
// padded to a multiple of 4 (int8_row_bytes); the padding meets zero weights.
#pragma once

#include <cstddef>
#include <cstdint>

namespace fastrnn {

// One tile's activations: up to two segments of M rows, codes lda bytes apart
// with one scale per row. K1 is the depth of the panels' first segment; a1
// null skips it (its term is in the tile's output already: a step whose input
// projection was computed before it).
struct Int8Rows {
  size_t K1;
  const uint8_t* a1;
  size_t lda1;
  const float* s1;
  size_t K2;
  const uint8_t* a2;
  size_t lda2;
  const float* s2;
};

// The rows of W (codes and scales) that become one panel: columns [0, n) of
// the panel are rows [0, n) of each segment's W, ld bytes apart (n <= NR).
struct Int8PanelSource {
  size_t n;
  size_t K1;
  const int8_t* w1;
  size_t ld1;
  const float* s1;
  size_t K2;
  const int8_t* w2;
  size_t ld2;
  const float* s2;
};

// One ISA copy's int8 kernels; dispatch.cc picks the table with the float ones.
struct Int8Kernels {
  const char* path;   // what multiplies, for fastrnn.info()
  size_t NR, MR;      // panel width (= the float32 tile's), rows per tile call
  int offset;         // kInt8Offset: added to every activation code
  // Bytes of one packed panel of depths K1, K2 (a multiple of 64).
  size_t (*panel_bytes)(size_t K1, size_t K2);
  void (*pack_panel)(const Int8PanelSource& src, uint8_t* out);
  // Codes and scales of M rows of a (element (r, k) at a[r*lda + k]) over K:
  // row r's codes at codes[r*ldc ..], ldc >= int8_row_bytes(K), its scale at
  // scales[r]. The padding up to int8_row_bytes(K) is written too.
  void (*quantize_rows)(size_t M, size_t K, const float* a, size_t lda, uint8_t* codes,
                        size_t ldc, float* scales);
  // out (m x P*NR, row stride ldt) = the dequantized gate sums of m rows
  // times P consecutive panels, panel_stride bytes apart; with add, out plus
  // them (each segment's term added in turn, the first segment's first).
  void (*tile)(size_t m, size_t P, const Int8Rows& a, const uint8_t* panels,
               size_t panel_stride, float* out, size_t ldt, bool add);
};

// Bytes of a row of K activation codes, padded to whole groups of 4.
inline size_t int8_row_bytes(size_t K) { return (K + 3) / 4 * 4; }

// Bytes of a packed panel of NR columns and depths K1, K2 (the layout above):
// inline, as the driver sizes panels at every step.
inline size_t int8_panel_bytes(size_t NR, size_t K1, size_t K2) {
  const size_t head = 2 * NR * (sizeof(float) + sizeof(int32_t));  // the Int8Columns
  return (head + (int8_row_bytes(K1) + int8_row_bytes(K2)) * NR + 63) / 64 * 64;
}

// The table of the ISA path in use (dispatch.cc).
const Int8Kernels& int8_kernels();

#ifdef FASTRNN_ISA_NS
namespace FASTRNN_ISA_NS {
// This ISA copy's table (gemm_int8.cc), which its driver calls directly.
const Int8Kernels* int8_kernel_table();
}  // namespace FASTRNN_ISA_NS
#endif

}  // namespace fastrnn
