// The recurrence driver every cell shares: the time loop, the packing of
// [W_ih | W_hh] per block of units, the per-step tile, the barriers, the
// per-step weight-gradient sums and the input gradient after the loop. A cell
// (rnn.cc, lstm.cc, gru.cc) supplies only what is its own: which gate panels
// a step multiplies, and the elementwise forward and backward step on one row
// of a block of units (the cell's "postgemm").
//
// The products' operand type (operands.h: fp32, or bfloat16 pairs for
// precision "bf16") is the driver's second template argument: it says how the
// weights, [x_t | h_{t-1}] and da are packed for the tiles; the time loop,
// the cells and the threading are the same for every type.
//
// Threads split the hidden units into blocks of NR (the register tile's
// width). Each thread packs its blocks' weights once per call (or reads those
// a frozen model prepared once: pack_frozen_weights) and keeps them
// cache-resident for every step; x_t and h_{t-1} (forward) and da_{t+1}
// (backward) are read where they lie. A thread applies its cell to its units
// while the step's tile is cache-hot, so a unit's state never leaves its
// thread, and one barrier per step hands h_t (or da_t) to the next step.
//
// Forward. Per block, a cell lists its gate panels (Cell::kPanels): each is
// NR units of one gate, multiplied by x_t, h_{t-1} or both ([x_t | h_{t-1}]
// times [W_ih | W_hh]^T in one tile pass, so the input projection never makes
// a round trip through memory). LSTM and RNN panels read both; the GRU's n
// gate needs x W_in^T and h W_hn^T apart (r multiplies only the second), so
// it has one panel of each.
//
// Backward keeps the pre-activation gradients da of a step in unit panels:
// each gate's units are cut into HB = ceil(H/NR) blocks of NR, the last one
// zero-padded, and each block is a (rows, NR) row-major slab:
//   da[k, group, u]  at  da[((group*HB + u/NR)*rows + k)*NR + u%NR].
// Groups are gates: the W_hh side of BPTT (the recurrence, dW_hh, db_hh,
// dh0) reads the G groups [E, E + G) in the cell's gate order, the W_ih side
// (dW_ih, db_ih, dx) the G groups [0, G). E = gates_apart<Cell>() is 0 for
// cells whose gates see x and h through one sum (RNN, LSTM: both sides read
// the same groups) and 1 for the GRU, whose n gate has a gradient for its
// input part (group 0) and another for its recurrent part (group E + G - 1):
// both sides then read contiguous groups. A step's cell stores whole vectors
// into the slabs; the recurrence reads da_{t+1} from them as A
// (ALayout::Panels), and the step's share of the weight gradients reads them
// as packed B panels: nothing is repacked. Only dx = da W_ih, after the loop,
// needs every step's slabs; without it two steps take turns in them.
//
// Direction and layout: the caller's per-step arrays (x, y, dy) are read and
// written through their strides (StepArray in common.h), so the driver runs
// its steps t = 0..T-1 over any view, a reverse run's included, whose
// arrays step back from time T-1: a layer's two directions read one input
// and write their halves of one output, and nothing is copied. The
// workspace, x's saved copy and da keep the order the steps ran in (da of a
// reverse run with dx: dx's order, da_rows_of_step).
//
// Lengths: a packed batch (ForwardArgs::offsets; the layer sorts the rows by
// length and, for the reverse direction, reverses each sequence within its
// length) runs only the rows still going at each step, rows [0, n_t): the
// cost follows the tokens, and the cells never know. A row whose sequence
// ends at step t takes its dh from dh_T there; a later-starting row of BPTT
// is one that ended earlier.
#pragma once

#include "gemm.h"
#include "operands.h"
#include "operands_int8.h"
#include "parallel.h"

#include <algorithm>
#include <iterator>
#include <type_traits>

namespace fastrnn {
namespace FASTRNN_ISA_NS {

// ------------------------------------------------------------ the cell side

// What a forward gate panel multiplies: [x_t | h_{t-1}], x_t alone or h_{t-1} alone.
enum class Reads { x_and_h, x, h };

struct GatePanel {
  size_t gate;
  Reads reads;
};

// The per-unit arrays a cell reads and writes for one row of a block: a
// cell's row functions take one of two IO types, and the driver picks by the
// block. A full block is read and written in place (InPlaceRow: no copies, no
// branches); the last, partial one (units < NR) goes through zero-padded
// staging (StagedRow), so a cell's vector code always runs on NR lanes and the
// padding lanes of everything it computes stay exactly zero.
template <class Real>
struct InPlaceRow {
  static constexpr bool kFull = true;
  const Real* in(const Real* p) { return p; }
  Real* out(Real* p) { return p; }
  Real* in_out(Real* p) { return p; }  // a state updated in place
};

template <class Real, int Slots = 8>
class StagedRow {
 public:
  static constexpr bool kFull = false;
  static constexpr size_t NR = Tile<Real>::NR;
  explicit StagedRow(size_t units) : units_(units) {}
  StagedRow(const StagedRow&) = delete;
  StagedRow& operator=(const StagedRow&) = delete;

  const Real* in(const Real* p) {
    Real* s = slot();
    stage(s, p, units_);
    return s;
  }
  Real* out(Real* p) {
    pending_[pending_count_] = p;
    Real* s = slot();
    pending_slot_[pending_count_++] = s;
    return s;
  }
  // A state updated in place: read, then written back.
  Real* in_out(Real* p) {
    Real* s = out(p);
    stage(s, p, units_);
    return s;
  }
  // Copies the staged outputs out.
  void finish() {
    for (int i = 0; i < pending_count_; ++i)
      std::memcpy(pending_[i], pending_slot_[i], units_ * sizeof(Real));
  }

  // dst[0, n) = src[0, n), dst[n, NR) = 0.
  static void stage(Real* dst, const Real* src, size_t n) {
    for (size_t c = 0; c < NR; ++c) dst[c] = c < n ? src[c] : Real(0);
  }

 private:
  Real* slot() { return staging_[used_++]; }

