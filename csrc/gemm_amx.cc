// The bf16 register tile on AMX (the amx_bf16 copy only): tdpbf16ps multiplies
// a tile of A rows (up to 16 rows of 16 pairs) by a tile of B (16 pair rows of
// 16 columns) into a float32 tile: with the 8-row tiles used here about 14
// times vdpbf16ps's rate on a Sapphire Rapids core (scripts/amx_peak.c). The
// operands are those of the vdpbf16ps tile (bf16.h): A rows of pairs, read in
// place (Rows: a forward step's rounded [x_t | h_{t-1}]; Panels: BPTT's
// rounded da slabs, 16 pairs a slab row, one tile each), and B panels of
// NR = 32 columns, pair rows of 128 bytes, which are two B tiles side by side.
// So nothing is packed for AMX but the weight gradients' A panels (Packed:
// k-major), turned into tile rows once per call.
//
// Sums: each output element is the float32 sum of the same products as on the
// other bf16 paths, in whatever order and internal precision the tile unit
// uses (Intel documents a flush of subnormal results too); the tests hold it
// to the reference with the bf16 tolerance that allows any summation order.
//
// Tile registers: 0, 1 the two 16-column halves of the output, 2 A, 4 and 5 B;
// 3, 6 and 7 the same for the last K % 16 pairs. Loading a configuration costs
// about 80 ns, so it is loaded only when the thread's current one differs
// (reading it back costs a few): within a kernel call the shapes repeat. The
// configuration stays loaded when the call returns.
#include "bf16.h"

#if defined(__AMX_BF16__)
#include <immintrin.h>

namespace fastrnn {
namespace FASTRNN_ISA_NS {

namespace {

constexpr size_t kPairs = 16;          // pairs along k in an A tile row, rows of a B tile
constexpr size_t kColumns = 16;        // float32 columns of an output tile
constexpr size_t kRowBytes = 64;

struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t bytes[16] = {};  // bytes per row of each tile register
  uint8_t rows[16] = {};
};

// M output rows, `tail` pairs in the last, partial step along k (0: none).
// Without a tail, tiles 3, 6 and 7 keep what they had: a GRU's panels that
// read x_t alone (a tail) and h_{t-1} alone (often none) then share one
// configuration.
void configure(size_t M, size_t tail) {
  TileConfig now;
  _tile_storeconfig(&now);
  TileConfig want;
  for (int t : {0, 1, 2}) want.bytes[t] = kRowBytes, want.rows[t] = uint8_t(M);
  for (int t : {4, 5}) want.bytes[t] = kRowBytes, want.rows[t] = kPairs;
  if (tail != 0) {
    want.bytes[3] = uint16_t(4 * tail), want.rows[3] = uint8_t(M);
    for (int t : {6, 7}) want.bytes[t] = kRowBytes, want.rows[t] = uint8_t(tail);
  } else if (now.palette == 1) {
    for (int t : {3, 6, 7}) want.bytes[t] = now.bytes[t], want.rows[t] = now.rows[t];
  }
  if (std::memcmp(&now, &want, sizeof want) != 0) _tile_loadconfig(&want);
}

// Output tiles 0 and 1 += A tile `A` (from a) times B tiles `B0` and `B1`, the
// two halves of a panel's pair rows from `rows`. A macro: GCC's intrinsics
// name the tile registers by their tokens, so not even a template argument.
#define FASTRNN_MULTIPLY_CHUNK(A, B0, B1, a, a_stride, rows, b_stride) \
  do {                                                                 \
    _tile_loadd(A, a, a_stride);                                       \
    _tile_loadd(B0, rows, b_stride);                                   \
    _tile_loadd(B1, (rows) + kColumns, b_stride);                      \
    _tile_dpbf16ps(0, A, B0);                                          \
    _tile_dpbf16ps(1, A, B1);                                          \
  } while (0)

}  // namespace

bool amx_tile(size_t M, size_t P, ALayout layout, size_t K1, const Bf16Pair* a, size_t lda,
              size_t K2, const Bf16Pair* b, size_t panel_stride, float* out, size_t ldt,
              bool add) {
  constexpr size_t NR = Tile<float>::NR;
  static_assert(NR == 2 * kColumns, "a B panel is two AMX tiles wide");
  if (K2 != 0 || M > 16) return false;
  const size_t full = K1 / kPairs, tail = K1 % kPairs;
  if (layout == ALayout::Panels && tail != 0) return false;  // slabs are whole tiles
  configure(M, tail);
  // A's chunk c: 16 pairs of every row, 64 bytes a row. Rows: along the row;
  // Panels: slab c; Packed (k-major, rows lda apart along k): turned into rows
  // here, every chunk once before the panels where they fit (turning a chunk
  // again for each panel cost more than its two tile products), else a chunk
  // at a time.
  constexpr size_t kChunkPairs = 16 * kPairs, kTurnedChunks = 32;  // 32 KB
  alignas(64) Bf16Pair turned[kTurnedChunks * kChunkPairs];
  auto turn = [&](size_t c, Bf16Pair* rows) {
    const size_t k0 = c * kPairs, pairs = min_size(kPairs, K1 - k0);
    for (size_t k = 0; k < pairs; ++k)
      for (size_t m = 0; m < M; ++m) rows[m * kPairs + k] = a[(k0 + k) * lda + m];
  };
  const size_t chunks = full + (tail != 0);
  const bool turned_once = layout == ALayout::Packed && chunks <= kTurnedChunks;
  if (turned_once)
    for (size_t c = 0; c < chunks; ++c) turn(c, turned + c * kChunkPairs);
  const size_t a_stride = layout == ALayout::Rows ? lda * 4 : kRowBytes;
  auto a_chunk = [&](size_t c) -> const Bf16Pair* {
    if (layout == ALayout::Rows) return a + c * kPairs;
    if (layout == ALayout::Panels) return a + c * lda;
    if (turned_once) return turned + c * kChunkPairs;
    turn(c, turned);
    return turned;
  };
  const size_t b_stride = NR * sizeof(Bf16Pair), out_stride = ldt * sizeof(float);
  for (size_t p = 0; p < P; ++p) {
    float* o = out + p * NR;
    const Bf16Pair* panel = b + p * panel_stride;
    if (add) {
      _tile_loadd(0, o, out_stride);
      _tile_loadd(1, o + kColumns, out_stride);
    } else {
      _tile_zero(0);
      _tile_zero(1);
    }
    for (size_t c = 0; c < full; ++c)
      FASTRNN_MULTIPLY_CHUNK(2, 4, 5, a_chunk(c), a_stride, panel + c * kPairs * NR, b_stride);
    if (tail != 0)
      FASTRNN_MULTIPLY_CHUNK(3, 6, 7, a_chunk(full), a_stride, panel + full * kPairs * NR,
                             b_stride);
    _tile_stored(0, o, out_stride);
    _tile_stored(1, o + kColumns, out_stride);
  }
  return true;
}
#undef FASTRNN_MULTIPLY_CHUNK

}  // namespace FASTRNN_ISA_NS
}  // namespace fastrnn
#endif
