"""LSTM, GRU and RNN as torch.nn modules over fastrnn's kernels, and convert().

torch's own `nn.RNNBase` holds the parameters, so names, shapes, init, `state_dict`,
`flatten_parameters` and the repr are torch's to the letter; `forward` takes and
returns what torch's does and hands the recurrence to fastrnn's stack through the
custom operator in `_ops`. The classes derive from RNNBase, not from nn.LSTM & co.,
because torch.compile refuses to trace anything that is an nn.LSTM/GRU/RNN.
"""

import warnings

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from ..cells import CELLS
from . import _ops

# fastrnn's cell of each of torch's modes, and its nonlinearity.
_CELL_OF_MODE = {"RNN_TANH": ("rnn", "tanh"), "RNN_RELU": ("rnn", "relu"),
                 "LSTM": ("lstm", "tanh"), "GRU": ("gru", "tanh")}
_DTYPES = (torch.float32, torch.float64)

# What torch 2.13's modules return under torch.autocast("cpu", dtype=torch.bfloat16): the
# RNN, and the LSTM over a padded batch, bfloat16 (autocast runs them in it); the GRU,
# and the LSTM over a PackedSequence, the dtype of their state (autocast leaves them be).
_AUTOCAST_RETURNS_ITS_DTYPE = {"RNN_TANH", "RNN_RELU", "LSTM"}
_AUTOCAST_PADDED_ONLY = {"LSTM"}


