"""fastrnn: fast CPU forward and backpropagation-through-time for RNN and LSTM cells."""

from . import datasets, optim
from ._backends import (available_backends, get_num_threads, release_cached_memory,
                        set_num_threads)
from ._info import __version__, info
from .layers import LSTM, RNN
from .model import SequenceClassifier, load

__all__ = [
    "RNN",
    "LSTM",
    "SequenceClassifier",
    "load",
    "datasets",
    "optim",
    "available_backends",
    "set_num_threads",
    "get_num_threads",
    "release_cached_memory",
    "info",
    "__version__",
]
