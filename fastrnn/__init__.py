"""fastrnn: fast CPU forward and backpropagation-through-time for RNN and LSTM cells."""

from ._backends import available_backends, get_num_threads, set_num_threads
from ._info import __version__, info
from .layers import LSTM, RNN

__all__ = [
    "RNN",
    "LSTM",
    "available_backends",
    "set_num_threads",
    "get_num_threads",
    "info",
    "__version__",
]
