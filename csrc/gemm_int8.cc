// The int8 kernels of one ISA copy (gemm_int8.h; the arithmetic is
// fastrnn/_quantize.py's). Four ways to multiply, one per copy, all giving the
// same integers: vpdpbusd (AVX512_VNNI), vpmaddubsw on AVX512BW and on AVX2,
// and plain int32 arithmetic. This file is compiled with -ffp-contract=off:
// quantizing and dequantizing must round as NumPy does, twice where a fused
// multiply-add would round once, so that every path gives the same bits.
#include "gemm_int8.h"

#include "gemm.h"

#include <cmath>
#include <cstddef>

namespace fastrnn {
namespace FASTRNN_ISA_NS {
namespace {

constexpr size_t NR = Tile<float>::NR;
constexpr size_t kGroup = 4;   // int8 values along K per 32-bit lane
constexpr int kCodeMax = 127;
constexpr float kTiny = 0x1p-100f;  // smaller rows get codes 0: 127 / m would overflow

#if defined(__AVX512VNNI__)
constexpr int kInt8Offset = 128;  // vpdpbusd multiplies unsigned activations
constexpr const char* kPath = "vpdpbusd (AVX512_VNNI)";
#elif defined(__AVX512BW__)
constexpr int kInt8Offset = 0;
constexpr const char* kPath = "vpmaddubsw (AVX512BW)";
#elif defined(__AVX2__)
constexpr int kInt8Offset = 0;
constexpr const char* kPath = "vpmaddubsw (AVX2)";
#else
constexpr int kInt8Offset = 0;
constexpr const char* kPath = "portable";
#endif

// Rows per tile: AVX-512 has 32 registers for 8 rows of 2 accumulators; AVX2's
// 16 hold 4 rows of 2 beside the operands and vpmaddubsw's temporaries.
#if defined(__AVX512BW__)
constexpr size_t MR = 8;
#else
constexpr size_t MR = 4;
#endif

// The head of a packed panel (see gemm_int8.h), per segment and column.
struct Int8Columns {
  float scale[2][NR];
  int32_t correction[2][NR];
};
static_assert(sizeof(Int8Columns) % 64 == 0, "codes start on a cache line");
static_assert(sizeof(Int8Columns) == 2 * NR * (sizeof(float) + sizeof(int32_t)),
              "int8_panel_bytes counts the head so");

size_t segment_bytes(size_t K) { return ceil_div(K, kGroup) * NR * kGroup; }

size_t panel_bytes(size_t K1, size_t K2) { return int8_panel_bytes(NR, K1, K2); }

void pack_panel(const Int8PanelSource& src, uint8_t* out) {
  std::memset(out, 0, panel_bytes(src.K1, src.K2));
  Int8Columns columns{};
  const size_t K[2] = {src.K1, src.K2}, ld[2] = {src.ld1, src.ld2};
  const int8_t* w[2] = {src.w1, src.w2};
  const float* scales[2] = {src.s1, src.s2};
  uint8_t* codes = out + sizeof(Int8Columns);
  for (int seg = 0; seg < 2; ++seg) {
    for (size_t j = 0; j < src.n && K[seg] != 0; ++j) {
      int32_t sum = 0;
      for (size_t k = 0; k < K[seg]; ++k) {
        const int8_t q = w[seg][j * ld[seg] + k];
        codes[((k / kGroup) * NR + j) * kGroup + k % kGroup] = static_cast<uint8_t>(q);
        sum += q;
      }
      columns.scale[seg][j] = scales[seg][j];
      columns.correction[seg][j] = kInt8Offset * sum;
    }
    codes += segment_bytes(K[seg]);
  }
  std::memcpy(out, &columns, sizeof columns);
}

// ------------------------------------------------------------ quantization

typedef uint32_t VU __attribute__((vector_size(kVecBytes)));
typedef int32_t VI __attribute__((vector_size(kVecBytes)));
using V = Simd<float>::V;
constexpr size_t kLanes = Simd<float>::kLanes;
typedef uint8_t VB __attribute__((vector_size(kLanes)));

// The bits of max_k |row[k]|. As integers, magnitudes order like the floats
// they encode, and NaN lies above infinity: a NaN anywhere is found.
uint32_t largest_magnitude_bits(const float* row, size_t K) {
  VU largest{};
  size_t k = 0;
  for (; k + kLanes <= K; k += kLanes) {
    const VU bits = vload<VU>(row + k) & 0x7fffffffu;
    largest = bits > largest ? bits : largest;
  }
  uint32_t out = 0;
  for (size_t l = 0; l < kLanes; ++l) out = largest[l] > out ? largest[l] : out;
  for (; k < K; ++k) {
    uint32_t bits;
    std::memcpy(&bits, row + k, sizeof bits);
    bits &= 0x7fffffffu;
    out = bits > out ? bits : out;
  }
  return out;
}

// rint(v) for |v| < 2^22, rounding half to even as np.rint: adding 1.5 * 2^23
// leaves no fraction bits, so the sum is rounded to an integer.
template <class T>
inline T round_to_integer(T v) {
  constexpr float kShift = 12582912.0f;
  return (v + kShift) - kShift;
}

inline int32_t clamp_code(int32_t q) {
  q = q > kCodeMax ? kCodeMax : q;
  return q < -kCodeMax ? -kCodeMax : q;
}

inline VI clamp_code(VI q) {
  const VI high = broadcast<VI>(int32_t(kCodeMax)), low = broadcast<VI>(int32_t(-kCodeMax));
  q = q > high ? high : q;
  return q < low ? low : q;
}

void encode_row(const float* row, size_t K, float inverse, uint8_t* out) {
  size_t k = 0;
  for (; k + kLanes <= K; k += kLanes) {
    const V r = round_to_integer(vload<V>(row + k) * inverse);
    const VI q = clamp_code(__builtin_convertvector(r, VI)) + kInt8Offset;
    const VB bytes = __builtin_convertvector(q, VB);
    std::memcpy(out + k, &bytes, sizeof bytes);
  }
  for (; k < K; ++k) {
    const int32_t q = clamp_code(static_cast<int32_t>(round_to_integer(row[k] * inverse)));
    out[k] = static_cast<uint8_t>(q + kInt8Offset);
  }
}

void quantize_rows(size_t M, size_t K, const float* a, size_t lda, uint8_t* codes, size_t ldc,
                   float* scales) {
  const size_t padded = int8_row_bytes(K);
  for (size_t r = 0; r < M; ++r) {
    const float* row = a + r * lda;
    uint8_t* out = codes + r * ldc;
    const uint32_t bits = largest_magnitude_bits(row, K);
    float largest;
    std::memcpy(&largest, &bits, sizeof largest);
    const bool finite = bits < 0x7f800000u, coded = finite && largest >= kTiny;
    scales[r] = !finite ? NAN : coded ? largest / float(kCodeMax) : 0.0f;
    if (coded) encode_row(row, K, float(kCodeMax) / largest, out);
    else std::memset(out, kInt8Offset, K);
    std::memset(out + K, kInt8Offset, padded - K);
  }
}

// ------------------------------------------------------------ the products

// sums[m*P*NR + p*NR + j] = sum_k code_a[m, k] q_w[p, j, k] over one segment of
// P panels (its codes at b, panel_stride bytes apart), exact.
template <int M, int P>
__attribute__((always_inline)) inline void segment_sums(size_t K, const uint8_t* a, size_t lda,
                                                        const uint8_t* b, size_t panel_stride,
                                                        int32_t* sums) {
  const size_t groups = ceil_div(K, kGroup);
  auto activations = [&](int m, size_t g) {  // four codes of row m as one int32
    int32_t quad;
    std::memcpy(&quad, a + m * lda + g * kGroup, sizeof quad);
    return quad;
  };
#if defined(__AVX512BW__)
  static_assert(NR == 32, "two zmm of int32 per panel");
  __m512i acc[M][P][2];
  for (int m = 0; m < M; ++m)
    for (int p = 0; p < P; ++p) acc[m][p][0] = acc[m][p][1] = _mm512_setzero_si512();
#if !defined(__AVX512VNNI__)
  const __m512i ones = _mm512_set1_epi16(1), zero = _mm512_setzero_si512();
#endif
  for (size_t g = 0; g < groups; ++g) {
    __m512i w0[P], w1[P];
    for (int p = 0; p < P; ++p) {
      w0[p] = _mm512_loadu_si512(b + p * panel_stride + g * NR * kGroup);
      w1[p] = _mm512_loadu_si512(b + p * panel_stride + g * NR * kGroup + 64);
    }
    for (int m = 0; m < M; ++m) {
      const __m512i am = _mm512_set1_epi32(activations(m, g));
#if defined(__AVX512VNNI__)
      for (int p = 0; p < P; ++p) {
        acc[m][p][0] = _mm512_dpbusd_epi32(acc[m][p][0], am, w0[p]);
        acc[m][p][1] = _mm512_dpbusd_epi32(acc[m][p][1], am, w1[p]);
      }
#else
      // |a| times w with a's sign: pairs sum to at most 2 * 127 * 127, no saturation.
      const __m512i magnitude = _mm512_abs_epi8(am);
      const __mmask64 negative = _mm512_movepi8_mask(am);
      for (int p = 0; p < P; ++p) {
        const __m512i s0 = _mm512_mask_sub_epi8(w0[p], negative, zero, w0[p]);
        const __m512i s1 = _mm512_mask_sub_epi8(w1[p], negative, zero, w1[p]);
        acc[m][p][0] = _mm512_add_epi32(
            acc[m][p][0], _mm512_madd_epi16(_mm512_maddubs_epi16(magnitude, s0), ones));
        acc[m][p][1] = _mm512_add_epi32(
            acc[m][p][1], _mm512_madd_epi16(_mm512_maddubs_epi16(magnitude, s1), ones));
      }
#endif
    }
  }
  for (int m = 0; m < M; ++m)
    for (int p = 0; p < P; ++p) {
      _mm512_storeu_si512(sums + (m * P + p) * NR, acc[m][p][0]);
      _mm512_storeu_si512(sums + (m * P + p) * NR + 16, acc[m][p][1]);
    }
#elif defined(__AVX2__)
  static_assert(NR == 16, "two ymm of int32 per panel");
  __m256i acc[M][P][2];
  for (int m = 0; m < M; ++m)
    for (int p = 0; p < P; ++p) acc[m][p][0] = acc[m][p][1] = _mm256_setzero_si256();
  const __m256i ones = _mm256_set1_epi16(1);
  for (size_t g = 0; g < groups; ++g) {
    __m256i w0[P], w1[P];
    for (int p = 0; p < P; ++p) {
      const uint8_t* panel = b + p * panel_stride + g * NR * kGroup;
      w0[p] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(panel));
      w1[p] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(panel + 32));
    }
    for (int m = 0; m < M; ++m) {
      const __m256i am = _mm256_set1_epi32(activations(m, g));
      // |a| times w with a's sign: pairs sum to at most 2 * 127 * 127, no saturation.
      const __m256i magnitude = _mm256_abs_epi8(am);
      for (int p = 0; p < P; ++p) {
        acc[m][p][0] = _mm256_add_epi32(
            acc[m][p][0],
            _mm256_madd_epi16(_mm256_maddubs_epi16(magnitude, _mm256_sign_epi8(w0[p], am)), ones));
        acc[m][p][1] = _mm256_add_epi32(
            acc[m][p][1],
            _mm256_madd_epi16(_mm256_maddubs_epi16(magnitude, _mm256_sign_epi8(w1[p], am)), ones));
      }
    }
  }
  for (int m = 0; m < M; ++m)
    for (int p = 0; p < P; ++p) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(sums + (m * P + p) * NR), acc[m][p][0]);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(sums + (m * P + p) * NR + 8), acc[m][p][1]);
    }