class _Recurrent(nn.RNNBase):
    """What LSTM, GRU and RNN share: argument handling as torch's forward, then one call
    of fastrnn's stack."""

    def __init__(self, mode, input_size, hidden_size, num_layers, bias, batch_first,
                 dropout, bidirectional, device, dtype):
        _check_factory(type(self).__name__, device, dtype)
        super().__init__(mode, input_size, hidden_size, num_layers, bias, batch_first,
                         dropout, bidirectional, 0, device, dtype)

    @property
    def _kernel(self):
        cell, nonlinearity = _CELL_OF_MODE[self.mode]
        return CELLS[cell].kernels[nonlinearity]

    @property
    def _num_states(self):
        return len(CELLS[_CELL_OF_MODE[self.mode][0]].states)

    def forward(self, input, hx=None):
        name = type(self).__name__
        D = 2 if self.bidirectional else 1
        batch_sizes = sorted_indices = unsorted_indices = None
        if isinstance(input, PackedSequence):
            x, batch_sizes, sorted_indices, unsorted_indices = input
            batched = True
        else:
            if input.dim() not in (2, 3):
                raise ValueError(f"{name}: Expected input to be 2D or 3D, got "
                                 f"{input.dim()}D tensor instead")
            batched = input.dim() == 3
            if not batched:        # one sequence (T, I): a batch of one, time-major
                x = input.unsqueeze(1)
            elif self.batch_first:
                x = input.transpose(0, 1)
            else:
                x = input
        if x.shape[-1] != self.input_size:
            raise RuntimeError(f"input.size(-1) must be equal to input_size. Expected "
                               f"{self.input_size}, got {x.shape[-1]}")
        weights = [getattr(self, key) for key in self._flat_weights_names]
        compute_dtype, precision, out_dtype = self._dtypes(x, hx, weights,
                                                           batch_sizes is not None)
        x = x.to(compute_dtype)
        if batch_sizes is not None:
            B = sorted_indices.numel() if sorted_indices is not None else int(batch_sizes[0])
        else:
            B = x.shape[1]
        states = self._initial_states(hx, batched, B, compute_dtype)
        if states is not None and sorted_indices is not None:
            # each row of hx belongs to the sequence the caller put there
            states = tuple(s.index_select(1, sorted_indices) for s in states)
        if states is None and batch_sizes is not None:
            states = tuple(x.new_zeros((self.num_layers * D, B, self.hidden_size))
                           for _ in range(self._num_states))
        dropout = self.dropout if self.training and self.num_layers > 1 else 0.0
        y, finals = _ops.recurrent(self._kernel, x, states, weights, batch_sizes,
                                   self.num_layers, self.bidirectional, self.bias, dropout,
                                   precision)
        if out_dtype != compute_dtype:
            y, finals = y.to(out_dtype), tuple(s.to(out_dtype) for s in finals)
        if unsorted_indices is not None:
            finals = tuple(s.index_select(1, unsorted_indices) for s in finals)
        if batch_sizes is not None:
            output = PackedSequence(y, batch_sizes, sorted_indices, unsorted_indices)
        elif not batched:
            output, finals = y.squeeze(1), tuple(s.squeeze(1) for s in finals)
        else:
            output = y.transpose(0, 1) if self.batch_first else y
        return output, (finals if self._num_states == 2 else finals[0])

    def _dtypes(self, x, hx, weights, packed):
        """(the dtype the kernels run in, their precision, the dtype returned), refusing
        what fastrnn lacks: devices other than the CPU, dtypes other than float32 and
        float64, float16 autocast."""
        name = type(self).__name__
        for tensor, what in [(x, "input"), (weights[0], "the parameters")]:
            if tensor.device.type != "cpu":
                raise RuntimeError(f"fastrnn.torch.{name} runs on the CPU, but {what} "
                                   f"{'is' if what == 'input' else 'are'} on "
                                   f"{tensor.device}: use torch.nn.{name} there")
        weight_dtype = weights[0].dtype
        if weight_dtype not in _DTYPES:
            raise TypeError(f"fastrnn.torch.{name} runs in float32 or float64, but its "
                            f"parameters are {weight_dtype}: use torch.nn.{name} for "
                            f"{weight_dtype}, or torch.autocast('cpu', "
                            f"dtype=torch.bfloat16) around a float32 module")
        # autocast, as torch's, leaves float64 modules be
        if weight_dtype == torch.float32 and torch.is_autocast_enabled("cpu"):
            return (torch.float32, "bf16") + (self._autocast_dtype(x, hx, packed),)
        if x.dtype != weight_dtype:
            raise ValueError(f"RNN input dtype ({x.dtype}) does not match weight dtype "
                             f"({weight_dtype}). Convert input: input.to({weight_dtype}), "
                             f"or convert model: model.to({x.dtype})")
        return weight_dtype, "fp32", weight_dtype

    def _autocast_dtype(self, x, hx, packed):
        """The dtype torch's module returns under torch.autocast('cpu', bfloat16), where
        fastrnn's kernels run float32 arrays at precision "bf16"."""
        name = type(self).__name__
        autocast_dtype = torch.get_autocast_dtype("cpu")
        if autocast_dtype != torch.bfloat16:
            raise TypeError(f"fastrnn.torch.{name} has no {autocast_dtype}: under "
                            f"torch.autocast('cpu', dtype={autocast_dtype}) use "
                            f"torch.nn.{name}, or autocast to torch.bfloat16")
        if x.dtype not in (torch.float32, torch.bfloat16):
            raise ValueError(f"fastrnn.torch.{name} under autocast takes float32 or "
                             f"bfloat16 input, got {x.dtype}: convert it with "
                             f"input.float()")
        if self.mode in _AUTOCAST_RETURNS_ITS_DTYPE \
                and not (packed and self.mode in _AUTOCAST_PADDED_ONLY):
            return autocast_dtype
        # torch runs these unchanged, in the dtype of their state (hx, or zeros like x)
        if hx is None:
            return x.dtype
        return (hx[0] if isinstance(hx, (tuple, list)) else hx).dtype

    def _initial_states(self, hx, batched, B, dtype):
        """hx as a tuple of (L*D, B, H) tensors (h, or h and c), checked as torch checks
        it; None when the caller gave none (the kernels then start from zeros)."""
        if hx is None:
            return None
        if self._num_states == 2:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError(f"hx for an LSTM must be a tuple (h_0, c_0), got "
                                f"{type(hx).__name__}")
            states = tuple(hx)
        else:
            states = (hx,)
        dims = 3 if batched else 2
        if any(s.dim() != dims for s in states):
            got = ", ".join(f"{s.dim()}-D" for s in states)
            raise RuntimeError(f"For {'batched 3-D' if batched else 'unbatched 2-D'} "
                               f"input, hx should also be {dims}-D but got {got} tensor")
        if not batched:
            states = tuple(s.unsqueeze(1) for s in states)
        expected = (self.num_layers * (2 if self.bidirectional else 1), B, self.hidden_size)
        for k, s in enumerate(states):
            if tuple(s.shape) != expected:
                which = f"hidden[{k}] " if self._num_states == 2 else "hidden "
                raise RuntimeError(f"Expected {which}size {expected}, got {list(s.shape)}")
            if s.device.type != "cpu":
                name = type(self).__name__
                raise RuntimeError(f"fastrnn.torch.{name} runs on the CPU, but hx is on "
                                   f"{s.device}: use torch.nn.{name} there")
        return tuple(s.to(dtype) for s in states)


