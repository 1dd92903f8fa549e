// Matrix products, and nothing else: the register tile, its microkernels, the
// packing of operands into panels, and a blocked, threaded GEMM. Operands are
// packed into panels the register tile streams through (A: MR rows
// interleaved per k; B: NR columns per k), so one microkernel serves every
// transpose: packing absorbs the strides. The recurrence (recurrence.h) calls
// the tiles directly inside its time loop. Inline code here is compiled once
// per ISA, inside that ISA's namespace.
#pragma once

#include "common.h"
#include "memory.h"
#include "parallel.h"

#include <cstdint>
#include <new>

namespace fastrnn {
namespace FASTRNN_ISA_NS {

// Register tile: MR rows by NR = 2 vectors of columns. 6x16 floats uses 12 of
// AVX2's 16 registers for accumulators; AVX-512 has 32, so 8x32.
template <class Real>
struct Tile {
  static constexpr size_t kLanes = Simd<Real>::kLanes;
  static constexpr size_t NR = 2 * kLanes;
#if defined(__AVX512F__)
  static constexpr size_t MR = 8;
#else
  static constexpr size_t MR = 6;
#endif
};

// What a tile multiplies: elements E of A and of the B panels, each holding
// kPerElement consecutive k, their products summed into Real. Native operands
// are one Real per k (acc += a * b); bfloat16 pairs specialize this in bf16.h.
template <class Real, class E>
struct Products;

// kWholeTiles: the type multiplies whole register tiles itself where it can
// (whole_tile returns false where it cannot): bfloat16 pairs on AMX.
template <class Real>
struct Products<Real, Real> {
  using V = typename Simd<Real>::V;
  using BV = V;  // a B panel's vector, as loaded
  static constexpr size_t kPerElement = 1;
  static constexpr bool kWholeTiles = false;
  static V broadcast_a(const Real* a) { return broadcast<V>(*a); }
  static BV load_b(const Real* b) { return vload<V>(b); }
  static void madd(V& acc, V a, BV b) { acc += a * b; }
};

// A tile reads its A operand in one of three layouts (element (m, k): the
// element holding k, which for bfloat16 pairs is k / 2):
//   Packed  element (m, k) at a[k*lda + m], lda = MR: the panels that gemm()
//           and BPTT's pack_step_inputs build;
//   Rows    element (m, k) at a[m*lda + k], read in place: x_t and h_{t-1}
//           are row-major already, so a forward step packs nothing;
//   Panels  element (m, k) at a[(k/NR)*lda + m*NR + k%NR], K a multiple of
//           NR: NR-wide row-major slabs lda apart, the layout in which BPTT
//           keeps da (recurrence.h), read in place.
enum class ALayout { Packed, Rows, Panels };

// acc += A (M rows over K elements) times P B panels (K x NR elements each).
template <class Real, int M, int P, ALayout Layout, class V, class E>
__attribute__((always_inline)) inline void accumulate(V (&acc)[M][P][2], size_t K, const E* a,
                                                      size_t lda, const E* b,
                                                      size_t panel_stride) {
  using Op = Products<Real, E>;
  constexpr size_t kLanes = Tile<Real>::kLanes, NR = Tile<Real>::NR;
  if constexpr (Layout == ALayout::Panels) {  // NR-wide row-major slabs, lda apart
    constexpr size_t S = NR / Op::kPerElement;  // elements in a slab's row
    for (size_t s = 0; s < K; s += S) {
      const E* slab = a + (s / S) * lda;
      // Slabs lie far apart, beyond the hardware prefetcher's reach: ask for
      // the next slab's rows one slab ahead.
      if (s + S < K)
        for (int m = 0; m < M; ++m) __builtin_prefetch(slab + lda + m * S);
      accumulate<Real, M, P, ALayout::Rows>(acc, S, slab, S, b + s * NR, panel_stride);
    }
    return;
  }
  for (size_t k = 0; k < K; ++k) {
    typename Op::BV b0[P], b1[P];
    for (int p = 0; p < P; ++p) {
      b0[p] = Op::load_b(b + p * panel_stride + k * NR);
      b1[p] = Op::load_b(b + p * panel_stride + k * NR + kLanes);
    }
    for (int m = 0; m < M; ++m) {
      const auto am = Op::broadcast_a(Layout == ALayout::Rows ? a + m * lda + k : a + k * lda + m);
      for (int p = 0; p < P; ++p) {
        Op::madd(acc[m][p][0], am, b0[p]);
        Op::madd(acc[m][p][1], am, b1[p]);
      }
    }
  }
}

// tile (M x P*NR, row stride ldt) = A times P consecutive B panels (each
// (K1+K2) x NR, panel_stride elements apart), or += when add: the GEMM sums
// its K blocks straight into C this way, in registers. A comes in two segments, K1
// then K2 (rows < M read): the recurrence multiplies [x_t | h_{t-1}] by
// [W_ih | W_hh]^T without copying x_t next to h_{t-1}.
// Never inlined: inside a large caller the compiler runs out of registers and
// spills accumulators, which chains every FMA through memory.
template <class Real, int M, int P, ALayout Layout, class E>
__attribute__((noinline)) void micro_kernel(size_t K1, const E* a1, size_t lda1, size_t K2,
                                            const E* a2, size_t lda2, const E* b,
                                            size_t panel_stride, Real* tile, size_t ldt,
                                            bool add) {
  if constexpr (Products<Real, E>::kWholeTiles) {
    if (Products<Real, E>::whole_tile(M, P, Layout, K1, a1, lda1, K2, b, panel_stride, tile,
                                      ldt, add))
      return;
  }
  using V = typename Simd<Real>::V;
  constexpr size_t kLanes = Tile<Real>::kLanes, NR = Tile<Real>::NR;
  V acc[M][P][2];
  for (int m = 0; m < M; ++m)
    for (int p = 0; p < P; ++p) {
      acc[m][p][0] = add ? vload<V>(tile + m * ldt + p * NR) : V{};
      acc[m][p][1] = add ? vload<V>(tile + m * ldt + p * NR + kLanes) : V{};
    }
  accumulate<Real, M, P, Layout>(acc, K1, a1, lda1, b, panel_stride);
  if (K2 != 0) accumulate<Real, M, P, Layout>(acc, K2, a2, lda2, b + K1 * NR, panel_stride);
  for (int m = 0; m < M; ++m)
    for (int p = 0; p < P; ++p) {
      vstore(tile + m * ldt + p * NR, acc[m][p][0]);
      vstore(tile + m * ldt + p * NR + kLanes, acc[m][p][1]);
    }
}

// The A operand of a tile: up to two segments along K, in elements E.
template <class E>
struct TileA {
  size_t K1;
  const E* a1;
  size_t lda1;
  size_t K2;
  const E* a2;
  size_t lda2;
};

// P panels in groups of PG per microkernel call: with few rows, more panels
// per call keep enough independent accumulators to hide the FMA latency.
// Where a tile goes: row stride ldt; add sums into what is there.
template <class Real>
struct TileOut {
  Real* tile;
  size_t ldt;
  bool add;
};

template <class Real, int M, int PG, ALayout Layout, class E>
inline void tile_rows(size_t P, const TileA<E>& a, const E* b, size_t panel_stride,
                      const TileOut<Real>& out) {
  constexpr size_t NR = Tile<Real>::NR;
  size_t p = 0;
  for (; p + PG <= P; p += PG)
    micro_kernel<Real, M, PG, Layout>(a.K1, a.a1, a.lda1, a.K2, a.a2, a.lda2,
                                      b + p * panel_stride, panel_stride, out.tile + p * NR,
                                      out.ldt, out.add);
  for (; p < P; ++p)
    micro_kernel<Real, M, 1, Layout>(a.K1, a.a1, a.lda1, a.K2, a.a2, a.lda2,
                                     b + p * panel_stride, panel_stride, out.tile + p * NR,
                                     out.ldt, out.add);
}

// out (m x P*NR) (+)= A (m <= MR rows) times P packed B panels. Inlined
// into its caller: as a call of its own it cost a batch-1 RNN forward 12% of
// its time (T=100, H=128), more than the microkernels it dispatches to.
template <class Real, ALayout Layout, class E>
__attribute__((always_inline)) inline void compute_tile(size_t m, size_t P, const TileA<E>& a,
                                                        const E* b, size_t panel_stride,
                                                        const TileOut<Real>& out) {
  constexpr size_t MR = Tile<Real>::MR;
  switch (m) {
    case 1: tile_rows<Real, 1, 4, Layout>(P, a, b, panel_stride, out); break;
    case 2: tile_rows<Real, 2, 2, Layout>(P, a, b, panel_stride, out); break;
    case 3: tile_rows<Real, 3, 1, Layout>(P, a, b, panel_stride, out); break;
    case 4: tile_rows<Real, 4, 1, Layout>(P, a, b, panel_stride, out); break;
    case 5: tile_rows<Real, 5, 1, Layout>(P, a, b, panel_stride, out); break;
    case 6: tile_rows<Real, 6, 1, Layout>(P, a, b, panel_stride, out); break;
    default:
      if constexpr (MR >= 8) {
        if (m == 7) tile_rows<Real, 7, 1, Layout>(P, a, b, panel_stride, out);
        else tile_rows<Real, 8, 1, Layout>(P, a, b, panel_stride, out);
      }
      break;
  }
}

// out (m x NR) (+)= packed A panel (K) times one packed B panel.
template <class Real>
inline void packed_tile(size_t m, size_t K, const Real* a, const Real* b,
                        const TileOut<Real>& out) {
  constexpr size_t MR = Tile<Real>::MR;
  compute_tile<Real, ALayout::Packed>(m, 1, TileA<Real>{K, a, MR, 0, nullptr, 0}, b, 0, out);
}

// tile (m x NR) (+)= m rows of A in Q slabs of NR columns (slab_stride
// elements apart) times one packed B panel of K = Q*NR.
template <class Real, class E>
inline void panels_tile(size_t m, size_t Q, const E* a, size_t slab_stride, const E* b,
                        const TileOut<Real>& out) {
  constexpr size_t S = Tile<Real>::NR / Products<Real, E>::kPerElement;  // elements a slab row
  compute_tile<Real, ALayout::Panels>(m, 1, TileA<E>{Q * S, a, slab_stride, 0, nullptr, 0}, b,
                                      0, out);
}

// Packs m <= MR rows of A over K (element (r, k) at a[r*rs + k*cs]) into
// out[k*MR + r]. Rows m..MR-1 are left alone: kernels never read them.
template <class Real>
inline void pack_a_panel(size_t m, size_t K, const Real* a, size_t rs, size_t cs, Real* out) {
  constexpr size_t MR = Tile<Real>::MR;
  if (cs == 1) {
    for (size_t r = 0; r < m; ++r)
      for (size_t k = 0; k < K; ++k) out[k * MR + r] = a[r * rs + k];
  } else {
    for (size_t k = 0; k < K; ++k)
      for (size_t r = 0; r < m; ++r) out[k * MR + r] = a[r * rs + k * cs];
  }
}

// Packs rows [0, m) of A over K into MR-row panels, panel ip at out + ip*MR*K.
template <class Real>
inline void pack_a_block(size_t m, size_t K, const Real* a, size_t rs, size_t cs, Real* out) {
  constexpr size_t MR = Tile<Real>::MR;
  const size_t full = m / MR;
  if (rs == 1) {
    // A's rows are adjacent in memory (A is a transpose): read each k's run
    // once, left to right, and deal MR-wide pieces to the panels. Panel by
    // panel, the same lines would be fetched again for every panel.
    for (size_t k = 0; k < K; ++k)
      for (size_t ip = 0; ip < full; ++ip)
        std::memcpy(out + ip * MR * K + k * MR, a + k * cs + ip * MR, MR * sizeof(Real));
    if (full * MR < m) pack_a_panel(m - full * MR, K, a + full * MR, rs, cs, out + full * MR * K);
  } else {
    for (size_t ip = 0; ip * MR < m; ++ip)
      pack_a_panel(min_size(MR, m - ip * MR), K, a + ip * MR * rs, rs, cs, out + ip * MR * K);
  }
}

// A 32-byte square block: 8 floats or 4 doubles a side.
template <class Real>
struct Square {
  static constexpr size_t W = 32 / sizeof(Real);
  typedef Real V __attribute__((vector_size(32)));
};

// dst[c*ld_dst + r] = src[r*ld_src + c] for one Square block, in registers:
// the shuffles of the classic 8x8 (4x4) transpose, which GCC lowers to each
// ISA's own (unpck, shufps, vperm2f128 on AVX; pairs of SSE halves below).
inline void transpose_square(const float* src, size_t ld_src, float* dst, size_t ld_dst) {
  typedef Square<float>::V V;
  typedef int32_t M __attribute__((vector_size(32)));
  V r[8], t[8], u[8];
  for (int i = 0; i < 8; ++i) std::memcpy(&r[i], src + i * ld_src, sizeof(V));
  for (int i = 0; i < 8; i += 2) {
    t[i] = __builtin_shuffle(r[i], r[i + 1], M{0, 8, 1, 9, 4, 12, 5, 13});
    t[i + 1] = __builtin_shuffle(r[i], r[i + 1], M{2, 10, 3, 11, 6, 14, 7, 15});
  }
  for (int i = 0; i < 8; i += 4)
    for (int j = 0; j < 2; ++j) {
      u[i + 2 * j] = __builtin_shuffle(t[i + j], t[i + j + 2], M{0, 1, 8, 9, 4, 5, 12, 13});
      u[i + 2 * j + 1] = __builtin_shuffle(t[i + j], t[i + j + 2], M{2, 3, 10, 11, 6, 7, 14, 15});
    }
  for (int c = 0; c < 4; ++c) {
    const V low = __builtin_shuffle(u[c], u[c + 4], M{0, 1, 2, 3, 8, 9, 10, 11});
    const V high = __builtin_shuffle(u[c], u[c + 4], M{4, 5, 6, 7, 12, 13, 14, 15});
    std::memcpy(dst + c * ld_dst, &low, sizeof(V));
    std::memcpy(dst + (c + 4) * ld_dst, &high, sizeof(V));
  }
}

inline void transpose_square(const double* src, size_t ld_src, double* dst, size_t ld_dst) {
  typedef Square<double>::V V;
  typedef int64_t M __attribute__((vector_size(32)));
  V r[4];
  for (int i = 0; i < 4; ++i) std::memcpy(&r[i], src + i * ld_src, sizeof(V));
  const V t0 = __builtin_shuffle(r[0], r[1], M{0, 4, 2, 6});
  const V t1 = __builtin_shuffle(r[0], r[1], M{1, 5, 3, 7});
  const V t2 = __builtin_shuffle(r[2], r[3], M{0, 4, 2, 6});
  const V t3 = __builtin_shuffle(r[2], r[3], M{1, 5, 3, 7});
  const V columns[4] = {__builtin_shuffle(t0, t2, M{0, 1, 4, 5}),
                        __builtin_shuffle(t1, t3, M{0, 1, 4, 5}),
                        __builtin_shuffle(t0, t2, M{2, 3, 6, 7}),
                        __builtin_shuffle(t1, t3, M{2, 3, 6, 7})};
  for (int c = 0; c < 4; ++c) std::memcpy(dst + c * ld_dst, &columns[c], sizeof(V));
}

// out[k*NR + j] = b[j*cs + k] for j < n, k < K, columns n..NR-1 zero: B is
// the transpose of row-major weights (rows of W_ih or W_hh, as torch keeps
// them). Square blocks where they fit, element by element at the edges.
template <class Real>
inline void pack_b_panel_transposed(size_t n, size_t K, const Real* b, size_t cs, Real* out) {
  constexpr size_t NR = Tile<Real>::NR, W = Square<Real>::W;
  const size_t n_blocks = n / W * W;
  size_t k0 = 0;
  for (; k0 + W <= K; k0 += W) {
    for (size_t j0 = 0; j0 < n_blocks; j0 += W)
      transpose_square(b + j0 * cs + k0, cs, out + k0 * NR + j0, NR);
    for (size_t k = k0; k < k0 + W; ++k) {
      for (size_t j = n_blocks; j < n; ++j) out[k * NR + j] = b[j * cs + k];
      for (size_t j = n; j < NR; ++j) out[k * NR + j] = Real(0);
    }
  }
  for (size_t k = k0; k < K; ++k) {
    for (size_t j = 0; j < n; ++j) out[k * NR + j] = b[j * cs + k];
    for (size_t j = n; j < NR; ++j) out[k * NR + j] = Real(0);
  }
}

// Packs n <= NR columns of B over K (element (k, j) at b[k*rs + j*cs]) into
// out[k*NR + j], columns n..NR-1 zero.
template <class Real>
inline void pack_b_panel(size_t n, size_t K, const Real* b, size_t rs, size_t cs, Real* out) {
  constexpr size_t NR = Tile<Real>::NR;
  if (rs == 1 && cs != 1) {
    pack_b_panel_transposed(n, K, b, cs, out);
  } else if (cs == 1 && n == NR) {
    for (size_t k = 0; k < K; ++k) std::memcpy(out + k * NR, b + k * rs, NR * sizeof(Real));
  } else if (cs == 1) {
    for (size_t k = 0; k < K; ++k) {
      for (size_t j = 0; j < n; ++j) out[k * NR + j] = b[k * rs + j];
      for (size_t j = n; j < NR; ++j) out[k * NR + j] = Real(0);
    }
  } else {  // any other strides: the n source lines stay in L1 while k sweeps them
    for (size_t k = 0; k < K; ++k) {
      for (size_t j = 0; j < n; ++j) out[k * NR + j] = b[k * rs + j * cs];
      for (size_t j = n; j < NR; ++j) out[k * NR + j] = Real(0);
    }
  }
}

// Packs rows [0, m) of A held in NR-wide slabs (element (i, k) at
// a[(k/NR)*slabs + i*NR + k%NR]) over K into MR-row panels.
template <class Real>
inline void pack_a_from_panels(size_t m, size_t K, const Real* a, size_t slabs, Real* out) {
  constexpr size_t MR = Tile<Real>::MR, NR = Tile<Real>::NR;
  for (size_t ip = 0; ip * MR < m; ++ip) {
    const size_t rows = min_size(MR, m - ip * MR);
    Real* panel = out + ip * MR * K;
    for (size_t k = 0; k < K; ++k) {
      const Real* src = a + (k / NR) * slabs + ip * MR * NR + k % NR;
      for (size_t r = 0; r < rows; ++r) panel[k * MR + r] = src[r * NR];
    }
  }
}

// C (M x N, row stride ldc) = op(A) op(B).
// A element (i, k) at a[i*a_rs + k*a_cs]; B element (k, j) at b[k*b_rs + j*b_cs].
// A may instead be NR-wide slabs a_slabs apart (ALayout::Panels; its
// strides are then ignored): BPTT's dx = da W_ih reads da where it lies.
template <class Real>
struct Gemm {
  size_t M, N, K;
  const Real* a;
  size_t a_rs, a_cs;
  const Real* b;
  size_t b_rs, b_cs;
  Real* c;
  size_t ldc;
  size_t a_slabs = 0;
};

// Rows are split evenly across threads in MR multiples; each output element
// is summed by one thread in a fixed order, so results do not depend on the
// thread count.
template <class Real>
void gemm(const Gemm<Real>& g, int threads);

}  // namespace FASTRNN_ISA_NS
}  // namespace fastrnn
