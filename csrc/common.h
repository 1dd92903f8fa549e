// Shared by every translation unit of fastrnn._core.
//
// Sizes legend (single capitals everywhere, as in fastrnn/_reference.py):
//   T time steps, B batch, I input size, H hidden size, G gates (1 for the
//   RNN; 4 for the LSTM, gate order i, f, g, o; 3 for the GRU, order r, z, n).
// The driver's own letters (recurrence.h, gemm.h): MR x NR the register tile,
// HB = ceil(H/NR) blocks of hidden units, Q = G*HB unit panels, P gate panels
// per block, E the gates whose input and recurrent sums stay apart; a SIMD
// vector holds kLanes values.
// Kernels are time-major: x (T, B, I), y (T, B, H), each read and written
// through strides (StepArray below). Weights use torch's layout: w_ih (G*H, I),
// w_hh (G*H, H). Every index and size is size_t (strides ptrdiff_t), so
// T*B*G*H beyond 2^31 cannot overflow.
//
// The first half of this file is ISA-independent (plain structs, no inline
// code). The second half, compiled only into the kernel copies, lives inside
// the namespace of the ISA being compiled (FASTRNN_ISA_NS): inline functions
// shared by copies built with different -m flags would otherwise be merged by
// the linker, and AVX2 code could end up in the generic path.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "cells.h"