def _check_factory(name, device, dtype):
    """Refuse at construction what the kernels cannot run, naming torch's module."""
    if device is not None and torch.device(device).type not in ("cpu", "meta"):
        raise ValueError(f"fastrnn.torch.{name} runs on the CPU, got device={device!r}: "
                         f"use torch.nn.{name} for other devices")
    dtype = torch.get_default_dtype() if dtype is None else dtype
    if dtype not in _DTYPES:
        raise TypeError(f"fastrnn.torch.{name} runs in float32 or float64, got "
                        f"dtype={dtype}: use torch.nn.{name} for {dtype}, or "
                        f"torch.autocast('cpu', dtype=torch.bfloat16) around a float32 "
                        f"module")


class RNN(_Recurrent):
    """torch.nn.RNN's arguments and results: h_t = act(x_t W_ih^T + b_ih + h_{t-1}
    W_hh^T + b_hh), act tanh or relu."""

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, device=None,
                 dtype=None):
        modes = {"tanh": "RNN_TANH", "relu": "RNN_RELU"}
        if nonlinearity not in modes:
            raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' "
                             f"or 'relu'.")
        self.nonlinearity = nonlinearity
        super().__init__(modes[nonlinearity], input_size, hidden_size, num_layers, bias,
                         batch_first, dropout, bidirectional, device, dtype)


class LSTM(_Recurrent):
    """torch.nn.LSTM's arguments and results (gate order i, f, g, o); no proj_size."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, proj_size=0, device=None, dtype=None):
        if proj_size != 0:
            raise ValueError(f"fastrnn.torch.LSTM has no projections, got "
                             f"proj_size={proj_size!r}: use torch.nn.LSTM for "
                             f"proj_size > 0")
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first,
                         dropout, bidirectional, device, dtype)


class GRU(_Recurrent):
    """torch.nn.GRU's arguments and results (gate order r, z, n)."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, device=None, dtype=None):
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first,
                         dropout, bidirectional, device, dtype)


# -- convert ------------------------------------------------------------------------

_REPLACEMENTS = {nn.LSTM: LSTM, nn.GRU: GRU, nn.RNN: RNN}


def convert(module):
    """Replace every torch.nn.LSTM / GRU / RNN inside `module` (at any depth, in any
    container) by fastrnn's module of the same configuration holding the very same
    Parameter objects, so weights, their gradients and an optimizer built over them
    carry over. Works in place and returns `module` (the replacement, where `module`
    itself is one of them). Subclasses of torch's modules are left alone: their
    forward is their author's.
    """
    done = {}   # id(torch module) -> its replacement: one module used twice stays one

    def replacement(child):
        if type(child) not in _REPLACEMENTS:
            return None
        if id(child) not in done:
            done[id(child)] = _from_torch(child)
        return done[id(child)]

    top = replacement(module)
    if top is not None:
        return top
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            new = replacement(child)
            if new is not None:
                setattr(parent, name, new)
    return module


def _from_torch(module):
    """fastrnn's module for the torch module `module`, sharing its parameters."""
    cls = _REPLACEMENTS[type(module)]
    name = cls.__name__
    if getattr(module, "proj_size", 0):
        raise ValueError(f"convert: this torch.nn.LSTM has proj_size={module.proj_size}, "
                         f"which fastrnn lacks: keep torch.nn.LSTM for it ({module})")
    first = getattr(module, module._flat_weights_names[0])
    if first.device.type != "cpu":
        raise ValueError(f"convert: fastrnn.torch.{name} runs on the CPU, this "
                         f"torch.nn.{name} is on {first.device}: keep torch.nn.{name} "
                         f"there, or convert before moving the model")
    options = dict(num_layers=module.num_layers, bias=module.bias,
                   batch_first=module.batch_first, dropout=module.dropout,
                   bidirectional=module.bidirectional, dtype=first.dtype,
                   device="meta")   # no init drawn from torch's generator, no memory
    if cls is RNN:
        options["nonlinearity"] = module.nonlinearity
    with warnings.catch_warnings():   # torch's own warnings were given when it was made
        warnings.simplefilter("ignore")
        new = cls(module.input_size, module.hidden_size, **options)
    for key in module._flat_weights_names:
        setattr(new, key, getattr(module, key))
    return new.train(module.training)