#else
  std::memset(sums, 0, M * P * NR * sizeof(int32_t));
  for (size_t g = 0; g < groups; ++g)
    for (int m = 0; m < M; ++m) {
      const uint8_t* codes = a + m * lda + g * kGroup;
      for (int p = 0; p < P; ++p) {
        const uint8_t* w = b + p * panel_stride + g * NR * kGroup;
        int32_t* out = sums + (m * P + p) * NR;
        for (size_t j = 0; j < NR; ++j)
          for (size_t q = 0; q < kGroup; ++q)
            out[j] += int32_t(int8_t(codes[q])) * int32_t(int8_t(w[j * kGroup + q]));
      }
    }
#endif
}

// out (+)= f32(sums - correction) * (s_w * s_a): one segment's term of the
// gate sums, added to what out holds when `add` (x's term first).
template <int M, int P>
__attribute__((always_inline)) inline void dequantize(const int32_t* sums, const uint8_t* panels,
                                                      size_t panel_stride, int seg,
                                                      const float* row_scales, float* out,
                                                      size_t ldt, bool add) {
  for (int p = 0; p < P; ++p) {  // the panel's head, read in place (vload copies)
    const uint8_t* head = panels + p * panel_stride;
    const uint8_t* scales = head + offsetof(Int8Columns, scale) + seg * NR * sizeof(float);
    const uint8_t* corrections =
        head + offsetof(Int8Columns, correction) + seg * NR * sizeof(int32_t);
    for (int m = 0; m < M; ++m) {
      const V row_scale = broadcast<V>(row_scales[m]);
      float* o = out + m * ldt + p * NR;
      for (size_t j = 0; j < NR; j += kLanes) {
        const VI acc = vload<VI>(sums + (m * P + p) * NR + j) -
                       vload<VI>(corrections + j * sizeof(int32_t));
        V term = __builtin_convertvector(acc, V) * (vload<V>(scales + j * sizeof(float)) * row_scale);
        if (add) term = vload<V>(o + j) + term;
        vstore(o + j, term);
      }
    }
  }
}

