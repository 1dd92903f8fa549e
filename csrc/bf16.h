// bfloat16 operands: the rounding, the pair layout the products read, and the
// product of a pair, on AVX512_BF16 (vdpbf16ps) or portably.
//
// precision "bf16" (fastrnn/_reference.py's contract): every matrix product
// takes both operands rounded to bfloat16 and sums in float32. The tiles of
// gemm.h run unchanged on elements that are PAIRS of bfloat16 along k: a
// 32-bit Bf16Pair holds k = 2j in its low half and k = 2j + 1 in its high
// half. So an A row that is k-contiguous bfloat16 (the rounded [x_t | h_{t-1}]
// of a forward step, BPTT's rounded da slabs) is read in place, one pair at a
// time, and a B panel row holds, for each of its NR columns, the pair of k it
// multiplies: element (k, j) at panel[(k/2)*NR + j], half k%2. That is what
// vdpbf16ps takes (each fp32 lane j adds a.lo*b.lo + a.hi*b.hi), and also the
// B tile layout of AMX's tdpbf16ps (rows of pairs, 16 columns of 64 bytes):
// an NR = 32 panel is two AMX tiles side by side, the A rows an A tile.
//
// The rounding is integer arithmetic on the float32 bits, the same on every
// ISA, and gives the bits AVX512_BF16's vcvtneps2bf16 gives (checked on a
// Sapphire Rapids for NaN, Inf, overflow, ties and subnormals, and for all
// 2^32 inputs on a Zen 5): nearest, ties to even; NaN quiet with its sign;
// subnormals to a zero of their sign. Where the CPU has that instruction,
// vectors are rounded by it.
//
// The product of a pair: vdpbf16ps adds the high halves' product, then the low
// halves' (each rounded once; bfloat16 products are exact in float32). The
// portable path does exactly that with float32 arithmetic, so both give the
// same bits except where vdpbf16ps flushes a subnormal partial sum to zero.
// The amx_bf16 copy multiplies whole register tiles on AMX (gemm_amx.cc),
// summing in the tile unit's own order.
#pragma once

#include "gemm.h"

namespace fastrnn {
namespace FASTRNN_ISA_NS {

// Two bfloat16 along k: k even in bits 0-15, k odd in bits 16-31. Read and
// written through memcpy only (it also aliases rows of uint16_t).
enum class Bf16Pair : uint32_t {};

struct Bf16 {
  typedef uint32_t VU __attribute__((vector_size(kVecBytes)));
  static constexpr size_t kLanes = Simd<float>::kLanes;
  typedef uint16_t VH __attribute__((vector_size(kVecBytes / 2)));  // kLanes halves

  // float32 bits -> the bfloat16 rounding in the high half, low half zero.
  static inline VU round(VU b) {
    const VU nan = (VU)((b & 0x7FFFFFFFu) > 0x7F800000u);
    const VU subnormal = (VU)((b & 0x7F800000u) == 0u);
    const VU nearest = b + (0x7FFFu + ((b >> 16) & 1u));
    const VU kept = (nan & (b | 0x00400000u)) | (subnormal & (b & 0x80000000u)) |
                    (~(nan | subnormal) & nearest);
    return kept & 0xFFFF0000u;
  }
  static inline uint32_t round(uint32_t b) {
    if ((b & 0x7FFFFFFFu) > 0x7F800000u) return (b | 0x00400000u) & 0xFFFF0000u;
    if ((b & 0x7F800000u) == 0) return b & 0x80000000u;
    return (b + 0x7FFFu + ((b >> 16) & 1u)) & 0xFFFF0000u;
  }
  static inline uint32_t bits(float f) {
    uint32_t b;
    std::memcpy(&b, &f, sizeof b);
    return b;
  }
  static inline uint16_t half(float f) { return uint16_t(round(bits(f)) >> 16); }

