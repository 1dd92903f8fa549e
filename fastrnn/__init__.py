"""fastrnn: fast CPU forward and backpropagation-through-time for RNN, LSTM and GRU cells."""

from . import datasets, optim
from ._backends import (available_backends, get_num_threads, release_cached_memory,
                        set_num_threads)
from ._info import __version__, info
from .layers import GRU, LSTM, RNN
from .model import SequenceClassifier, load
from .onnx import export_onnx
from .sequences import pad_sequences

__all__ = [
    "RNN",
    "LSTM",
    "GRU",
    "SequenceClassifier",
    "load",
    "export_onnx",
    "pad_sequences",
    "datasets",
    "optim",
    "available_backends",
    "set_num_threads",
    "get_num_threads",
    "release_cached_memory",
    "info",
    "__version__",
]
