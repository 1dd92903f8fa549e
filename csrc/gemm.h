// The only code that multiplies matrices. Operands are packed into panels the
// register tile streams through (A: MR rows interleaved per k; B: NR columns
// per k), so one microkernel serves every transpose: packing absorbs the strides.
// Inline code here is compiled once per ISA, inside that ISA's namespace.
#pragma once

#include "common.h"
#include "memory.h"
#include "threadpool.h"

#include <cstdint>
#include <new>

namespace fastrnn {
namespace FASTRNN_ISA_NS {

// Register tile: MR rows by NR = 2 vectors of columns. 6x16 floats uses 12 of
// AVX2's 16 registers for accumulators; AVX-512 has 32, so 8x32.
template <class Real>
struct Tile {
  static constexpr size_t L = Simd<Real>::L;
  static constexpr size_t NR = 2 * L;
#if defined(__AVX512F__)
  static constexpr size_t MR = 8;
#else
  static constexpr size_t MR = 6;
#endif
};

// Scratch slots of the thread pool (see threadpool.h). BPTT's time loop packs
// its step inputs into kSlotPackA: gemm() never runs inside that loop.
constexpr int kSlotPackA = 0;
constexpr int kSlotPackB = 1;
constexpr int kSlotRecurrent = 2;
constexpr int kSlotTiles = 3;

// A B panel block that leaves room in a 32 KiB L1 for the A rows beside it.
constexpr size_t kPanelBytesL1 = 20 << 10;

// A tile reads its A operand in one of three layouts:
//   Packed  element (m, k) at a[k*lda + m], lda = MR: the panels that gemm()
//           and BPTT's pack_step_inputs build;
//   Rows    element (m, k) at a[m*lda + k], read in place: x_t and h_{t-1}
//           are row-major already, so a forward step packs nothing;
//   Panels  element (m, k) at a[(k/NR)*lda + m*NR + k%NR], K a multiple of
//           NR: da kept as unit panels (below), read in place by BPTT.
enum class ALayout { Packed, Rows, Panels };

// acc += A (M rows over K) times P B panels (K x NR each).
template <class Real, int M, int P, ALayout Layout, class V>
__attribute__((always_inline)) inline void accumulate(V (&acc)[M][P][2], size_t K, const Real* a,
                                                      size_t lda, const Real* b,
                                                      size_t panel_stride) {
  constexpr size_t L = Tile<Real>::L, NR = Tile<Real>::NR, MR = Tile<Real>::MR;
  if constexpr (Layout == ALayout::Panels) {  // NR-wide row-major slabs, lda apart
    for (size_t s = 0; s < K; s += NR) {
      const Real* slab = a + (s / NR) * lda;
      // Slabs lie far apart, beyond the hardware prefetcher's reach: ask for
      // the next slab's rows one slab ahead.
      if (s + NR < K)
        for (int m = 0; m < M; ++m) __builtin_prefetch(slab + lda + m * NR);
      accumulate<Real, M, P, ALayout::Rows>(acc, NR, slab, NR, b + s * NR, panel_stride);
    }
    return;
  }
  for (size_t k = 0; k < K; ++k) {
    V b0[P], b1[P];
    for (int p = 0; p < P; ++p) {
      b0[p] = vload<V>(b + p * panel_stride + k * NR);
      b1[p] = vload<V>(b + p * panel_stride + k * NR + L);
    }
    for (int m = 0; m < M; ++m) {
      const V am = broadcast<V>(Layout == ALayout::Rows ? a[m * lda + k] : a[k * lda + m]);
      for (int p = 0; p < P; ++p) {
        acc[m][p][0] += am * b0[p];
        acc[m][p][1] += am * b1[p];
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
template <class Real, int M, int P, ALayout Layout>
__attribute__((noinline)) void micro_kernel(size_t K1, const Real* a1, size_t lda1, size_t K2,
                                            const Real* a2, size_t lda2, const Real* b,
                                            size_t panel_stride, Real* tile, size_t ldt,
                                            bool add) {
  using V = typename Simd<Real>::V;
  constexpr size_t L = Tile<Real>::L, NR = Tile<Real>::NR;
  V acc[M][P][2];
  for (int m = 0; m < M; ++m)
    for (int p = 0; p < P; ++p) {
      acc[m][p][0] = add ? vload<V>(tile + m * ldt + p * NR) : V{};
      acc[m][p][1] = add ? vload<V>(tile + m * ldt + p * NR + L) : V{};
    }
  accumulate<Real, M, P, Layout>(acc, K1, a1, lda1, b, panel_stride);
  if (K2 != 0) accumulate<Real, M, P, Layout>(acc, K2, a2, lda2, b + K1 * NR, panel_stride);
  for (int m = 0; m < M; ++m)
    for (int p = 0; p < P; ++p) {
      vstore(tile + m * ldt + p * NR, acc[m][p][0]);
      vstore(tile + m * ldt + p * NR + L, acc[m][p][1]);
    }
}

// The A operand of a tile: up to two segments along K.
template <class Real>
struct TileA {
  size_t K1;
  const Real* a1;
  size_t lda1;
  size_t K2;
  const Real* a2;
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

template <class Real, int M, int PG, ALayout Layout>
inline void tile_rows(size_t P, const TileA<Real>& a, const Real* b, size_t panel_stride,
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

// out (m x P*NR) (+)= A (m <= MR rows) times P packed B panels.
template <class Real, ALayout Layout>
inline void compute_tile(size_t m, size_t P, const TileA<Real>& a, const Real* b,
                         size_t panel_stride, const TileOut<Real>& out) {
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

// tile (m x P*NR) = rows [a1 | a2] (m rows, row strides lda1, lda2) times P
// packed B panels.
template <class Real>
inline void rows_tile(size_t m, size_t P, const TileA<Real>& a, const Real* b,
                      size_t panel_stride, Real* tile) {
  constexpr size_t NR = Tile<Real>::NR;
  compute_tile<Real, ALayout::Rows>(m, P, a, b, panel_stride, TileOut<Real>{tile, P * NR, false});
}

// ---------------------------------------------------------------- unit panels
// How BPTT keeps the pre-activation gradients da (TB = T*B rows, G*H units):
// each gate's units are cut into HB = ceil(H/NR) blocks of NR, the last one
// zero-padded, and each of the Q = G*HB blocks is a (TB, NR) row-major slab:
//   da[k, gate*H + u]  at  panels[((gate*HB + u/NR)*TB + k)*NR + u%NR].
// A step's epilogue stores whole vectors into the slabs; the recurrence reads
// da_{t+1} from them as A (ALayout::Panels), and the same step's share of the
// weight gradients reads them as packed B panels (step_weight_grads): nothing
// is repacked. Only dx = da W_ih, after the loop, needs every step's slabs;
// without it two steps take turns in them.

// Unit panel q covers units [first, first + count) of gate `gate`; count is
// below NR only in a gate's last block.
struct UnitBlock {
  size_t gate, first, count;
};

template <class Real>
inline UnitBlock unit_block(size_t q, size_t H) {
  constexpr size_t NR = Tile<Real>::NR;
  const size_t HB = ceil_div(H, NR), first = (q % HB) * NR;
  return UnitBlock{q / HB, first, min_size(NR, H - first)};
}

// tile (m x NR) = m rows of da in unit panels (Q*NR padded units, slabs
// slab_stride apart) times a B panel packed by pack_panel_weights.
template <class Real>
inline void panels_tile(size_t m, size_t Q, const Real* da, size_t slab_stride, const Real* b,
                        Real* tile) {
  constexpr size_t NR = Tile<Real>::NR;
  compute_tile<Real, ALayout::Panels>(m, 1, TileA<Real>{Q * NR, da, slab_stride, 0, nullptr, 0},
                                      b, 0, TileOut<Real>{tile, NR, false});
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

// Packs n <= NR columns of B over K (element (k, j) at b[k*rs + j*cs]) into
// out[k*NR + j], columns n..NR-1 zero.
template <class Real>
inline void pack_b_panel(size_t n, size_t K, const Real* b, size_t rs, size_t cs, Real* out) {
  constexpr size_t NR = Tile<Real>::NR;
  if (cs == 1 && n == NR) {
    for (size_t k = 0; k < K; ++k) std::memcpy(out + k * NR, b + k * rs, NR * sizeof(Real));
  } else if (cs == 1) {
    for (size_t k = 0; k < K; ++k) {
      for (size_t j = 0; j < n; ++j) out[k * NR + j] = b[k * rs + j];
      for (size_t j = n; j < NR; ++j) out[k * NR + j] = Real(0);
    }
  } else {  // a transpose: the n source lines stay in L1 while k sweeps them
    for (size_t k = 0; k < K; ++k) {
      for (size_t j = 0; j < n; ++j) out[k * NR + j] = b[k * rs + j * cs];
      for (size_t j = n; j < NR; ++j) out[k * NR + j] = Real(0);
    }
  }
}

// Packs [x_t | h_{t-1}]^T (I + H rows over K = B) for step_weight_grads:
// x_t's rows in ceil(I/MR) panels, then h_{t-1}'s in ceil(H/MR), each MR*B.
template <class Real>
inline size_t step_inputs_size(size_t B, size_t I, size_t H) {
  constexpr size_t MR = Tile<Real>::MR;
  return (ceil_div(I, MR) + ceil_div(H, MR)) * MR * B;
}

template <class Real>
inline void pack_step_inputs(size_t B, size_t I, size_t H, const Real* x_t, const Real* h_prev,
                             Real* out) {
  constexpr size_t MR = Tile<Real>::MR;
  pack_a_block(I, B, x_t, 1, I, out);
  pack_a_block(H, B, h_prev, 1, H, out + ceil_div(I, MR) * MR * B);
}

// One step's share of the weight gradients, taken while da_t is hot in
// cache: for the unit panels q in [q0, q1) (B rows each, da_t + q*slab_stride)
//   dw[k, q*NR + c] (+)= sum_b [x_t | h_{t-1}][b, k] da_t[b, q*NR + c],  k < I + H
//   db[q*NR + c]    (+)= sum_b da_t[b, q*NR + c]
// with `add` false at the first step, which overwrites. `inputs` comes from
// pack_step_inputs. Every sum runs over the steps from T down, then the rows
// in order: no thread count changes it.
template <class Real>
inline void step_weight_grads(size_t B, size_t I, size_t H, const Real* inputs,
                              const Real* da_t, size_t slab_stride, size_t q0, size_t q1,
                              Real* dw, size_t ldw, Real* db, bool add) {
  using V = typename Simd<Real>::V;
  constexpr size_t L = Tile<Real>::L, MR = Tile<Real>::MR, NR = Tile<Real>::NR;
  if (q0 >= q1) return;
  const Real* panels = da_t + q0 * slab_stride;
  const Real* h_panels = inputs + ceil_div(I, MR) * MR * B;
  // C rows [row, row + m) from one MR-row panel of packed inputs.
  auto rows = [&](size_t row, size_t m, const Real* a) {
    compute_tile<Real, ALayout::Packed>(m, q1 - q0, TileA<Real>{B, a, MR, 0, nullptr, 0}, panels,
                                        slab_stride,
                                        TileOut<Real>{dw + row * ldw + q0 * NR, ldw, add});
  };
  for (size_t r = 0; r < I; r += MR) rows(r, min_size(MR, I - r), inputs + r * B);
  for (size_t r = 0; r < H; r += MR) rows(I + r, min_size(MR, H - r), h_panels + r * B);
  for (size_t q = q0; q < q1; ++q) {
    const Real* slab = da_t + q * slab_stride;
    for (size_t l = 0; l < NR; l += L) {
      V sum = add ? vload<V>(db + q * NR + l) : V{};
      for (size_t b = 0; b < B; ++b) sum += vload<V>(slab + b * NR + l);
      vstore(db + q * NR + l, sum);
    }
  }
}

// The last product of BPTT, dh0 = da_1 W_hh, for hidden blocks [hb0, hb1):
// da_1 from the unit panels (Q slabs, slabs apart), w the blocks' packed
// panels from pack_panel_weights, Q*NR*NR elements each.
template <class Real>
inline void initial_state_grad(size_t B, size_t H, size_t Q, const Real* da, size_t slabs,
                               const Real* w, size_t hb0, size_t hb1, Real* dh0) {
  constexpr size_t MR = Tile<Real>::MR, NR = Tile<Real>::NR;
  alignas(64) Real tile[MR * NR];
  for (size_t hb = hb0; hb < hb1; ++hb) {
    const size_t u0 = hb * NR, nu = min_size(NR, H - u0);
    for (size_t r0 = 0; r0 < B; r0 += MR) {
      const size_t m = min_size(MR, B - r0);
      panels_tile(m, Q, da + r0 * NR, slabs, w + (hb - hb0) * Q * NR * NR, tile);
      for (size_t r = 0; r < m; ++r)
        std::memcpy(dh0 + (r0 + r) * H + u0, tile + r * NR, nu * sizeof(Real));
    }
  }
}

// The B panel of da W for output columns [j0, j0 + n) of W (G*H x ldw): row
// (q, c) of the padded unit order holds W[gate*H + u, j0 .. j0+n) for unit
// u = (q % HB)*NR + c of gate q / HB, and zeros past H.
template <class Real>
inline void pack_panel_weights(size_t G, size_t H, const Real* w, size_t ldw, size_t j0,
                               size_t n, Real* out) {
  constexpr size_t NR = Tile<Real>::NR;
  for (size_t q = 0; q < G * ceil_div(H, NR); ++q) {
    const auto [gate, u0, units] = unit_block<Real>(q, H);
    Real* slab = out + q * NR * NR;
    pack_b_panel(n, units, w + (gate * H + u0) * ldw + j0, ldw, 1, slab);
    std::memset(slab + units * NR, 0, (NR - units) * NR * sizeof(Real));
  }
}

// Packs rows [0, m) of A held in unit panels (element (i, k) at
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
// A may instead be unit panels with slabs a_slabs apart (then its strides
// are ignored): its k runs over the padded units (dx = da W_ih).
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

// ------------------------------------------------------------ small helpers

// Aligned heap array owned by a kernel call, allocated outside the time loop.
template <class Real>
class Buffer {
 public:
  explicit Buffer(size_t n) : bytes_(n * sizeof(Real)) {
    if (n > SIZE_MAX / sizeof(Real)) throw std::bad_alloc();
    data_ = static_cast<Real*>(aligned_malloc(bytes_));
  }
  ~Buffer() { aligned_free(data_, bytes_); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  Real* data() { return data_; }

 private:
  size_t bytes_;
  Real* data_;
};

// Runs f(tid, nthreads) on the pool; a captureless trampoline keeps the pool's
// interface a plain function pointer (no std::function across ISA copies).
template <class F>
inline void run_parallel(int nthreads, F& f) {
  parallel_run(nthreads, [](void* ctx, int tid, int n) { (*static_cast<F*>(ctx))(tid, n); }, &f);
}

// [lo, hi) of n items for thread tid of nthreads: static, deterministic.
inline void split_range(size_t n, int tid, int nthreads, size_t& lo, size_t& hi) {
  lo = n * static_cast<size_t>(tid) / static_cast<size_t>(nthreads);
  hi = n * static_cast<size_t>(tid + 1) / static_cast<size_t>(nthreads);
}

// Threads worth waking for one time step of the recurrence: a barrier costs
// about a microsecond, so each thread should get a few microseconds of work
// (5e4 flops is about one). Batch 1 at H=128 already gains from a second
// thread: reading the weights bounds it, and two caches read them twice as
// fast. K and N are the inner and output sizes of the step's product.
inline int step_threads(int threads, size_t B, size_t K, size_t N, size_t hidden_blocks) {
  const double flops = 2.0 * double(B) * double(K) * double(N);
  size_t useful = static_cast<size_t>(flops / 5.0e4);
  if (useful < 1) useful = 1;
  size_t n = static_cast<size_t>(threads < 1 ? 1 : threads);
  n = min_size(n, min_size(useful, hidden_blocks));
  return static_cast<int>(n);
}

// dst[0, n) = src[0, n), dst[n, NR) = 0: the last, partial block of units
// goes through full-width vector code.
template <class Real>
inline void stage(Real* dst, const Real* src, size_t n) {
  constexpr size_t NR = Tile<Real>::NR;
  for (size_t c = 0; c < NR; ++c) dst[c] = c < n ? src[c] : Real(0);
}

// A training forward keeps x as it read it, contiguous and time-major, in
// p.x_saved: BPTT reads x again, and by then the caller's array may have
// changed (or be a strided view). Thread tid of n copies its share of rows.
template <class Real>
inline void save_inputs(const ForwardArgs<Real>& p, int tid, int n) {
  if (p.x_saved == nullptr) return;
  size_t r0, r1;
  split_range(p.T * p.B, tid, n, r0, r1);
  for (size_t r = r0; r < r1; ++r)
    std::memcpy(p.x_saved + r * p.I, p.x + (r / p.B) * p.x_step + (r % p.B) * p.x_row,
                p.I * sizeof(Real));
}

// After the BPTT time loop: dW_ih, dW_hh and db from what step_weight_grads
// summed (dw_transposed, db_padded, in the padded unit order), and dx = da W_ih
// when p.dx is wanted, from da in unit panels (G gates, slabs apart, every
// step kept).
template <class Real>
void bptt_parameter_grads(const BackwardArgs<Real>& p, const Real* da, size_t slabs, size_t G,
                          const Real* dw_transposed, const Real* db_padded);

}  // namespace FASTRNN_ISA_NS
}  // namespace fastrnn