  // The bfloat16 of kLanes float32 bits, as 16-bit halves: round()'s bits,
  // in one instruction on AVX512_BF16.
  static inline VH halves(VU b) {
#if defined(__AVX512BF16__)
    return (VH)_mm512_cvtneps_pbh((__m512)b);
#else
    return __builtin_convertvector(round(b) >> 16, VH);
#endif
  }
  // Pairs of lanes of two float32 vectors: (even[j], odd[j]) in word j.
  static inline VU pairs(VU even, VU odd) {
    return (__builtin_convertvector(halves(odd), VU) << 16) |
           __builtin_convertvector(halves(even), VU);
  }
  static inline Bf16Pair pair(float even, float odd) {
    return Bf16Pair(round(bits(odd)) | (round(bits(even)) >> 16));
  }
};

// dst[0, n) = the bfloat16 of src[0, n), and dst[n] = 0 when n is odd (the
// high half of the last pair): a k-contiguous row as the tiles read it.
inline void round_row(size_t n, const float* src, uint16_t* dst) {
  constexpr size_t kLanes = Bf16::kLanes;
  size_t k = 0;
  for (; k + kLanes <= n; k += kLanes) {
    vstore(dst + k, Bf16::halves(vload<Bf16::VU>(src + k)));
  }
#if defined(__AVX512BW__)
  // The last partial vector under a mask: a row of 28 inputs (the origin
  // shape's x_t, rounded at every step) is otherwise 12 scalar roundings.
  if (k < n) {
    const __mmask16 lanes = __mmask16((1u << (n - k)) - 1);
    const Bf16::VH h = Bf16::halves((Bf16::VU)_mm512_maskz_loadu_ps(lanes, src + k));
    _mm256_mask_storeu_epi16(dst + k, lanes, (__m256i)h);
  }
#else
  for (; k < n; ++k) dst[k] = Bf16::half(src[k]);
#endif
  if (n % 2) dst[n] = 0;
}

// Words in a row of K bfloat16: a row of pairs, the last one zero-padded.
inline size_t pair_count(size_t K) { return (K + 1) / 2; }

// A row of K bfloat16 padded to whole pairs, as Bf16Pair elements.
inline const Bf16Pair* as_pairs(const uint16_t* row) {
  return reinterpret_cast<const Bf16Pair*>(row);
}

#if defined(__AMX_BF16__)
// A whole register tile on AMX, where the layouts allow (gemm_amx.cc): false
// leaves it to the vector products below.
bool amx_tile(size_t M, size_t P, ALayout layout, size_t K1, const Bf16Pair* a, size_t lda,
              size_t K2, const Bf16Pair* b, size_t panel_stride, float* out, size_t ldt,
              bool add);
#endif

template <>
struct Products<float, Bf16Pair> {
  using V = Simd<float>::V;
  using BV = Bf16::VU;
  static constexpr size_t kPerElement = 2;
#if defined(__AMX_BF16__)
  static constexpr bool kWholeTiles = true;
  static bool whole_tile(size_t M, size_t P, ALayout layout, size_t K1, const Bf16Pair* a,
                         size_t lda, size_t K2, const Bf16Pair* b, size_t panel_stride,
                         float* out, size_t ldt, bool add) {
    return amx_tile(M, P, layout, K1, a, lda, K2, b, panel_stride, out, ldt, add);
  }
#else
  static constexpr bool kWholeTiles = false;
#endif
  static BV broadcast_a(const Bf16Pair* a) {
    uint32_t w;
    std::memcpy(&w, a, sizeof w);
    return broadcast<BV>(w);
  }
  static BV load_b(const Bf16Pair* b) { return vload<BV>(b); }
#if defined(__AVX512BF16__)
  static void madd(V& acc, BV a, BV b) {
    acc = (V)_mm512_dpbf16_ps((__m512)acc, (__m512bh)a, (__m512bh)b);
  }
#else
  // vdpbf16ps's order: the high halves' product first, each sum rounded.
  static void madd(V& acc, BV a, BV b) {
    acc += (V)(a & 0xFFFF0000u) * (V)(b & 0xFFFF0000u);
    acc += (V)(a << 16) * (V)(b << 16);
  }
#endif
};

// Which products this copy's bf16 kernels run (fastrnn.info()).
#if defined(__AMX_BF16__)
constexpr const char* kBf16Products = "amx_bf16";
#elif defined(__AVX512BF16__)
constexpr const char* kBf16Products = "avx512_bf16";
#else
constexpr const char* kBf16Products = "portable";
#endif

// ----------------------------------------------------------------- packing

// Forward weight panels: out[(k/2)*NR + j] = the pair (w[j*ldw + k], w[j*ldw
// + k + 1]) for j < n units, k < K (k = K zero when K is odd), columns n..NR-1
// zero. Eight units' rows at a time are rounded into pairs, then dealt out by
// 8x8 transposes of the 32-bit pairs: a 4-byte store per pair took 2.6% of
// the origin shape's bf16 inference, which packs its weights at every call.
inline void pack_weight_pairs(size_t n, size_t K, const float* w, size_t ldw, Bf16Pair* out) {
  constexpr size_t NR = Tile<float>::NR, W = Square<float>::W, kPiece = 256;  // pairs
  const size_t KP = pair_count(K);
  std::memset(static_cast<void*>(out), 0, KP * NR * sizeof(Bf16Pair));
  uint16_t rows[W][2 * kPiece];  // W units' rounded rows over one piece of k
  for (size_t j0 = 0; j0 < n; j0 += W) {
    const size_t units = min_size(W, n - j0);
    for (size_t kp0 = 0; kp0 < KP; kp0 += kPiece) {  // a row in stack-sized pieces
      const size_t pairs = min_size(kPiece, KP - kp0), k0 = 2 * kp0;
      for (size_t j = 0; j < W; ++j) {
        if (j < units) round_row(min_size(K, k0 + 2 * pairs) - k0, w + (j0 + j) * ldw + k0, rows[j]);
        else std::memset(rows[j], 0, 2 * pairs * sizeof(uint16_t));
      }
      Bf16Pair* panel = out + kp0 * NR + j0;
      size_t kp = 0;
      for (; kp + W <= pairs; kp += W)  // (j0 + W <= NR: units past n are zero columns)
        transpose_square(reinterpret_cast<const float*>(rows[0] + 2 * kp), kPiece,
                         reinterpret_cast<float*>(panel + kp * NR), NR);
      for (; kp < pairs; ++kp)
        for (size_t j = 0; j < units; ++j)
          std::memcpy(panel + kp * NR + j, rows[j] + 2 * kp, sizeof(Bf16Pair));
    }
  }
}

// out[j] = the pair (even[j], odd[j]) for j < n; odd null reads zeros.
inline void pair_rows(size_t n, const float* even, const float* odd, Bf16Pair* out) {
  constexpr size_t kLanes = Bf16::kLanes;
  size_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    vstore(out + j, Bf16::pairs(vload<Bf16::VU>(even + j),
                                odd ? vload<Bf16::VU>(odd + j) : Bf16::VU{}));
  for (; j < n; ++j) out[j] = Bf16::pair(even[j], odd ? odd[j] : 0.0f);
}

// A B panel row of n <= NR columns from two rows of float32, the rest zero.
inline void pack_pair_row(size_t n, const float* even, const float* odd, Bf16Pair* out) {
  pair_rows(n, even, odd, out);
  for (size_t j = n; j < Tile<float>::NR; ++j) out[j] = Bf16Pair(0);
}

// dx (M, I) = da W_ih on bfloat16 operands, BPTT's last product: da's
// rounded mirror over the W_ih side's G groups of unit panels (Q = G*HB of
// them, slabs pairs apart; recurrence.h), W_ih (G*H, I) float32, rounded as
// it is packed. gemm_bf16.cc.
void input_grad_bf16(size_t M, size_t I, size_t G, size_t H, size_t E, const Bf16Pair* da,
                     size_t slabs, const float* w_ih, float* dx, int threads);

}  // namespace FASTRNN_ISA_NS
}  // namespace fastrnn
