"""Type stubs of fastrnn._core, the compiled backend (the module: csrc/bindings.cc;
its entries: csrc/register_recurrent.cc, csrc/register_training.cc and
csrc/register_frozen.cc).

The kernel contract (argument meaning, shapes, the saved workspace) is written
once, at the top of fastrnn/_reference.py; every backend follows it. The cells
come from one list, csrc/cells.h: each has a <cell>_forward and a
<cell>_backward here, and `cells` names them (a test checks the two agree).
"""

from typing import List, Optional, Tuple

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.floating]
BatchSizes = Optional[NDArray[np.int64]]

name: str
cells: Tuple[str, ...]
max_threads: int
concurrent_single_thread_calls: bool

class Workspace:
    """What a training forward keeps for its backward (opaque)."""

    @property
    def cell(self) -> str: ...
    @property
    def nbytes(self) -> int: ...

def rnn_forward(x: Array, h0: Array, w_ih: Array, w_hh: Array, b_ih: Array, b_hh: Array,
                training: bool = True, *, batch_sizes: BatchSizes = None, reverse: bool = False,
                out: Optional[Array] = None, threads: Optional[int] = None,
                precision: str = "fp32"
                ) -> Tuple[Array, Optional[Workspace]]: ...
def rnn_backward(saved: Workspace, h0: Array, w_ih: Array, w_hh: Array, y: Array,
                 dy: Optional[Array], dhT: Array, need_dx: bool = True, *,
                 batch_sizes: BatchSizes = None, reverse: bool = False,
                 threads: Optional[int] = None, precision: str = "fp32"
                 ) -> Tuple[Optional[Array], Array, Array, Array, Array, Array]: ...
def rnn_relu_forward(x: Array, h0: Array, w_ih: Array, w_hh: Array, b_ih: Array, b_hh: Array,
                     training: bool = True, *, batch_sizes: BatchSizes = None,
                     reverse: bool = False, out: Optional[Array] = None,
                     threads: Optional[int] = None, precision: str = "fp32"
                     ) -> Tuple[Array, Optional[Workspace]]: ...
def rnn_relu_backward(saved: Workspace, h0: Array, w_ih: Array, w_hh: Array, y: Array,
                      dy: Optional[Array], dhT: Array, need_dx: bool = True, *,
                      batch_sizes: BatchSizes = None, reverse: bool = False,
                      threads: Optional[int] = None, precision: str = "fp32"
                      ) -> Tuple[Optional[Array], Array, Array, Array, Array, Array]: ...
def lstm_forward(x: Array, h0: Array, c0: Array, w_ih: Array, w_hh: Array, b_ih: Array,
                 b_hh: Array, training: bool = True, *, batch_sizes: BatchSizes = None,
                 reverse: bool = False, out: Optional[Array] = None,
                 threads: Optional[int] = None, precision: str = "fp32"
                 ) -> Tuple[Array, Array, Optional[Workspace]]: ...
def lstm_backward(saved: Workspace, h0: Array, c0: Array, w_ih: Array, w_hh: Array, y: Array,
                  dy: Optional[Array], dhT: Array, dcT: Array, need_dx: bool = True, *,
                  batch_sizes: BatchSizes = None, reverse: bool = False,
                  threads: Optional[int] = None, precision: str = "fp32"
                  ) -> Tuple[Optional[Array], Array, Array, Array, Array, Array, Array]: ...
def gru_forward(x: Array, h0: Array, w_ih: Array, w_hh: Array, b_ih: Array, b_hh: Array,
                training: bool = True, *, batch_sizes: BatchSizes = None, reverse: bool = False,
                out: Optional[Array] = None, threads: Optional[int] = None,
                precision: str = "fp32"
                ) -> Tuple[Array, Optional[Workspace]]: ...
def gru_backward(saved: Workspace, h0: Array, w_ih: Array, w_hh: Array, y: Array,
                 dy: Optional[Array], dhT: Array, need_dx: bool = True, *,
                 batch_sizes: BatchSizes = None, reverse: bool = False,
                 threads: Optional[int] = None, precision: str = "fp32"
                 ) -> Tuple[Optional[Array], Array, Array, Array, Array, Array]: ...

def adam_update(param: Array, grad: Array, exp_avg: Array, exp_avg_sq: Array, beta1: float,
                beta2: float, step_size: float, bias_correction2_sqrt: float,
                eps: float) -> bool: ...
def classifier_head(h: Array, weight: Array, bias: Array, labels: NDArray[np.int64]
                    ) -> Tuple[float, NDArray[np.int64], Array, Array, Array]: ...

def set_num_threads(n: int) -> None: ...
def get_num_threads() -> int: ...
def build_info() -> dict: ...
def release_cached_memory() -> int: ...
def _set_isa(name: str) -> None: ...
def _use_openmp_runtime(parallel: int, thread_num: int, num_threads: int) -> None: ...

# Tests only: the int8 products of frozen models (csrc/gemm_int8.h).
def _int8_quantize_rows(a: NDArray[np.float32]
                        ) -> Tuple[NDArray[np.int8], NDArray[np.float32]]: ...
def _int8_products(q_x: Optional[NDArray[np.int8]], s_x: Optional[NDArray[np.float32]],
                   q_ih: Optional[NDArray[np.int8]], s_ih: Optional[NDArray[np.float32]],
                   q_h: Optional[NDArray[np.int8]] = None,
                   s_h: Optional[NDArray[np.float32]] = None,
                   q_hh: Optional[NDArray[np.int8]] = None,
                   s_hh: Optional[NDArray[np.float32]] = None) -> NDArray[np.float32]: ...

# Frozen models (fastrnn/frozen.py).
class PackedWeights:
    """One layer direction's weights prepared once for a frozen model (opaque)."""

    @property
    def cell(self) -> str: ...
    @property
    def precision(self) -> str: ...
    @property
    def kernel_path(self) -> str: ...
    @property
    def nbytes(self) -> int: ...

def pack_weights(cell: str, w_ih: NDArray, w_hh: NDArray, b_ih: Array, b_hh: Array,
                 precision: str = "fp32", s_ih: Optional[NDArray[np.float32]] = None,
                 s_hh: Optional[NDArray[np.float32]] = None) -> PackedWeights: ...
def frozen_forward(weights: PackedWeights, x: Array, h0: Array, c0: Optional[Array] = None, *,
                   batch_sizes: Optional[NDArray[np.int64]] = None,
                   threads: Optional[int] = None) -> tuple: ...

class Stream:
    """B sequences stepped one frame at a time through a stack of PackedWeights."""

    def __init__(self, layers: List[PackedWeights], batch_size: int,
                 head_weight: Optional[Array] = None, head_bias: Optional[Array] = None
                 ) -> None: ...
    def step(self, x_t: Array, out: Optional[Array] = None) -> Array: ...
    def state(self) -> Tuple[Array, Optional[Array]]: ...
    def set_state(self, h: Optional[Array], c: Optional[Array] = None) -> None: ...
    @property
    def batch_size(self) -> int: ...
    @property
    def nbytes(self) -> int: ...
