// The function table of the ISA copy this file is compiled into.
#include "kernels.h"

#define FASTRNN_STR2(x) #x
#define FASTRNN_STR(x) FASTRNN_STR2(x)

namespace fastrnn {
namespace FASTRNN_ISA_NS {

const KernelTable* kernel_table() {
#define FASTRNN_CELL_FILL(Real, name, ...) {&name##_forward<Real>, &name##_backward<Real>},
#define FASTRNN_CELL_FILL_F32(...) FASTRNN_CELL_FILL(float, __VA_ARGS__)
#define FASTRNN_CELL_FILL_F64(...) FASTRNN_CELL_FILL(double, __VA_ARGS__)
#define FASTRNN_TABLE_FILL(name, Args) &name<float>, &name<double>,
  static const KernelTable table = {FASTRNN_STR(FASTRNN_ISA_NS),
                                    {FASTRNN_CELLS(FASTRNN_CELL_FILL_F32)},
                                    {FASTRNN_CELLS(FASTRNN_CELL_FILL_F64)},
                                    FASTRNN_KERNELS(FASTRNN_TABLE_FILL)};
#undef FASTRNN_TABLE_FILL
#undef FASTRNN_CELL_FILL_F64
#undef FASTRNN_CELL_FILL_F32
#undef FASTRNN_CELL_FILL
  return &table;
}

}  // namespace FASTRNN_ISA_NS
}  // namespace fastrnn