  size_t units_;
  int used_ = 0, pending_count_ = 0;
  Real* pending_[Slots];
  Real* pending_slot_[Slots];
  alignas(64) Real staging_[Slots][NR];
};

// Runs row(io) with the IO type the block needs: in place when its `units`
// fill NR lanes, else staged and copied out.
template <class Real, class RowFn>
__attribute__((always_inline)) inline void with_row_io(size_t units, RowFn&& row) {
  if (units == Tile<Real>::NR) {
    InPlaceRow<Real> io;
    row(io);
  } else {
    StagedRow<Real> io(units);
    row(io);
    io.finish();
  }
}

// Rows of the step-major arrays: step t runs rows [0, step_batch(p, t)),
// stored from row step_offset(p, t) on (t*B without a packed batch).
template <class Args>
inline size_t step_offset(const Args& p, size_t t) {
  return p.offsets != nullptr ? p.offsets[t] : t * p.B;
}
template <class Args>
inline size_t step_batch(const Args& p, size_t t) {
  if (t >= p.T) return 0;
  return p.offsets != nullptr ? p.offsets[t + 1] - p.offsets[t] : p.B;
}
template <class Args>
inline size_t total_rows(const Args& p) { return step_offset(p, p.T); }

// Row 0 of step t of a caller's per-step array (StepArray in common.h).
template <class Args, class Ptr>
inline Ptr step_rows(const Args& p, const StepArray<Ptr>& a, size_t t) {
  return p.offsets != nullptr ? a.data + p.offsets[t] * a.row : a.data + ptrdiff_t(t) * a.step;
}

// h_{t-1} of step t's rows: h0 (B, H) at the first step, else y of step t - 1.
template <class Real>
struct PreviousState {
  const Real* h;
  size_t row;  // between rows: H for h0, y's row stride after
};

template <class Real, class Args>
inline PreviousState<Real> previous_state(const Args& p, size_t t) {
  if (t == 0) return {p.h0, p.H};
  return {step_rows(p, p.y, t - 1), p.y.row};
}

// One row b of one block of units [u0, u0 + NR) at step t, as the driver
// hands it to a cell: `row` indexes the workspace, as does prev_row, the same
// sequence's row at step t - 1 (unused at t = 0); the caller's arrays come as
// pointers to this row's units.
template <class Real>
struct ForwardRow {
  size_t row, prev_row, b, u0;
  bool first;           // t == 0: the previous state is the initial one
  const Real* h_prev;   // h_{t-1}[b, u0..]
  Real* y;              // h_t[b, u0..], the cell's output
  const Real* sums;     // the row's gate sums: panel p at sums + p*NR
  const Real* const* bias;  // panel p's bias for these units, NR lanes
};

template <class Real>
struct BackwardRow {
  size_t row, prev_row, b, u0;
  bool first;
  const Real* h_prev;   // h_{t-1}[b, u0..]
  const Real* y;        // h_t[b, u0..]
  const Real* dy;       // dy_t[b, u0..], null without a loss on y
  const Real* dh;       // da_{t+1} W_hh for these units, or dh_T at its last step
  Real* const* da;      // group g's NR lanes of da_t for this row
};

// A cell's row functions run once per row of every step: forced inline into
// the driver's loop (GCC left the LSTM's forward row out of line, which cost
// 3-4% of the origin shape's forward).
#define FASTRNN_CELL_ROW template <class IO> __attribute__((always_inline)) static inline

// Vector stores of what BPTT reads again only after the whole forward go past
// the caches (vstream), into staging as plain stores.
template <class V, class Real>
inline void store_saved(Real* p, V v, bool stream) {
  if (stream) vstream(p, v);
  else vstore(p, v);
}

// A group of a cell's workspace: `width` values per unit for every (t, b)
// row, after `first` values per unit of every row in the groups before it.
struct SavedGroup {
  size_t first, width;
};

// What every cell starts from: its vector types and the defaults of the
// interface (see "Cell interface" below), which a cell overrides where it
// differs. Static members only: the driver calls Cell::name(...).
template <class Real_>
struct CellBase {
  using Real = Real_;
  using V = typename Simd<Real>::V;
  using A = Act<Real>;
  static constexpr size_t kLanes = Simd<Real>::kLanes, NR = Tile<Real>::NR;
  static constexpr size_t kVectors = NR / kLanes;  // a block row's vectors of units
  static constexpr bool kCarriesDh = false, kRowsApart = false;

  // The workspace, as oneDNN's ws_gates: value `index` of group g (a gate,
  // or 0) for units u0.. of workspace row `row`. Its groups are (rows,
  // width*H) arrays one after the other; a cell names its groups.
  template <class Args>
  static auto saved_at(const Args& p, SavedGroup g, size_t row, size_t index, size_t u0) {
    return p.saved + (total_rows(p) * g.first + row * g.width + index) * p.H + u0;
  }

  // Gate panel k's sum plus its bias, on the v-th vector of a forward row's units.
  static V gate_input(const ForwardRow<Real>& r, size_t k, size_t v) {
    return vload<V>(r.sums + k * NR + v * kLanes) + vload<V>(r.bias[k] + v * kLanes);
  }