namespace fastrnn {

// The operands of a recurrent kernel's matrix products: as the arrays are, or
// rounded to bfloat16 and summed in float32 (float32 arrays only; see
// fastrnn/_reference.py), or int8 codes with int32 sums (frozen float32
// models' forward only, from weights packed once; see fastrnn/_quantize.py).
enum class Precision { fp32, bf16, int8 };

// A per-step array of the caller (x, y; dy and dx in backward), (T, B, n)
// with its n values of a row adjacent: step t's row b is at
//   data + t*step + b*row   (elements),
// t counted in the order the recurrence runs. A C-order (T, B, n) array has
// step = B*n, row = n; a batch-first (B, T, n) one transposed, step = n,
// row = T*n; one half of a (T, B, 2H) output, step = 2B*H, row = 2H. A
// reverse run (reverse=True) points data at time T-1 and steps back through
// a negative step: the kernels read x backwards in time and write y in x's
// order, and nothing is copied. A packed batch (offsets below) has its step t
// at rows [offsets[t], offsets[t+1]): row r at data + r*row; step is unused.
template <class Ptr>
struct StepArray {
  Ptr data;
  ptrdiff_t step;
  size_t row;
};

// Arguments of a forward kernel.
// b_ih and b_hh (G*H,) are torch's two biases; the driver folds them once per
// call where a cell sums them (recurrence.h, fold_panel_biases).
// c0 and cT are the LSTM's cell state (B, H), null for the other cells.
// saved is the cell's workspace for BPTT (saved_per_unit values per (t, b)
// row and unit, laid out as its cell file says) and x_saved (T, B, I) a
// contiguous copy of x in the order the recurrence read it; both null when
// not training.
// offsets, when not null, makes the batch a packed one (sequences of
// different lengths, rows sorted longest first): step t runs rows [0, n_t)
// with n_t = offsets[t+1] - offsets[t] non-increasing, n_0 = B, and every
// per-step array (x, y, the workspace; dy and dx in backward) holds step t's
// rows at rows [offsets[t], offsets[t+1]) of an (offsets[T], .) array; x is
// then contiguous (x.row = I). cT holds each row's state after its own last
// step. Packed batches run forward in time only (the layer reverses each
// sequence within its length itself).
template <class Real>
struct ForwardArgs {
  size_t T, B, I, H;
  const size_t* offsets;
  StepArray<const Real*> x;
  const Real* h0;
  const Real* c0;
  const Real* w_ih;
  const Real* w_hh;
  const Real* b_ih;
  const Real* b_hh;
  StepArray<Real*> y;
  Real* cT;
  Real* saved;
  Real* x_saved;
  int threads;
  Precision precision = Precision::fp32;
  // A frozen model's weights, prepared once (PackArgs): when not null the
  // forward reads its panels here and its biases from panel_biases, and
  // w_ih, w_hh, b_ih and b_hh go unread.
  const void* packed = nullptr;
  const Real* panel_biases = nullptr;
};

// A frozen model's weights prepared once for its forwards: the panels of every
// block of units, as a forward would pack them per call, and the bias row of
// every gate panel (P*H). Weights are w_ih, w_hh for precision fp32 and bf16,
// and for int8 their codes q_ih (G*H, I), q_hh (G*H, H) with a scale per row,
// s_ih and s_hh (G*H,). b_ih and b_hh as in ForwardArgs. With packed and
// panel_biases null, only the sizes are written: packed_bytes and the number
// of panel biases.
template <class Real>
struct PackArgs {
  size_t I, H;
  Precision precision;
  const Real* w_ih;
  const Real* w_hh;
  const int8_t* q_ih;
  const int8_t* q_hh;
  const float* s_ih;
  const float* s_hh;
  const Real* b_ih;
  const Real* b_hh;
  void* packed;
  Real* panel_biases;
  size_t* packed_bytes;
  size_t* bias_count;
};

// Arguments of a backward kernel. y is the forward's output (BPTT reads h_t
// and h_{t-1} from it), dy its gradient or null data (no loss on y), both
// with the forward's strides and direction; dx is null data when the input
// gradient is not wanted, else a C-order (T, B, I) array whose step is
// negative (data at time T-1) for a reverse run; the c* entries are
// LSTM-only. BPTT reads x from x_saved, the forward's contiguous copy, and the
// cell's workspace from saved. db_ih and db_hh differ only in the gates whose
// two sums stay apart (the GRU's n). offsets as in ForwardArgs: dhT (and dcT)
// is then the gradient of each row's last state.
template <class Real>
struct BackwardArgs {
  size_t T, B, I, H;
  const size_t* offsets;
  const Real* h0;
  const Real* c0;
  const Real* w_ih;
  const Real* w_hh;
  StepArray<const Real*> y;
  StepArray<const Real*> dy;
  const Real* dhT;
  const Real* dcT;
  const Real* saved;
  const Real* x_saved;
  StepArray<Real*> dx;
  Real* dh0;
  Real* dc0;
  Real* dw_ih;
  Real* dw_hh;
  Real* db_ih;
  Real* db_hh;
  int threads;
  Precision precision = Precision::fp32;
};

// What the binding and the kernels both know of each cell (cells.h).
struct CellTraits {
  const char* name;
  size_t G;
  size_t saved_per_unit;
  bool cell_state;  // c0, cT, dcT, dc0 (the LSTM)
};

namespace cells {
#define FASTRNN_CELL_TRAITS(name, G, saved_per_unit, cell_state) \
  inline constexpr CellTraits name{#name, G, saved_per_unit, cell_state};
FASTRNN_CELLS(FASTRNN_CELL_TRAITS)
#undef FASTRNN_CELL_TRAITS
}  // namespace cells

// Every cell's traits, in the order of the list: a cell's index here is its
// index in KernelTable::cells.
#define FASTRNN_CELL_TRAITS_ENTRY(name, ...) cells::name,
inline constexpr CellTraits kCells[] = {FASTRNN_CELLS(FASTRNN_CELL_TRAITS_ENTRY)};
#undef FASTRNN_CELL_TRAITS_ENTRY
constexpr size_t kCellCount = sizeof(kCells) / sizeof(kCells[0]);

// One step of Adam on one parameter array p with gradient g and moments m,
// v (n elements each, g overlapping none of the others); the scalars are
// already in the parameter's precision.
template <class Real>
struct AdamArgs {
  Real* p;
  const Real* g;
  Real* m;
  Real* v;
  size_t n;
  Real one_minus_beta1, beta2, one_minus_beta2, bias_correction2_sqrt, eps, minus_step_size;
};

// The classifier head: h (B, H), w (C, H), bias (C,), labels (B,) in [0, C)
// -> the mean cross-entropy, predicted classes (B,), dh (B, H), dw (C, H), db (C,).
template <class Real>
struct HeadArgs {
  size_t B, H, C;
  const Real* h;
  const Real* w;
  const Real* bias;
  const int64_t* labels;
  double* loss;
  int64_t* predictions;
  Real* dh;
  Real* dw;
  Real* db;
};

// A cell's kernels in one precision: forward, backward, and the packing of a
// frozen model's weights (PackArgs).
template <class Real>
struct CellKernels {
  void (*forward)(const ForwardArgs<Real>&);
  void (*backward)(const BackwardArgs<Real>&);
  void (*pack)(const PackArgs<Real>&);
};

// The compiled kernels besides the cells': X(name, Args) for a kernel taking
// Args<Real>. The table, its declarations and its filling come from this list
// and from the list of cells.
#define FASTRNN_KERNELS(X) \
  X(adam_update, AdamArgs) \
  X(classifier_head, HeadArgs)

// One ISA's compiled kernels, a float32 and a float64 entry each; dispatch.cc
// picks the table.
struct KernelTable {
  const char* isa;
  const char* bf16_products;  // what precision "bf16" runs on: "avx512_bf16" or "portable"
  CellKernels<float> cells_f32[kCellCount];
  CellKernels<double> cells_f64[kCellCount];
#define FASTRNN_TABLE_ENTRY(name, Args) \
  void (*name##_f32)(const Args<float>&); \
  void (*name##_f64)(const Args<double>&);
  FASTRNN_KERNELS(FASTRNN_TABLE_ENTRY)
#undef FASTRNN_TABLE_ENTRY
};

}  // namespace fastrnn

#ifdef FASTRNN_ISA_NS

#if !defined(__GNUC__)
#error "fastrnn kernels use GCC/Clang vector extensions (portable across x86-64 and aarch64)"
#endif

#include <cmath>
#include <utility>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

namespace fastrnn {
namespace FASTRNN_ISA_NS {

// Vector width of this copy: 64 bytes with AVX-512, 32 with AVX2, else 16
// (SSE2 on x86-64, NEON on aarch64). GCC vector extensions keep one source
// for every width; the compiler emits the instructions its -m flags allow.
#if defined(__AVX512F__)
constexpr size_t kVecBytes = 64;
#elif defined(__AVX2__)
constexpr size_t kVecBytes = 32;
#else
constexpr size_t kVecBytes = 16;
#endif

template <class Real>
struct Simd;

template <>
struct Simd<float> {
  typedef float V __attribute__((vector_size(kVecBytes)));
  static constexpr size_t kLanes = kVecBytes / sizeof(float);
};

template <>
struct Simd<double> {
  typedef double V __attribute__((vector_size(kVecBytes)));
  static constexpr size_t kLanes = kVecBytes / sizeof(double);
};

// memcpy compiles to one unaligned vector move and keeps strict aliasing happy.
template <class V, class Real>
inline V vload(const Real* p) {
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <class V, class Real>
inline void vstore(Real* p, V v) {
  std::memcpy(p, &v, sizeof v);
}

// Stores a vector that nothing reads again soon (the LSTM gates saved for
// BPTT), past the caches where the ISA can: a plain store to a cold line first
// reads the line in, which here doubles the memory traffic. Aligned addresses
// only; others take vstore. Threads that stream must stream_fence() before
// their work is handed on: streaming stores are not ordered with the rest.
template <class V, class Real>
inline void vstream(Real* p, V v) {
#if defined(__SSE2__)
  if (reinterpret_cast<uintptr_t>(p) % sizeof(V) == 0) {
    if constexpr (sizeof(Real) == 4) {
#if defined(__AVX512F__)
      _mm512_stream_ps(reinterpret_cast<float*>(p), reinterpret_cast<__m512>(v));
#elif defined(__AVX__)
      _mm256_stream_ps(reinterpret_cast<float*>(p), reinterpret_cast<__m256>(v));
#else
      _mm_stream_ps(reinterpret_cast<float*>(p), reinterpret_cast<__m128>(v));
#endif
    } else {
#if defined(__AVX512F__)
      _mm512_stream_pd(reinterpret_cast<double*>(p), reinterpret_cast<__m512d>(v));
#elif defined(__AVX__)
      _mm256_stream_pd(reinterpret_cast<double*>(p), reinterpret_cast<__m256d>(v));
#else
      _mm_stream_pd(reinterpret_cast<double*>(p), reinterpret_cast<__m128d>(v));
#endif
    }
    return;
  }
#endif
  vstore(p, v);
}

inline void stream_fence() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

// All lanes = s. Spelled as an initializer list of kLanes copies, which compilers
// turn into one broadcast; a lane-by-lane loop becomes a chain of inserts,
// and V{} + s keeps a scalar add for the sake of -0.0.
template <class V, class Real, size_t... Lane>
inline V broadcast_lanes(Real s, std::index_sequence<Lane...>) {
  return V{((void)Lane, s)...};
}

template <class V, class Real>
inline V broadcast(Real s) {
  return broadcast_lanes<V>(s, std::make_index_sequence<sizeof(V) / sizeof(Real)>{});
}

inline size_t min_size(size_t a, size_t b) { return a < b ? a : b; }
inline size_t ceil_div(size_t a, size_t b) { return (a + b - 1) / b; }

// ---------------------------------------------------------------- activations
// Scalar forms: exact library calls, used by float64 and as the definition.
template <class Real>
inline Real sigmoid_scalar(Real a) {
  // Split by sign so exp never overflows, as the reference does.
  Real e = std::exp(-std::fabs(a));
  return a >= 0 ? Real(1) / (Real(1) + e) : e / (Real(1) + e);
}

template <class Real>
inline Real tanh_scalar(Real a) {
  return std::tanh(a);
}

// Vector forms. float32 uses a polynomial exp: inputs are clamped first, so
// |a| of 1e4 or 1e30 saturates to exactly 0 or 1 and never makes inf/inf = NaN.
// float64 calls the library per lane: correctness first, it is not a fast path.
template <class Real>
struct Act;

// The activation a gate takes (Act::activate).
enum class Fn { sigmoid, tanh };

template <>
struct Act<float> {
  using S = Simd<float>;
  using V = S::V;
  typedef uint32_t VU __attribute__((vector_size(kVecBytes)));

  // exp(x) = 2^n * p(r), n = round(x / ln 2), |r| <= ln2 / 2, p of degree 6
  // fitted for the least largest relative error over that interval: about 1
  // ulp, as with Cephes's degree 7 it replaced, for one FMA less (largest
  // error against float64 over [-30, 30], sigmoid's relative and tanh's
  // absolute: 1.8e-7 with either). x is first clamped to [-88, 89], where n
  // runs from -127 to 128: there the exponent field n + 127 reaches 0 or 255,
  // so 2^n itself becomes exactly 0 or inf. Beyond about -87.7 and 88.4 the
  // result is thus exactly 0 or inf with no extra select: a saturated sigmoid
  // is exactly 0 or 1 and its derivative exactly 0 (no tiny gradient times a
  // huge x). NaN passes through the clamp and stays NaN.
  //
  // Each of N vectors, in place, one step at a time across all of them: one
  // exp is a chain of a dozen dependent operations, and a cell that took its
  // gates one after another left the FP pipes half idle. The same operations
  // on each value as one at a time, so the same bits.
  template <size_t N>
  static inline void exp(V (&x)[N]) {
    // Round to nearest by adding 1.5 * 2^23 + 127: n + 127 lands in the low
    // mantissa bits, and shifting them into the exponent field gives 2^n.
    const float magic = 12582912.0f + 127.0f;
    V shifted[N], r[N], p[N];
    for (size_t j = 0; j < N; ++j) x[j] = clamp_keeping_nan(x[j], -88.0f, 89.0f);
    for (size_t j = 0; j < N; ++j) shifted[j] = x[j] * 1.44269504088896341f + magic;
    for (size_t j = 0; j < N; ++j) {
      const V n = shifted[j] - magic;
      r[j] = x[j] - n * 0.693145751953125f;  // ln 2 split in two for exactness
      r[j] = r[j] - n * 1.428606765330187045e-06f;
    }
    for (size_t j = 0; j < N; ++j) p[j] = r[j] * 1.3814611593e-3f + 8.3687100559e-3f;
    for (size_t j = 0; j < N; ++j) p[j] = p[j] * r[j] + 4.1668388991e-2f;
    for (size_t j = 0; j < N; ++j) p[j] = p[j] * r[j] + 1.6666521132e-1f;
    for (size_t j = 0; j < N; ++j) p[j] = p[j] * r[j] + 4.9999994040e-1f;
    for (size_t j = 0; j < N; ++j) p[j] = p[j] * r[j] * r[j] + r[j] + 1.0f;
    for (size_t j = 0; j < N; ++j) x[j] = p[j] * (V)((VU)shifted[j] << 23);
  }

  // fn[g] of the N vectors of each of G gates, in place, side by side (see
  // exp): sigmoid(a) = 1 / (1 + exp(-a)), tanh(a) = 1 - 2 / (exp(2a) + 1),
  // the latter exact 0 at a = 0, |error| ~1e-7 absolute.
  template <size_t G, size_t N>
  static inline void activate(V (&a)[G][N], const Fn (&fn)[G]) {
    V e[G * N];
    for (size_t g = 0; g < G; ++g)
      for (size_t j = 0; j < N; ++j) e[g * N + j] = fn[g] == Fn::tanh ? a[g][j] + a[g][j] : -a[g][j];
    exp(e);
    for (size_t g = 0; g < G; ++g)
      for (size_t j = 0; j < N; ++j)
        a[g][j] = fn[g] == Fn::tanh ? 1.0f - 2.0f / (e[g * N + j] + 1.0f)
                                    : 1.0f / (1.0f + e[g * N + j]);
  }

  // min(max(x, lo), hi), x where it is NaN. The ternaries' compare and blend
  // per bound cost the LSTM's elementwise step 15%: MAXPS and MINPS return
  // their second operand when either is NaN, so x goes second.
  static inline V clamp_keeping_nan(V x, float lo, float hi) {
#if defined(__AVX512F__)
    x = (V)_mm512_max_ps(_mm512_set1_ps(lo), (__m512)x);
    return (V)_mm512_min_ps(_mm512_set1_ps(hi), (__m512)x);
#elif defined(__AVX__)
    x = (V)_mm256_max_ps(_mm256_set1_ps(lo), (__m256)x);
    return (V)_mm256_min_ps(_mm256_set1_ps(hi), (__m256)x);
#elif defined(__SSE2__)
    x = (V)_mm_max_ps(_mm_set1_ps(lo), (__m128)x);
    return (V)_mm_min_ps(_mm_set1_ps(hi), (__m128)x);
#else
    x = x < lo ? V{} + lo : x;
    return x > hi ? V{} + hi : x;
#endif
  }
};

template <>
struct Act<double> {
  using V = Simd<double>::V;
  static constexpr size_t kLanes = Simd<double>::kLanes;

  template <size_t G, size_t N>
  static inline void activate(V (&a)[G][N], const Fn (&fn)[G]) {
    for (size_t g = 0; g < G; ++g)
      for (size_t j = 0; j < N; ++j)
        for (size_t l = 0; l < kLanes; ++l)
          a[g][j][l] = fn[g] == Fn::tanh ? tanh_scalar(a[g][j][l]) : sigmoid_scalar(a[g][j][l]);
  }
};

}  // namespace FASTRNN_ISA_NS
}  // namespace fastrnn

#endif  // FASTRNN_ISA_NS
