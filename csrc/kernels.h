// The kernels one ISA copy provides; kernels_isa.cc gathers them into a table.
#pragma once

#include "common.h"

namespace fastrnn {
namespace FASTRNN_ISA_NS {

template <class Real>
void rnn_forward(const ForwardArgs<Real>& p);
template <class Real>
void rnn_backward(const BackwardArgs<Real>& p);
template <class Real>
void lstm_forward(const ForwardArgs<Real>& p);
template <class Real>
void lstm_backward(const BackwardArgs<Real>& p);
template <class Real>
void adam_update(const AdamArgs<Real>& a);
template <class Real>
void classifier_head(const HeadArgs<Real>& a);

const KernelTable* kernel_table();

}  // namespace FASTRNN_ISA_NS
}  // namespace fastrnn