  static void forward_begin(const ForwardArgs<Real>&) {}
  static void forward_end(const ForwardArgs<Real>&) {}
  static void backward_begin(const BackwardArgs<Real>&) {}
};

// ------------------------------------------------------------ driver helpers

// Rows [0, n) cut into ceil(n / MR) row panels whose sizes differ by at most
// one: 50 rows go as 7+7+7+7+7+7+8 rather than 6 x 8 + 2, whose 2-row tile
// runs at a fraction of the wider tiles' rate. A row's sums do not depend on
// the panel it falls in.
struct RowPanels {
  size_t rows, count;
  RowPanels(size_t n, size_t mr) : rows(n), count(ceil_div(n, mr)) {}
  size_t first(size_t i) const { return i * rows / count; }  // panel i: [first(i), first(i + 1))
};

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

// A training forward keeps x as it read it, contiguous and in the order of
// its steps, in p.x_saved: BPTT reads x again, and by then the caller's array
// may have changed (or be a strided view). Thread tid of n copies its share
// of rows.
template <class Real>
inline void save_inputs(const ForwardArgs<Real>& p, int tid, int n) {
  if (p.x_saved == nullptr) return;
  size_t r0, r1;
  split_range(total_rows(p), tid, n, r0, r1);
  // A packed x, or a C-order (T, B, I) one read forward in time, is contiguous already.
  if (p.offsets != nullptr || (p.x.row == p.I && p.x.step == ptrdiff_t(p.B * p.I))) {
    std::memcpy(p.x_saved + r0 * p.I, p.x.data + r0 * p.I, (r1 - r0) * p.I * sizeof(Real));
    return;
  }
  // Saved row r is sequence r % B at step r / B: walk (t, b) from r0 rather
  // than divide at every row. Rows are short (28 values at the origin): copied
  // by vectors here, since a memcpy call per row measured 2% of the origin's
  // training forward. A row of at least kLanes values ends with one vector
  // that overlaps the one before it, rather than with a scalar tail.
  using V = typename Simd<Real>::V;
  constexpr size_t kLanes = Simd<Real>::kLanes;
  const size_t I = p.I, whole = I / kLanes * kLanes;
  size_t t = r0 / p.B, b = r0 % p.B;
  for (size_t r = r0; r < r1; ++r) {
    const Real* src = p.x.data + ptrdiff_t(t) * p.x.step + b * p.x.row;
    Real* dst = p.x_saved + r * I;
    for (size_t k = 0; k < whole; k += kLanes) vstore(dst + k, vload<V>(src + k));
    if (whole < I) {
      if (I > kLanes) vstore(dst + I - kLanes, vload<V>(src + I - kLanes));
      else for (size_t k = 0; k < I; ++k) dst[k] = src[k];
    }
    if (++b == p.B) b = 0, ++t;
  }
}

// sum over rows of n unit panels of B rows each (slab_stride apart) into
// db[0, n*NR), or added to it.
template <class Real>
inline void sum_unit_panels(size_t B, const Real* panels, size_t slab_stride, size_t n, Real* db,
                            bool add) {
  using V = typename Simd<Real>::V;
  constexpr size_t kLanes = Tile<Real>::kLanes, NR = Tile<Real>::NR;
  for (size_t q = 0; q < n; ++q) {
    const Real* slab = panels + q * slab_stride;
    for (size_t l = 0; l < NR; l += kLanes) {
      V sum = add ? vload<V>(db + q * NR + l) : V{};
      for (size_t b = 0; b < B; ++b) sum += vload<V>(slab + b * NR + l);
      vstore(db + q * NR + l, sum);
    }
  }
}

// One step's share of the weight gradients, taken while da_t is hot in cache,
// for n unit panels of B rows each (x_panels, h_panels: the W_ih and W_hh
// sides' da_t, slab_stride apart):
//   dw[k, c]     (+)= sum_b x_t[b, k] da_ih[b, c],      k < I
//   dw[I + k, c] (+)= sum_b h_{t-1}[b, k] da_hh[b, c],  k < H
//   db_hh[c]     (+)= sum_b da_hh[b, c], and db_ih likewise when not null
// with `add` false at the first step, which overwrites. `inputs` comes from
// Ops::pack_step_inputs; `scratch` holds Ops::grad_panels_size(B, n). Every
// sum runs over the steps from T down, then the rows in order: no thread
// count changes it.
template <class Ops, class Real>
inline void step_weight_grads(size_t B, size_t I, size_t H, const typename Ops::Packed* inputs,
                              const Real* x_panels, const Real* h_panels, size_t slab_stride,
                              size_t n, Real* dw, size_t ldw, Real* db_ih, Real* db_hh,
                              bool add, typename Ops::Packed* scratch) {
  using Packed = typename Ops::Packed;
  constexpr size_t MR = Tile<Real>::MR;
  if (n == 0) return;
  const size_t K = Ops::rows(B);
  const Packed* h_inputs = inputs + ceil_div(I, MR) * MR * K;
  const GradPanels<Packed> panels =
      Ops::weight_grad_panels(B, x_panels, h_panels, slab_stride, n, scratch);
  // C rows [row, row + m) from one MR-row panel of packed inputs.
  auto rows = [&](size_t row, size_t m, const Packed* a, const Packed* b) {
    compute_tile<Real, ALayout::Packed>(m, n, TileA<Packed>{K, a, MR, 0, nullptr, 0}, b,
                                        panels.stride, TileOut<Real>{dw + row * ldw, ldw, add});
  };
  for (size_t r = 0; r < I; r += MR) rows(r, min_size(MR, I - r), inputs + r * K, panels.x);
  for (size_t r = 0; r < H; r += MR) rows(I + r, min_size(MR, H - r), h_inputs + r * K, panels.h);
  sum_unit_panels(B, h_panels, slab_stride, n, db_hh, add);
  if (db_ih != nullptr) sum_unit_panels(B, x_panels, slab_stride, n, db_ih, add);
}

// The last product of BPTT, dh0 (+)= da_1 W_hh, for hidden blocks [hb0, hb1):
// da_1 (the first step's rows) from the unit panels (Q slabs, slabs elements
// apart), w the blocks'
// packed panels from Ops::pack_unit_weights, `block` elements each. `add`
// keeps what a cell already carried into dh0 (the GRU's z * dh).
template <class Real, class Packed>
inline void initial_state_grad(size_t B, size_t H, size_t Q, const Packed* da, size_t slabs,
                               const Packed* w, size_t block, size_t hb0, size_t hb1, Real* dh0,
                               bool add) {
  constexpr size_t MR = Tile<Real>::MR, NR = Tile<Real>::NR;
  constexpr size_t kPer = Products<Real, Packed>::kPerElement;
  alignas(64) Real tile[MR * NR];
  for (size_t hb = hb0; hb < hb1; ++hb) {
    const size_t u0 = hb * NR, nu = min_size(NR, H - u0);
    for (size_t r0 = 0; r0 < B; r0 += MR) {
      const size_t m = min_size(MR, B - r0);
      panels_tile(m, Q, da + r0 * NR / kPer, slabs, w + (hb - hb0) * block,
                  TileOut<Real>{tile, NR, false});
      for (size_t r = 0; r < m; ++r) {
        Real* out = dh0 + (r0 + r) * H + u0;
        for (size_t c = 0; c < nu; ++c) out[c] = (add ? out[c] : Real(0)) + tile[r * NR + c];
      }
    }
  }
}

// The first row of step t's da when every step's da is kept for dx = da W_ih:
// the rows of dx's step t, so that the product is one GEMM into dx's
// contiguous rows, whichever way the recurrence ran through them (common.h:
// a reverse run's dx.step is negative).
template <class Real>
inline size_t da_rows_of_step(const BackwardArgs<Real>& p, size_t t) {
  return p.dx.step < 0 ? (p.T - 1 - t) * p.B : step_offset(p, t);
}

// After the BPTT time loop: dW_ih, dW_hh, db_hh and db_ih from what
// step_weight_grads summed (dw_transposed, db_hh_padded and db_ih_padded, in
// the padded unit order; db_ih_padded null where both sides share their
// groups), and dx = da W_ih when p.dx is wanted, from the W_ih side's G
// groups of da (slabs apart, every step kept, in dx's row order: see
// da_rows_of_step). E as in the file header. With da_rounded (da's bfloat16
// mirror, precision "bf16"), dx's product takes bfloat16 operands.
template <class Real>
void bptt_parameter_grads(const BackwardArgs<Real>& p, const Real* da, const Bf16Pair* da_rounded,
                          size_t slabs, size_t G, size_t E, const Real* dw_transposed,
                          const Real* db_hh_padded, const Real* db_ih_padded);

// ------------------------------------------------------------------ driver

// Cell interface (a CellBase<Real> with; see rnn.cc for the smallest cell):
//   G (gates) and kPanels (GatePanel[]), its own;
//   forward_row(p, ForwardRow, IO&): the elementwise forward of one row;
//   backward_row(p, BackwardRow, IO&): one row's elementwise BPTT step
//   (templates on IO: InPlaceRow or StagedRow);
// and where it differs from CellBase's defaults:
//   forward_begin(p) / forward_end(p): before and after the time loop;
//   backward_begin(p): before the loop (carried state set up);
//   kCarriesDh: the cell adds its own part of dh_{t-1} into p.dh0 (GRU);
//   kRowsApart: the forward runs the cell on a row panel's rows in a call of
//     their own (RNN). Inlined into the time loop, GCC hoisted the RNN's tanh
//     constants above the microkernel calls, which leave no vector register
//     alive, and so read each of them from memory at every row: the origin
//     shape's forward was 2-4% slower. In their own call the constants are
//     loaded once per row panel. The LSTM's and GRU's forwards measured the
//     same either way.

// The biases and their gradients follow from kPanels (gates_apart).

// E: the gates whose x_t and h_{t-1} sums stay apart, a panel reading x_t
// alone and one reading h_{t-1} alone (the GRU's n, which r multiplies by its
// recurrent sum). Their b_ih and b_hh are not folded, and BPTT gives their
// two sides different gradients (db_ih != db_hh there); the other gates sum
// both biases once. They must be the cell's last gates (the order of BPTT's
// da groups, in the file header).
template <class Cell>
constexpr size_t gates_apart() {
  size_t E = 0;
  for (const GatePanel& panel : Cell::kPanels) E += panel.reads == Reads::x;
  for (const GatePanel& panel : Cell::kPanels)
    if (panel.reads != Reads::x_and_h && panel.gate + E < Cell::G) return size_t(-1);
  return E;
}

// One H-row of bias per gate panel, folded once per call: a panel reading
// [x_t | h_{t-1}] takes b_ih + b_hh, one reading x_t alone b_ih, h_{t-1}
// alone b_hh (P*H values in out), from a layer direction's b_ih and b_hh (G*H).
template <class Cell>
void fold_panel_biases(size_t H, const typename Cell::Real* b_ih_all,
                       const typename Cell::Real* b_hh_all, typename Cell::Real* out) {
  for (const GatePanel& panel : Cell::kPanels) {
    const auto* b_ih = b_ih_all + panel.gate * H;
    const auto* b_hh = b_hh_all + panel.gate * H;
    for (size_t u = 0; u < H; ++u)
      out[u] = panel.reads == Reads::x ? b_ih[u] : panel.reads == Reads::h ? b_hh[u]
                                                                            : b_ih[u] + b_hh[u];
    out += H;
  }
}

// The weights of one block of units, packed: every gate panel of the cell in
// kPanels order, each over its x_t part (K1 = I) and its h_{t-1} part (K2 =
// H). Its size, in elements of Ops::Packed, is block_elements.
template <class Cell, class Ops>
size_t panel_elements(Reads reads, size_t I, size_t H) {
  return PanelProducts<Ops>::template elements<typename Cell::Real>(reads != Reads::h ? I : 0,
                                                                    reads != Reads::x ? H : 0);
}

template <class Cell, class Ops>
size_t block_elements(size_t I, size_t H) {
  size_t n = 0;
  for (const GatePanel& panel : Cell::kPanels) n += panel_elements<Cell, Ops>(panel.reads, I, H);
  return n;
}

template <class Cell, class Ops>
void pack_block(const WeightRows<typename Cell::Real>& w, size_t I, size_t H, size_t hb,
                typename Ops::Packed* out) {
  constexpr size_t NR = Tile<typename Cell::Real>::NR;
  const size_t nu = min_size(NR, H - hb * NR);
  for (const GatePanel& gp : Cell::kPanels) {  // B (k, j) = [w_ih | w_hh][gate*H + j, k]
    PanelProducts<Ops>::pack(nu, gp.reads != Reads::h ? I : 0, gp.reads != Reads::x ? H : 0, w,
                             gp.gate * H + hb * NR, out);
    out += panel_elements<Cell, Ops>(gp.reads, I, H);
  }
}

// A frozen model's weights, packed once for every block (ForwardArgs::packed,
// block hb at hb * block_elements), and its bias row per gate panel.
template <class Cell, class Ops>
void pack_frozen_weights(const PackArgs<typename Cell::Real>& a) {
  using Real = typename Cell::Real;
  constexpr size_t NR = Tile<Real>::NR, P = std::size(Cell::kPanels);
  const size_t block = block_elements<Cell, Ops>(a.I, a.H), hidden_blocks = ceil_div(a.H, NR);
  *a.packed_bytes = hidden_blocks * block * sizeof(typename Ops::Packed);
  *a.bias_count = P * a.H;
  if (a.packed != nullptr) {
    const WeightRows<Real> w{a.w_ih, a.w_hh, a.q_ih, a.q_hh, a.s_ih, a.s_hh};
    auto* out = static_cast<typename Ops::Packed*>(a.packed);
    for (size_t hb = 0; hb < hidden_blocks; ++hb)
      pack_block<Cell, Ops>(w, a.I, a.H, hb, out + hb * block);
  }
  if (a.panel_biases != nullptr) fold_panel_biases<Cell>(a.H, a.b_ih, a.b_hh, a.panel_biases);
}

// A frozen model's small batches project their inputs first: the x_t terms of
// the gate sums of a chunk of steps (at most MR rows) in one product per
// block, which reads the block's W_ih once for the chunk where each step
// would read it again for its few rows; a step then reads only W_hh, going
// on with each panel's sums over h_{t-1} in the order of one pass over
// [x_t | h_{t-1}], so the sums (and outputs) are the same bits. Steps per
// chunk, or 0 (no projection) when training, for a single step (a stream's),
// or when x's rows are not evenly spaced across steps.
template <class Real>
size_t projected_steps(const ForwardArgs<Real>& p) {
  constexpr size_t MR = Tile<Real>::MR;
  // (Forward in time: a reverse run's x steps back.)
  const bool evenly_spaced = p.offsets != nullptr ||
                             (p.x.step > 0 && (p.B == 1 || size_t(p.x.step) == p.B * p.x.row));
  // Not bfloat16: on AMX's tiles (amx_bf16) a projected forward and a stream,
  // which is not projected, differed in last bits.
  if (p.packed == nullptr || p.saved != nullptr || p.T < 2 || 2 * p.B > MR || !evenly_spaced ||
      p.precision == Precision::bf16)
    return 0;
  return MR / p.B;
}

// Whether rows [b0, b1) of h0 (B, H) are all +0.0, as a layer's default
// initial state is.
template <class Real>
bool zero_state(const Real* h0, size_t b0, size_t b1, size_t H) {
  const unsigned char* bytes = reinterpret_cast<const unsigned char*>(h0 + b0 * H);
  unsigned char any = 0;
  for (size_t i = 0; i < (b1 - b0) * H * sizeof(Real); ++i) any |= bytes[i];
  return any == 0;
}

// Whether a forward's threads split the batch's rows rather than its hidden
// units: each thread then runs every unit of its rows, reads only the rows of
// h_{t-1} it wrote itself, and no step waits at a barrier. Split by units,
// every thread reads every row of h_{t-1} at every step, the other threads'
// parts from their cores' caches. (Zen 5, 2 threads, the LSTM's inference
// split by rows against by units: at the origin shape 0.82x the time in bf16
// and 0.88x in float32, at the medium one 0.93x in bf16.) It takes full
// batches (a packed one's rows end at different steps), a few row panels a
// thread, and packed weights within three quarters of one L2 cache, since
// every thread reads all of them at every step. A row's sums are the same
// bits either way.
template <class Real>
bool forward_splits_rows(const ForwardArgs<Real>& p, int threads, size_t chunk,
                         size_t weight_bytes) {
  constexpr size_t MR = Tile<Real>::MR;
  return threads > 1 && p.offsets == nullptr && chunk == 0 &&
         p.B >= 2 * MR * static_cast<size_t>(threads) && 4 * weight_bytes <= 3 * l2_cache_bytes();
}

// Where each gate panel of a block's packed weights starts.
template <class Cell, class Ops>
void block_panels(const typename Ops::Packed* block_weights, size_t I, size_t H,
                  const typename Ops::Packed** panels) {
  for (size_t pp = 0; pp < std::size(Cell::kPanels); ++pp) {
    panels[pp] = block_weights;
    block_weights += panel_elements<Cell, Ops>(Cell::kPanels[pp].reads, I, H);
  }
}

// The x_t terms of steps [t0, t1) for blocks [hb0, hb1) of w (see
// projected_steps): block hb's rows at sums + (hb - hb0) * MR*P*NR, P*NR
// apart, as a step's tile lays out its gate sums.
template <class Cell, class Ops>
void project_inputs(const ForwardArgs<typename Cell::Real>& p, size_t t0, size_t t1,
                    const typename Ops::Packed* w, size_t hb0, size_t hb1, void* scratch,
                    typename Cell::Real* sums) {
  using Real = typename Cell::Real;
  constexpr size_t MR = Tile<Real>::MR, NR = Tile<Real>::NR, P = std::size(Cell::kPanels);
  const size_t I = p.I, H = p.H, r0 = step_offset(p, t0), m = step_offset(p, t1) - r0;
  const Real* x = step_rows(p, p.x, t0);
  const size_t stride = p.offsets != nullptr ? p.x.row : p.B == 1 ? size_t(p.x.step) : p.x.row;
  const auto inputs = Ops::input_rows(m, I, x, stride, scratch);
  const typename Ops::Packed* panels[P];
  for (size_t hb = hb0; hb < hb1; ++hb) {
    block_panels<Cell, Ops>(w + (hb - hb0) * block_elements<Cell, Ops>(I, H), I, H, panels);
    for (size_t pp = 0; pp < P;) {
      const Reads reads = Cell::kPanels[pp].reads;
      size_t count = 1;
      while (pp + count < P && Cell::kPanels[pp + count].reads == reads) ++count;
      if (reads != Reads::h)
        PanelProducts<Ops>::tile(m, count, inputs.rows(0, true, false), panels[pp],
                                 panel_elements<Cell, Ops>(reads, I, H),
                                 TileOut<Real>{sums + ((hb - hb0) * MR * P + pp) * NR, P * NR,
                                               false});
      pp += count;
    }
  }
}

// x (T, B, I) -> y (T, B, H) and the cell's state; when training also the
// cell's saved workspace and p.x_saved. Ops: the products' operand type
// (operands.h, operands_int8.h). The weights are packed per call, or read
// as a frozen model prepared them (p.packed).
template <class Cell, class Ops>
void recurrence_forward(const ForwardArgs<typename Cell::Real>& p) {
  using Real = typename Cell::Real;
  using Packed = typename Ops::Packed;
  constexpr size_t MR = Tile<Real>::MR, NR = Tile<Real>::NR;
  constexpr size_t P = std::size(Cell::kPanels);
  static_assert(gates_apart<Cell>() != size_t(-1), "a cell's gates apart come last");
  const size_t T = p.T, B = p.B, I = p.I, H = p.H, K = I + H;

  const size_t block = block_elements<Cell, Ops>(I, H);
  const Packed* prepared = static_cast<const Packed*>(p.packed);
  Buffer<Real> folded_biases(p.panel_biases == nullptr ? P * H : 0);
  if (p.panel_biases == nullptr) fold_panel_biases<Cell>(H, p.b_ih, p.b_hh, folded_biases.data());
  const Real* biases = p.panel_biases != nullptr ? p.panel_biases : folded_biases.data();
  Cell::forward_begin(p);

  const size_t hidden_blocks = ceil_div(H, NR);
  const int nt = step_threads(p.threads, B, K, Cell::G * H, hidden_blocks);
  const size_t blocks_per_thread = ceil_div(hidden_blocks, nt);
  const size_t chunk = projected_steps(p);
  const bool split_rows = forward_splits_rows(p, nt, chunk, hidden_blocks * block * sizeof(Packed));
  if (prepared == nullptr)
    reserve_scratch(nt, kSlotRecurrent,
                    (split_rows ? hidden_blocks : blocks_per_thread) * block * sizeof(Packed));
  // The gate sums of one row panel of a block, (MR, P*NR), which every row
  // panel reuses while they are in L1 (sums for all B rows would be 53 KB a
  // block at the origin shape, more than L1 beside the weights and the
  // state). With projected inputs, a chunk's for every block of the thread.
  const size_t sums_rows = chunk != 0 ? blocks_per_thread * MR : MR;
  reserve_scratch(nt, kSlotTiles, sums_rows * P * NR * sizeof(Real));
  reserve_scratch(nt, kSlotPackA, chunk != 0 ? std::max(Ops::step_scratch(B, I, H),
                                                        Ops::input_scratch(MR, I))
                                             : Ops::step_scratch(B, I, H));

  auto task = [&](int tid, int n) {
    save_inputs(p, tid, n);
    // This thread's hidden blocks [hb0, hb1) of its rows [b0, b1).
    size_t hb0 = 0, hb1 = hidden_blocks, b0 = 0, b1 = B;
    if (split_rows) split_range(B, tid, n, b0, b1);
    else split_range(hidden_blocks, tid, n, hb0, hb1);
    Real* tiles = static_cast<Real*>(scratch(tid, kSlotTiles));
    const Packed* panel_weights[P];  // of the block being computed
    // This thread's blocks, hb0.. at w: packed once per call into its cache, or prepared.
    const Packed* w = prepared != nullptr ? prepared + hb0 * block : nullptr;
    if (w == nullptr) {
      Packed* own = static_cast<Packed*>(scratch(tid, kSlotRecurrent));
      for (size_t hb = hb0; hb < hb1; ++hb)
        pack_block<Cell, Ops>(WeightRows<Real>{p.w_ih, p.w_hh}, I, H, hb, own + (hb - hb0) * block);
      w = own;
    }
    // From a zero initial state the first step's h_{-1} W_hh^T adds exactly
    // +0 to every gate sum, as long as the weights are finite: that step then
    // multiplies x_t alone (1/T of the recurrent products; the origin shape's
    // bf16 inference took 0.96x the time). Weights holding NaN or Inf take the
    // product, whose NaN then reaches the outputs as in float32. Checking the
    // weights costs a pass over them, which a register tile of rows repays.
    // (vdpbf16ps flushes a subnormal partial sum to zero: a gate sum still
    // subnormal after x_t's terms keeps it here, the only bits that differ.)
    const size_t first_rows = split_rows ? b1 - b0 : step_batch(p, 0);
    const bool zero_start = chunk == 0 && first_rows >= MR &&
                            zero_state(p.h0, b0, b0 + first_rows, H) &&
                            Ops::finite(w, (hb1 - hb0) * block);
    alignas(64) Real edge_bias[P][NR];
    for (size_t t = 0; t < T; ++t) {
      // This thread's rows of step t: [b0, rows_end).
      const size_t row0 = step_offset(p, t), rows_end = split_rows ? b1 : step_batch(p, t);
      const size_t prev0 = t == 0 ? 0 : step_offset(p, t - 1);
      const Real* x_t = step_rows(p, p.x, t);
      Real* y_t = step_rows(p, p.y, t);
      const PreviousState<Real> h_prev = previous_state<Real>(p, t);
      const size_t t0 = chunk != 0 ? t - t % chunk : t;  // the chunk's first step
      if (chunk != 0 && t == t0)
        project_inputs<Cell, Ops>(p, t0, min_size(T, t0 + chunk), w, hb0, hb1,
                                  scratch(tid, kSlotPackA), tiles);
      // Those rows of [x_t | h_{t-1}] as this operand type's tiles read them
      // (projected: h_{t-1} alone).
      const auto step_inputs =
          Ops::step_inputs(rows_end - b0, chunk != 0 ? 0 : I, H, x_t + b0 * p.x.row, p.x.row,
                           h_prev.h + b0 * h_prev.row, h_prev.row, n > 1 && t > 0 && !split_rows,
                           scratch(tid, kSlotPackA));
      for (size_t i = hb0; i < hb1; ++i) {
        // Reading W_hh from L2 bounds a projected step: every other one runs its
        // blocks (and their panels) backwards, first through the weights still in L1.
        const size_t hb = chunk != 0 && t % 2 == 1 ? hb0 + hb1 - 1 - i : i;
        const size_t u0 = hb * NR, nu = min_size(NR, H - u0);
        Real* sums = chunk != 0
                         ? tiles + ((hb - hb0) * MR + row0 - step_offset(p, t0)) * P * NR
                         : tiles;
        const Real* bias[P];
        for (size_t pp = 0; pp < P; ++pp) {
          bias[pp] = biases + pp * H + u0;
          if (nu < NR) {
            StagedRow<Real>::stage(edge_bias[pp], bias[pp], nu);
            bias[pp] = edge_bias[pp];
          }
        }
        block_panels<Cell, Ops>(w + (hb - hb0) * block, I, H, panel_weights);
        // The cell on rows [r0, r0 + m) once their gate sums are complete, with
        // the IO type chosen once for the block rather than at every row. (Not
        // through a with_row_io that loops over rows: given the row as a
        // callback, GCC spilled the RNN's tanh constants to the stack and the
        // forward measured 3% slower.)
        auto update_rows = [&](size_t r0, size_t m) __attribute__((always_inline)) {
          auto update = [&](size_t b, auto& io) {
            const ForwardRow<Real> row{row0 + b, prev0 + b, b, u0, t == 0,
                                       h_prev.h + b * h_prev.row + u0, y_t + b * p.y.row + u0,
                                       sums + (b - r0) * P * NR, bias};
            Cell::forward_row(p, row, io);
          };
          if (nu == NR) {
            for (size_t b = r0; b < r0 + m; ++b) {
              InPlaceRow<Real> io;
              update(b, io);
            }
          } else {
            for (size_t b = r0; b < r0 + m; ++b) {
              StagedRow<Real> io(nu);
              update(b, io);
              io.finish();
            }
          }
        };
        auto update_rows_apart = [&](size_t r0, size_t m)
            __attribute__((noinline)) { update_rows(r0, m); };
        // One pass over K per row panel: the cell runs while the panel's sums are
        // hot. (Blocking K to keep a panel's weights in L1 measured slower at the
        // medium and large shapes, AVX2 and AVX-512 alike.)
        const RowPanels row_panels(rows_end - b0, MR);
        for (size_t i = 0; i < row_panels.count; ++i) {
          const size_t r0 = b0 + row_panels.first(i), m = row_panels.first(i + 1) + b0 - r0;
          // Consecutive panels that read the same inputs go through one call.
          for (size_t pp = 0; pp < P;) {
            const Reads reads = Cell::kPanels[pp].reads;
            size_t count = 1;
            while (pp + count < P && Cell::kPanels[pp + count].reads == reads) ++count;
            const size_t stride = panel_elements<Cell, Ops>(reads, I, H);
            Real* out = sums + pp * NR;
            if (chunk == 0)
              PanelProducts<Ops>::tile(
                  m, count,
                  step_inputs.rows(r0 - b0, reads != Reads::h,
                                   reads != Reads::x && !(t == 0 && zero_start)),
                  panel_weights[pp], stride, TileOut<Real>{out, P * NR, false});
            else if (reads != Reads::x)  // x's term is in the sums already
              PanelProducts<Ops>::recurrent_tile(
                  m, count, step_inputs, r0 - b0, reads == Reads::x_and_h ? I : 0,
                  panel_weights[pp], stride, TileOut<Real>{out, P * NR, reads != Reads::h},
                  t % 2 == 1);
            pp += count;
          }
          // (One row is not worth a call: batch 1 measured 3% slower.)
          if (Cell::kRowsApart && m > 1) update_rows_apart(r0, m);
          else update_rows(r0, m);
        }
      }
      if (!split_rows) parallel_barrier();
    }
    stream_fence();  // the streamed workspace, visible to whichever thread runs BPTT
  };
  run_parallel(nt, task);
  Cell::forward_end(p);
}

// BPTT through the forward's workspace, for t = T..1. At each step, for a
// thread's units, the cell turns dh_t (da_{t+1} W_hh, or dh_T) into da_t;
// then the thread adds its units' share of
//   [dW_ih | dW_hh] += [da_ih^T x_t | da_hh^T h_{t-1}],  db += sums of da_t over rows
// while da_t is in its cache, and after the loop dh0 (+)= da_1 W_hh and, when
// wanted, dx = da_ih W_ih in one GEMM.
template <class Cell, class Ops>
void recurrence_backward(const BackwardArgs<typename Cell::Real>& p) {
  using Real = typename Cell::Real;
  using Packed = typename Ops::Packed;
  constexpr size_t MR = Tile<Real>::MR, NR = Tile<Real>::NR, kPer = Ops::kPer;
  constexpr size_t G = Cell::G, E = gates_apart<Cell>();
  const size_t T = p.T, B = p.B, I = p.I, H = p.H;

  const size_t hidden_blocks = ceil_div(H, NR), Q = G * hidden_blocks;
  // da of every step is kept only for dx; otherwise steps t and t + 1 take turns.
  const bool keep_all = p.dx.data != nullptr;
  const size_t slabs = (keep_all ? total_rows(p) : 2 * B) * NR;
  auto da_rows = [&](size_t t) { return keep_all ? da_rows_of_step(p, t) : (t % 2) * B; };
  Buffer<Real> da_panels((G + E) * hidden_blocks * slabs);
  Real* da = da_panels.data();
  Real* da_hh = da + E * hidden_blocks * slabs;  // the W_hh side's groups
  // da as the products read it (itself, or a rounded mirror of it); in its
  // elements, the slabs are slabs / kPer apart.
  Buffer<Packed> da_mirror(Ops::da_size((G + E) * hidden_blocks * slabs));
  const Packed* da_read = Ops::da_operand(da, da_mirror.data());
  const Packed* da_hh_read = da_read + E * hidden_blocks * slabs / kPer;
  // [dW_ih | dW_hh]^T and db in the padded unit order, summed step by step.
  Buffer<Real> dw_transposed((I + H) * Q * NR), db_hh_padded(Q * NR), db_ih_padded(E ? Q * NR : 0);
  Cell::backward_begin(p);
  const int nt = step_threads(p.threads, B, G * H, H, hidden_blocks);
  const size_t w_block = Ops::rows(Q * NR) * NR;  // a hidden block's packed W_hh
  const size_t blocks_per_thread = ceil_div(hidden_blocks, nt);
  reserve_scratch(nt, kSlotRecurrent, blocks_per_thread * w_block * sizeof(Packed));
  reserve_scratch(nt, kSlotPackA, Ops::step_inputs_size(B, I, H) * sizeof(Packed));
  reserve_scratch(nt, kSlotPackB, Ops::grad_panels_size(B, blocks_per_thread) * sizeof(Packed));

  auto task = [&](int tid, int n) {
    size_t hb0, hb1;
    split_range(hidden_blocks, tid, n, hb0, hb1);
    Packed* w = static_cast<Packed*>(scratch(tid, kSlotRecurrent));
    Packed* inputs = static_cast<Packed*>(scratch(tid, kSlotPackA));
    Packed* grad_panels = static_cast<Packed*>(scratch(tid, kSlotPackB));
    for (size_t hb = hb0; hb < hb1; ++hb)  // B (k, u) = w_hh[k, u], k in unit-panel order
      Ops::pack_unit_weights(G, H, p.w_hh, H, hb * NR, min_size(NR, H - hb * NR),
                             w + (hb - hb0) * w_block);
    alignas(64) Real tile[MR * NR];
    for (size_t t = T; t-- > 0;) {
      const size_t Bt = step_batch(p, t), row0 = step_offset(p, t);
      const size_t prev0 = t == 0 ? 0 : step_offset(p, t - 1);
      // Rows below `carried` go on to step t + 1 and take dh from da_{t+1};
      // the others end at t and start from dh_T.
      const size_t carried = step_batch(p, t + 1);
      const PreviousState<Real> h_prev = previous_state<Real>(p, t);
      const Real* y_t = step_rows(p, p.y, t);
      const Real* dy_t = p.dy.data != nullptr ? step_rows(p, p.dy, t) : nullptr;
      for (size_t hb = hb0; hb < hb1; ++hb) {
        const size_t u0 = hb * NR, nu = min_size(NR, H - u0);
        for (size_t r0 = 0; r0 < Bt; r0 += MR) {
          const size_t m = min_size(MR, Bt - r0);
          const size_t from_next = carried > r0 ? min_size(m, carried - r0) : 0;
          if (from_next > 0)
            panels_tile(from_next, Q, da_hh_read + (da_rows(t + 1) + r0) * NR / kPer,
                        slabs / kPer, w + (hb - hb0) * w_block, TileOut<Real>{tile, NR, false});
          for (size_t r = from_next; r < m; ++r)
            StagedRow<Real>::stage(tile + r * NR, p.dhT + (r0 + r) * H + u0, nu);
          for (size_t r = 0; r < m; ++r) {
            const size_t b = r0 + r;
            Real* da_out[G + E];
            for (size_t group = 0; group < G + E; ++group)
              da_out[group] = da + (group * hidden_blocks + hb) * slabs + (da_rows(t) + b) * NR;
            const BackwardRow<Real> row{
                row0 + b, prev0 + b, b, u0, t == 0, h_prev.h + b * h_prev.row + u0,
                y_t + b * p.y.row + u0, dy_t != nullptr ? dy_t + b * p.dy.row + u0 : nullptr,
                tile + r * NR, da_out};
            with_row_io<Real>(nu, [&](auto& io) { Cell::backward_row(p, row, io); });
          }
        }
      }
      // This thread's units of da_t are complete: rounded for the products that
      // read them (another operand type than the native one), and their share
      // of the weight gradients now, while they are in cache.
      for (size_t group = 0; group < G + E; ++group)
        for (size_t hb = hb0; hb < hb1; ++hb) {
          const size_t at = (group * hidden_blocks + hb) * slabs + da_rows(t) * NR;
          Ops::round_da(Bt * NR, da + at, da_mirror.data() + at / kPer);
        }
      Ops::pack_step_inputs(Bt, I, H, p.x_saved + row0 * I, h_prev.h, h_prev.row, inputs);
      const size_t panel0 = da_rows(t) * NR;
      for (size_t gate = 0; gate < G; ++gate) {
        // The W_ih side reads gate g from group E + g, or, for its last E
        // (input-only) gates, from group g - (G - E).
        const size_t ih_group = gate + E < G ? E + gate : gate + E - G;
        const size_t q0 = gate * hidden_blocks + hb0;
        const bool shared = ih_group == E + gate;
        step_weight_grads<Ops>(Bt, I, H, inputs,
                               da + (ih_group * hidden_blocks + hb0) * slabs + panel0,
                               da_hh + q0 * slabs + panel0, slabs, hb1 - hb0,
                               dw_transposed.data() + q0 * NR, Q * NR,
                               shared ? nullptr : db_ih_padded.data() + q0 * NR,
                               db_hh_padded.data() + q0 * NR, t + 1 < T, grad_panels);
      }
      parallel_barrier();
    }
    initial_state_grad(B, H, Q, da_hh_read + da_rows(0) * NR / kPer, slabs / kPer, w, w_block,
                       hb0, hb1, p.dh0,
                       Cell::kCarriesDh);
  };
  run_parallel(nt, task);

  const Bf16Pair* da_rounded = nullptr;
  if constexpr (std::is_same_v<Packed, Bf16Pair>) da_rounded = da_mirror.data();
  bptt_parameter_grads(p, da, da_rounded, slabs, G, E, dw_transposed.data(),
                       db_hh_padded.data(), E ? db_ih_padded.data() : nullptr);
}

// Defines name_forward and name_backward of a cell for both dtypes; float32's
// run on bfloat16 operands when p.precision asks.
#define FASTRNN_DEFINE_CELL_KERNELS(name, CellTemplate)                                   \
  template <class Real>                                                                   \
  void name##_forward(const ForwardArgs<Real>& p) {                                       \
    if constexpr (std::is_same_v<Real, float>) {                                          \
      if (p.precision == Precision::bf16)                                                 \
        return recurrence_forward<CellTemplate<float>, Bf16Operands>(p);                  \
      if (p.precision == Precision::int8)                                                 \
        return recurrence_forward<CellTemplate<float>, Int8Operands>(p);                  \
    }                                                                                     \
    recurrence_forward<CellTemplate<Real>, NativeOperands<Real>>(p);                      \
  }                                                                                       \
  template <class Real>                                                                   \
  void name##_pack(const PackArgs<Real>& a) {                                             \
    if constexpr (std::is_same_v<Real, float>) {                                          \
      if (a.precision == Precision::bf16)                                                 \
        return pack_frozen_weights<CellTemplate<float>, Bf16Operands>(a);                 \
      if (a.precision == Precision::int8)                                                 \
        return pack_frozen_weights<CellTemplate<float>, Int8Operands>(a);                 \
    }                                                                                     \
    pack_frozen_weights<CellTemplate<Real>, NativeOperands<Real>>(a);                     \
  }                                                                                       \
  template <class Real>                                                                   \
  void name##_backward(const BackwardArgs<Real>& p) {                                     \
    if constexpr (std::is_same_v<Real, float>)                                            \
      if (p.precision == Precision::bf16)                                                 \
        return recurrence_backward<CellTemplate<float>, Bf16Operands>(p);                 \
    recurrence_backward<CellTemplate<Real>, NativeOperands<Real>>(p);                     \
  }                                                                                       \
  template void name##_forward<float>(const ForwardArgs<float>&);                         \
  template void name##_forward<double>(const ForwardArgs<double>&);                       \
  template void name##_backward<float>(const BackwardArgs<float>&);                       \
  template void name##_backward<double>(const BackwardArgs<double>&);                     \
  template void name##_pack<float>(const PackArgs<float>&);                               \
  template void name##_pack<double>(const PackArgs<double>&);

}  // namespace FASTRNN_ISA_NS
}  // namespace fastrnn
