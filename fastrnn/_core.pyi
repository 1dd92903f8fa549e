"""Type stubs of fastrnn._core, the compiled backend (the module: csrc/bindings.cc;
its entries: csrc/register_recurrent.cc and csrc/register_training.cc).

The kernel contract (argument meaning, shapes, the saved workspace) is written
once, at the top of fastrnn/_reference.py; every backend follows it. The cells
come from one list, csrc/cells.h: each has a <cell>_forward and a
<cell>_backward here, and `cells` names them (a test checks the two agree).
"""

from typing import Optional, Tuple

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
                out: Optional[Array] = None, threads: Optional[int] = None
                ) -> Tuple[Array, Optional[Workspace]]: ...
def rnn_backward(saved: Workspace, h0: Array, w_ih: Array, w_hh: Array, y: Array,
                 dy: Optional[Array], dhT: Array, need_dx: bool = True, *,
                 batch_sizes: BatchSizes = None, reverse: bool = False,
                 threads: Optional[int] = None
                 ) -> Tuple[Optional[Array], Array, Array, Array, Array, Array]: ...
def rnn_relu_forward(x: Array, h0: Array, w_ih: Array, w_hh: Array, b_ih: Array, b_hh: Array,
                     training: bool = True, *, batch_sizes: BatchSizes = None,
                     reverse: bool = False, out: Optional[Array] = None,
                     threads: Optional[int] = None
                     ) -> Tuple[Array, Optional[Workspace]]: ...
def rnn_relu_backward(saved: Workspace, h0: Array, w_ih: Array, w_hh: Array, y: Array,
                      dy: Optional[Array], dhT: Array, need_dx: bool = True, *,
                      batch_sizes: BatchSizes = None, reverse: bool = False,
                      threads: Optional[int] = None
                      ) -> Tuple[Optional[Array], Array, Array, Array, Array, Array]: ...
def lstm_forward(x: Array, h0: Array, c0: Array, w_ih: Array, w_hh: Array, b_ih: Array,
                 b_hh: Array, training: bool = True, *, batch_sizes: BatchSizes = None,
                 reverse: bool = False, out: Optional[Array] = None,
                 threads: Optional[int] = None
                 ) -> Tuple[Array, Array, Optional[Workspace]]: ...
def lstm_backward(saved: Workspace, h0: Array, c0: Array, w_ih: Array, w_hh: Array, y: Array,
                  dy: Optional[Array], dhT: Array, dcT: Array, need_dx: bool = True, *,
                  batch_sizes: BatchSizes = None, reverse: bool = False,
                  threads: Optional[int] = None
                  ) -> Tuple[Optional[Array], Array, Array, Array, Array, Array, Array]: ...
def gru_forward(x: Array, h0: Array, w_ih: Array, w_hh: Array, b_ih: Array, b_hh: Array,
                training: bool = True, *, batch_sizes: BatchSizes = None, reverse: bool = False,
                out: Optional[Array] = None, threads: Optional[int] = None
                ) -> Tuple[Array, Optional[Workspace]]: ...
def gru_backward(saved: Workspace, h0: Array, w_ih: Array, w_hh: Array, y: Array,
                 dy: Optional[Array], dhT: Array, need_dx: bool = True, *,
                 batch_sizes: BatchSizes = None, reverse: bool = False,
                 threads: Optional[int] = None
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