// Never inlined, like the float32 microkernel: its accumulators fill the registers.
template <int M, int P>
__attribute__((noinline)) void micro_kernel(const Int8Rows& a, const uint8_t* panels,
                                            size_t panel_stride, float* out, size_t ldt,
                                            bool add) {
  alignas(64) int32_t sums[M * P * NR];
  const uint8_t* codes = panels + sizeof(Int8Columns);
  if (a.K1 != 0 && a.a1 != nullptr) {
    segment_sums<M, P>(a.K1, a.a1, a.lda1, codes, panel_stride, sums);
    dequantize<M, P>(sums, panels, panel_stride, 0, a.s1, out, ldt, add);
    add = true;
  }
  if (a.K2 != 0) {
    segment_sums<M, P>(a.K2, a.a2, a.lda2, codes + segment_bytes(a.K1), panel_stride, sums);
    dequantize<M, P>(sums, panels, panel_stride, 1, a.s2, out, ldt, add);
    add = true;
  }
  if (!add)
    for (int m = 0; m < M; ++m) std::memset(out + m * ldt, 0, P * NR * sizeof(float));
}

// P panels in groups of PG per call: with few rows, more panels per call keep
// enough independent accumulators to hide vpdpbusd's latency.
template <int M, int PG>
void tile_rows(size_t P, const Int8Rows& a, const uint8_t* panels, size_t panel_stride,
               float* out, size_t ldt, bool add) {
  size_t p = 0;
  for (; p + PG <= P; p += PG)
    micro_kernel<M, PG>(a, panels + p * panel_stride, panel_stride, out + p * NR, ldt, add);
  for (; p < P; ++p)
    micro_kernel<M, 1>(a, panels + p * panel_stride, panel_stride, out + p * NR, ldt, add);
}

