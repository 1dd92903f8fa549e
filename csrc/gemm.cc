#include "gemm.h"

#include <algorithm>

namespace fastrnn {
namespace FASTRNN_ISA_NS {
namespace {

// Cache blocking: a KC x NR B panel (16 KiB for floats) stays in L1 while
// MC x KC of packed A (120 KiB) sits in L2; NC bounds the packed B block.
constexpr size_t KC = 256;
constexpr size_t MC = 120;  // a multiple of MR = 6 and 8
constexpr size_t NC = 4096;
// Below this many flops per thread, waking another thread costs more than it saves.
constexpr double kMinFlopsPerThread = 2.0e6;

template <class Real>
void gemm_rows(const Gemm<Real>& g, size_t m0, size_t m1, Real* apack, Real* bpack) {
  constexpr size_t MR = Tile<Real>::MR, NR = Tile<Real>::NR;
  alignas(64) Real tile[MR * NR];
  for (size_t jc = 0; jc < g.N; jc += NC) {
    const size_t n = min_size(NC, g.N - jc);
    const size_t npanels = ceil_div(n, NR);
    for (size_t pc = 0; pc < g.K; pc += KC) {
      const size_t k = min_size(KC, g.K - pc);
      for (size_t jp = 0; jp < npanels; ++jp) {
        const size_t j = jc + jp * NR;
        pack_b_panel(min_size(NR, g.N - j), k, g.b + pc * g.b_rs + j * g.b_cs, g.b_rs, g.b_cs,
                     bpack + jp * k * NR);
      }
      for (size_t ic = m0; ic < m1; ic += MC) {
        const size_t mc = min_size(MC, m1 - ic);
        if (g.a_slabs != 0)
          pack_a_from_panels(mc, k, g.a + (pc / NR) * g.a_slabs + ic * NR, g.a_slabs, apack);
        else
          pack_a_block(mc, k, g.a + ic * g.a_rs + pc * g.a_cs, g.a_rs, g.a_cs, apack);
        for (size_t jp = 0; jp < npanels; ++jp) {
          const size_t j = jc + jp * NR;
          const size_t nr = min_size(NR, g.N - j);
          for (size_t ip = 0; ip * MR < mc; ++ip) {
            const size_t i = ic + ip * MR;
            const size_t mr = min_size(MR, m1 - i);
            const Real* bpanel = bpack + jp * k * NR;
            const bool add = pc > 0;  // later K blocks sum into C
            Real* crow = g.c + i * g.ldc + j;
            if (mr == MR && nr == NR) {  // a whole tile: C is summed in registers
              packed_tile(mr, k, apack + ip * MR * k, bpanel, TileOut<Real>{crow, g.ldc, add});
            } else {
              // An edge tile sums into C staged in a whole one, as a whole tile sums
              // into C: an element's bits do not depend on where its row lies (the
              // reverse direction's dx has its rows in another order than its run).
              for (size_t r = 0; r < mr; ++r)
                for (size_t c = 0; c < nr; ++c)
                  tile[r * NR + c] = add ? crow[r * g.ldc + c] : Real(0);
              packed_tile(mr, k, apack + ip * MR * k, bpanel, TileOut<Real>{tile, NR, add});
              for (size_t r = 0; r < mr; ++r)
                for (size_t c = 0; c < nr; ++c) crow[r * g.ldc + c] = tile[r * NR + c];
            }
          }
        }
      }
    }
  }
}

}  // namespace

template <class Real>
void gemm(const Gemm<Real>& g, int threads) {
  constexpr size_t MR = Tile<Real>::MR, NR = Tile<Real>::NR;
  if (g.M == 0 || g.N == 0) return;
  if (g.K == 0) {  // an empty product
    for (size_t i = 0; i < g.M; ++i) std::fill(g.c + i * g.ldc, g.c + i * g.ldc + g.N, Real(0));
    return;
  }
  const double flops = 2.0 * double(g.M) * double(g.N) * double(g.K);
  size_t nt = static_cast<size_t>(flops / kMinFlopsPerThread);
  nt = min_size(min_size(nt < 1 ? 1 : nt, static_cast<size_t>(threads < 1 ? 1 : threads)),
                ceil_div(g.M, MR));
  const size_t kc = min_size(KC, g.K);
  const size_t nc = ceil_div(min_size(NC, g.N), NR) * NR;
  reserve_scratch(int(nt), kSlotPackA, MC * kc * sizeof(Real));
  reserve_scratch(int(nt), kSlotPackB, nc * kc * sizeof(Real));
  const size_t row_panels = ceil_div(g.M, MR);
  auto task = [&](int tid, int n) {
    size_t p0, p1;
    split_range(row_panels, tid, n, p0, p1);
    const size_t m0 = p0 * MR, m1 = min_size(g.M, p1 * MR);
    if (m0 >= m1) return;
    gemm_rows(g, m0, m1, static_cast<Real*>(scratch(tid, kSlotPackA)),
              static_cast<Real*>(scratch(tid, kSlotPackB)));
  };
  run_parallel(int(nt), task);
}

template void gemm<float>(const Gemm<float>&, int);
template void gemm<double>(const Gemm<double>&, int);

}  // namespace FASTRNN_ISA_NS
}  // namespace fastrnn
