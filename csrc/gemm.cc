#include "gemm.h"

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
      const bool first = pc == 0;
      for (size_t jp = 0; jp < npanels; ++jp) {
        const size_t j = jc + jp * NR;
        pack_b_panel(min_size(NR, g.N - j), k, g.b + pc * g.b_rs + j * g.b_cs, g.b_rs, g.b_cs,
                     bpack + jp * k * NR);
      }
      for (size_t ic = m0; ic < m1; ic += MC) {
        const size_t mc = min_size(MC, m1 - ic);
        for (size_t ip = 0; ip * MR < mc; ++ip) {
          const size_t i = ic + ip * MR;
          pack_a_panel(min_size(MR, m1 - i), k, g.a + i * g.a_rs + pc * g.a_cs, g.a_rs, g.a_cs,
                       apack + ip * MR * k);
        }
        for (size_t jp = 0; jp < npanels; ++jp) {
          const size_t j = jc + jp * NR;
          const size_t nr = min_size(NR, g.N - j);
          for (size_t ip = 0; ip * MR < mc; ++ip) {
            const size_t i = ic + ip * MR;
            const size_t mr = min_size(MR, m1 - i);
            packed_tile(mr, 1, k, apack + ip * MR * k, bpack + jp * k * NR, 0, tile);
            for (size_t r = 0; r < mr; ++r) {
              Real* crow = g.c + (i + r) * g.ldc + j;
              const Real* trow = tile + r * NR;
              if (!first || g.accumulate) {
                for (size_t c = 0; c < nr; ++c) crow[c] += trow[c];
              } else {
                for (size_t c = 0; c < nr; ++c) crow[c] = trow[c];
              }
              if (first && g.bias != nullptr)
                for (size_t c = 0; c < nr; ++c) crow[c] += g.bias[j + c];
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
  if (g.K == 0) {  // an empty product: C keeps its value or becomes 0, plus bias
    for (size_t i = 0; i < g.M; ++i)
      for (size_t j = 0; j < g.N; ++j) {
        Real& c = g.c[i * g.ldc + j];
        c = (g.accumulate ? c : Real(0)) + (g.bias != nullptr ? g.bias[j] : Real(0));
      }
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

template <class Real>
void column_sums(size_t rows, size_t cols, const Real* a, size_t lda, Real* out, int threads) {
  const double work = double(rows) * double(cols);
  size_t nt = static_cast<size_t>(work / 1.0e6);
  nt = min_size(min_size(nt < 1 ? 1 : nt, static_cast<size_t>(threads < 1 ? 1 : threads)),
                ceil_div(cols, 64));
  auto task = [&](int tid, int n) {
    size_t b0, b1;
    split_range(ceil_div(cols, 64), tid, n, b0, b1);
    const size_t j0 = b0 * 64, j1 = min_size(cols, b1 * 64);
    for (size_t j = j0; j < j1; ++j) out[j] = Real(0);
    for (size_t i = 0; i < rows; ++i) {
      const Real* row = a + i * lda;
      for (size_t j = j0; j < j1; ++j) out[j] += row[j];
    }
  };
  run_parallel(int(nt), task);
}

template <class Real>
void bptt_parameter_grads(const BackwardArgs<Real>& p, const Real* da, size_t GH) {
  const size_t TB = p.T * p.B, B = p.B, I = p.I, H = p.H;
  gemm(Gemm<Real>{GH, I, TB, da, 1, GH, p.x, I, 1, p.dw_ih, I, false, nullptr}, p.threads);
  gemm(Gemm<Real>{GH, H, B, da, 1, GH, p.h0, H, 1, p.dw_hh, H, false, nullptr}, p.threads);
  gemm(Gemm<Real>{GH, H, TB - B, da + B * GH, 1, GH, p.y, H, 1, p.dw_hh, H, true, nullptr},
       p.threads);
  column_sums(TB, GH, da, GH, p.db, p.threads);
  if (p.dx != nullptr)
    gemm(Gemm<Real>{TB, I, GH, da, GH, 1, p.w_ih, I, 1, p.dx, I, false, nullptr}, p.threads);
}

template void gemm<float>(const Gemm<float>&, int);
template void gemm<double>(const Gemm<double>&, int);
template void column_sums<float>(size_t, size_t, const float*, size_t, float*, int);
template void column_sums<double>(size_t, size_t, const double*, size_t, double*, int);
template void bptt_parameter_grads<float>(const BackwardArgs<float>&, const float*, size_t);
template void bptt_parameter_grads<double>(const BackwardArgs<double>&, const double*, size_t);

}  // namespace FASTRNN_ISA_NS
}  // namespace fastrnn