// m rows of a, in tiles of at most MR rows (callers may pass the float32
// tile's MR, more than AVX2's int8 tile takes).
void tile(size_t m, size_t P, const Int8Rows& a, const uint8_t* panels, size_t panel_stride,
          float* out, size_t ldt, bool add) {
  for (size_t r0 = 0; r0 < m; r0 += MR) {
    const bool x = a.K1 != 0 && a.a1 != nullptr;
    const Int8Rows rows{a.K1, x ? a.a1 + r0 * a.lda1 : nullptr, a.lda1, x ? a.s1 + r0 : nullptr,
                        a.K2, a.K2 ? a.a2 + r0 * a.lda2 : nullptr, a.lda2,
                        a.K2 ? a.s2 + r0 : nullptr};
    float* o = out + r0 * ldt;
    switch (min_size(MR, m - r0)) {
      case 1: tile_rows<1, 4>(P, rows, panels, panel_stride, o, ldt, add); break;
      case 2: tile_rows<2, 2>(P, rows, panels, panel_stride, o, ldt, add); break;
      case 3: tile_rows<3, 1>(P, rows, panels, panel_stride, o, ldt, add); break;
      case 4: tile_rows<4, 1>(P, rows, panels, panel_stride, o, ldt, add); break;
      default:
        if constexpr (MR == 8) {
          switch (m - r0) {
            case 5: tile_rows<5, 1>(P, rows, panels, panel_stride, o, ldt, add); break;
            case 6: tile_rows<6, 1>(P, rows, panels, panel_stride, o, ldt, add); break;
            case 7: tile_rows<7, 1>(P, rows, panels, panel_stride, o, ldt, add); break;
            default: tile_rows<8, 1>(P, rows, panels, panel_stride, o, ldt, add); break;
          }
        }
        break;
    }
  }
}

}  // namespace

const Int8Kernels* int8_kernel_table() {
  static const Int8Kernels table = {kPath,          NR,        MR,           kInt8Offset,
                                    &panel_bytes,   &pack_panel, &quantize_rows, &tile};
  return &table;
}

}  // namespace FASTRNN_ISA_NS
}  // namespace fastrnn
