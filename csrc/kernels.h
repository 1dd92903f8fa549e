// The kernels one ISA copy provides (declared from the lists in cells.h and
// common.h); kernels_isa.cc gathers them into a table.
#pragma once

#include "common.h"

namespace fastrnn {
namespace FASTRNN_ISA_NS {

#define FASTRNN_DECLARE_CELL_KERNELS(name, ...)        \
  template <class Real>                               \
  void name##_forward(const ForwardArgs<Real>& args); \
  template <class Real>                               \
  void name##_backward(const BackwardArgs<Real>& args);
FASTRNN_CELLS(FASTRNN_DECLARE_CELL_KERNELS)
#undef FASTRNN_DECLARE_CELL_KERNELS

#define FASTRNN_DECLARE_KERNEL(name, Args) \
  template <class Real>                    \
  void name(const Args<Real>& args);
FASTRNN_KERNELS(FASTRNN_DECLARE_KERNEL)
#undef FASTRNN_DECLARE_KERNEL

const KernelTable* kernel_table();

}  // namespace FASTRNN_ISA_NS
}  // namespace fastrnn
