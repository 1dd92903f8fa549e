// The products of precision "bf16" that run outside the recurrence's time
// loop (the loop's own go through the same tiles, recurrence.h): BPTT's input
// gradient dx = da W_ih.
#include "bf16.h"
#include "operands.h"

namespace fastrnn {
namespace FASTRNN_ISA_NS {

void input_grad_bf16(size_t M, size_t I, size_t G, size_t H, size_t E, const Bf16Pair* da,
                     size_t slabs, const float* w_ih, float* dx, int threads) {
  constexpr size_t MR = Tile<float>::MR, NR = Tile<float>::NR;
  // B: W_ih's rows in the W_ih side's padded unit order, paired along it, one
  // panel of NR columns of dx after another; packed once, read by every thread.
  const size_t KP = G * ceil_div(H, NR) * NR / 2, column_panels = ceil_div(I, NR);
  Buffer<Bf16Pair> w(column_panels * KP * NR);
  for (size_t jp = 0; jp < column_panels; ++jp)
    Bf16Operands::pack_unit_pairs(G, H, w_ih, I, jp * NR, min_size(NR, I - jp * NR),
                                  w.data() + jp * KP * NR,
                                  [&](size_t position) { return input_side_gate(position, G, E); });
  // Row panels split evenly: each dx element is one thread's, summed in one order.
  const size_t row_panels = ceil_div(M, MR);
  const double flops = 2.0 * double(M) * double(I) * double(2 * KP);
  const size_t useful = static_cast<size_t>(flops / 2.0e6) + 1;
  const int nt = int(min_size(min_size(useful, size_t(threads < 1 ? 1 : threads)), row_panels));
  auto task = [&](int tid, int n) {
    size_t p0, p1;
    split_range(row_panels, tid, n, p0, p1);
    alignas(64) float tile[MR * NR];
    for (size_t ip = p0; ip < p1; ++ip) {
      const size_t r0 = ip * MR, m = min_size(MR, M - r0);
      const TileA<Bf16Pair> a{KP, da + r0 * NR / 2, slabs, 0, nullptr, 0};
      for (size_t jp = 0; jp < column_panels; ++jp) {
        const size_t j0 = jp * NR, n_columns = min_size(NR, I - j0);
        const Bf16Pair* b = w.data() + jp * KP * NR;
        if (n_columns == NR) {
          compute_tile<float, ALayout::Panels>(m, 1, a, b, 0,
                                               TileOut<float>{dx + r0 * I + j0, I, false});
          continue;
        }
        compute_tile<float, ALayout::Panels>(m, 1, a, b, 0, TileOut<float>{tile, NR, false});
        for (size_t r = 0; r < m; ++r)
          std::memcpy(dx + (r0 + r) * I + j0, tile + r * NR, n_columns * sizeof(float));
      }
    }
  };
  run_parallel(nt, task);
}

}  // namespace FASTRNN_ISA_NS
}  // namespace fastrnn
