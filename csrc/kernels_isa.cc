// The function table of the ISA copy this file is compiled into.
#include "kernels.h"

#define FASTRNN_STR2(x) #x
#define FASTRNN_STR(x) FASTRNN_STR2(x)

namespace fastrnn {
namespace FASTRNN_ISA_NS {

const KernelTable* kernel_table() {
  static const KernelTable table = {
      FASTRNN_STR(FASTRNN_ISA_NS),
      &rnn_forward<float>,   &rnn_forward<double>,
      &rnn_backward<float>,  &rnn_backward<double>,
      &lstm_forward<float>,  &lstm_forward<double>,
      &lstm_backward<float>, &lstm_backward<double>,
      &adam_update<float>,   &adam_update<double>,
      &classifier_head<float>, &classifier_head<double>,
  };
  return &table;
}

}  // namespace FASTRNN_ISA_NS
}  // namespace fastrnn
