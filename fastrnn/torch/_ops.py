"""fastrnn's stack as torch custom operators, with autograd through its BPTT.

    fastrnn::recurrent           the whole stack forward (every layer and direction)
    fastrnn::recurrent_backward  its BPTT, from the record the forward kept

Being custom operators (torch.library.custom_op, with fake implementations and
registered autograd), they trace whole under torch.compile and torch.export; being
opaque to torch, what runs inside is plain fastrnn: tensors are handed to the kernels
as numpy views of their memory (no copies, parameters read as they are at each call)
and the kernels release the GIL.

How the forward's record reaches the backward. A custom operator returns tensors only,
and under torch.compile its autograd context is traced with fake tensors, so the
record (fastrnn's workspace: gates, cell states, its copy of x) cannot ride on `ctx`.
The forward returns instead a one-element int64 tensor, the record's key in `_records`,
and the backward looks the key up. The handle tensor's memory is a numpy array that
carries a finalizer removing the entry, so the record lives exactly as long as the
handle's memory: as long as autograd (eager or compiled) keeps the handle saved for the
backward, and not a moment longer (views and aliases of the handle share that memory,
and torch frees it when the graph is freed or the output is dropped). torch 2.13's
opaque objects could carry the record itself, but only through private API.

What the record holds besides fastrnn's own arrays (x, h0, c0, the parameters, y) is
also saved by autograd and passed to the backward operator, so under torch.compile no
buffer the record reads is reused for something else, and in eager mode an in-place
change to any of them before backward is the usual torch error.

Dropout masks are drawn inside the forward, from torch's default generator, in the
shapes and order torch.nn's modules draw them, so torch.manual_seed governs them and a
compiled model draws the same masks as eager mode.
"""

import functools
import itertools
import weakref
from typing import Optional

import numpy as np
import torch
from torch.utils._python_dispatch import _get_current_dispatch_mode

from .. import _arrays, _backends, _stack
from ..cells import KERNELS
from . import _threads

Tensor = torch.Tensor

_NO_RECORD = 0


# -- records --------------------------------------------------------------------------

_records = {}                 # key -> _Record
_next_key = itertools.count(_NO_RECORD + 1)


def _keep(record):
    """An int64 handle tensor for `record`, which stays in `_records` exactly as long as
    the handle's memory (see the module's docstring)."""
    key = next(_next_key)
    memory = np.array([key], dtype=np.int64)
    _records[key] = record
    weakref.finalize(memory, _records.pop, key, None)
    return torch.from_numpy(memory)


def _find(handle):
    record = _records.get(int(handle[0]))
    if record is None:
        raise RuntimeError("fastrnn.torch: the forward's record for this backward is gone "
                           "(was the forward run under torch.no_grad, or its handle "
                           "copied?); run the forward again with gradients enabled")
    return record


# -- the stack's configuration and arrays ----------------------------------------------

@functools.lru_cache(maxsize=None)
def _stack_of(backend_name, kernel, num_layers, bidirectional, hidden_size, precision):
    backend = _backends.get_backend(backend_name)
    stack = _stack.Stack(backend, kernel, num_layers=num_layers,
                         num_directions=2 if bidirectional else 1, hidden_size=hidden_size,
                         precision=precision)
    if _threads.share_torch_openmp():
        # The two directions side by side would take a thread beside torch's team
        # (see _threads): on the team they run one after the other.
        stack.concurrent_calls = False
    return stack


def _array(tensor):
    """The numpy view of a CPU tensor's memory (no copy)."""
    return tensor.detach().numpy()


def _contiguous_array(tensor):
    """_array, copied only where the tensor is not C-contiguous (torch takes any strides,
    the kernels read states and weights whole)."""
    return np.ascontiguousarray(tensor.detach().numpy())


def _step_array(tensor):
    """_array of a per-step tensor (x, dy), whose rows the kernels read contiguous: any
    other strides are fine (the compiled backend reads a batch-first view as it is), a
    broadcast view (dy of y.sum(), say) is copied."""
    array = _array(tensor)
    return array if array.strides[-1] == array.itemsize else np.ascontiguousarray(array)


def _parameters(weights, bias, num_layers, bidirectional):
    """{state_dict key: array} of the module's flat weight list (torch's order)."""
    arrays = [_contiguous_array(w) for w in weights]
    if bias:
        keys = [key for k in range(num_layers) for d in range(1 + bidirectional)
                for key in _stack.parameter_keys(k, d)]
        return dict(zip(keys, arrays))
    params = {}
    for k in range(num_layers):
        for d in range(1 + bidirectional):
            w_ih, w_hh, b_ih, b_hh = _stack.parameter_keys(k, d)
            params[w_ih], params[w_hh] = arrays.pop(0), arrays.pop(0)
            # bias=False: the kernels add zeros
            params[b_ih] = params[b_hh] = _arrays.zeros(params[w_ih].shape[:1],
                                                         params[w_ih].dtype)
    return params


class _AlreadyPacked(_stack.Packed):
    """The batch of a torch PackedSequence: its data is packed as the kernels take it
    already (sorted by length, step by step), so packing, unpacking and sorting leave it
    be, and the layout Packed's methods read is made from batch_sizes in O(T + B)
    (Packed's own constructor, which sorts lengths and lists every token, cost 100-200
    us a call at the origin shape)."""

    def __init__(self, batch_sizes, N):
        if batch_sizes.ndim != 1 or batch_sizes.size == 0 or batch_sizes[-1] < 1 \
                or np.any(np.diff(batch_sizes) > 0) or batch_sizes.sum() != N:
            raise ValueError(f"PackedSequence.batch_sizes must be positive, non-increasing "
                             f"and sum to the {N} rows of its data (as "
                             f"torch.nn.utils.rnn.pack_padded_sequence makes them), got "
                             f"{batch_sizes.tolist()}")
        self.kernel_options = {"batch_sizes": batch_sizes}
        B = int(batch_sizes[0])
        self.order = np.arange(B)
        # lengths[b]: the steps with more than b rows (non-increasing in b)
        steps_of_size = np.bincount(batch_sizes, minlength=B + 1)
        self._lengths = np.cumsum(steps_of_size[::-1])[::-1][1:]
        self._offsets = np.concatenate([[0], np.cumsum(batch_sizes)])
        self._last = self._offsets[self._lengths - 1] + self.order

    @functools.cached_property
    def reverse(self):
        """Packed.reverse: row (t, b) of the reverse direction reads the token of sequence
        b at time lengths[b] - 1 - t (made only where a stack has that direction)."""
        batch_sizes = self.kernel_options["batch_sizes"]
        steps = np.repeat(np.arange(batch_sizes.size), batch_sizes)
        rows = np.arange(steps.size) - self._offsets[steps]
        return self._offsets[self._lengths[rows] - 1 - steps] + rows

    def pack(self, a):
        return a

    unpack = sort = unsort = pack


def _states0(h0, c0, kernel, shape, dtype):
    """The kernels' initial states (h, or h and c): zeros where none is given."""
    given = (h0, c0)[:len(KERNELS[kernel].states)]
    return tuple(_arrays.zeros(shape, dtype) if s is None else _contiguous_array(s)
                 for s in given)


def _dropout_masks(p, dtype):
    """The stack's dropout_mask: each layer's mask drawn as torch.nn's modules draw it
    (bernoulli(1 - p) / (1 - p) over the layer's input, from torch's generator)."""
    if p == 0.0:
        return None
    return lambda k, shape: _array(torch.empty(shape, dtype=dtype).bernoulli_(1 - p)
                                   .div_(1 - p))


def _nothing(dtype):
    """An output a cell or a call does not have (c_n of a GRU, dh0 without h0, ...)."""
    return torch.empty(0, dtype=dtype)


class _Record:
    """What a training forward keeps for its backward."""

    __slots__ = ("stack", "tape", "num_states", "state_shape", "dtype")

    def __init__(self, stack, tape, states0):
        self.stack, self.tape = stack, tape
        self.num_states, self.state_shape = len(states0), states0[0].shape
        self.dtype = states0[0].dtype


# -- the operators ----------------------------------------------------------------------

def _forward(x: Tensor, h0: Optional[Tensor], c0: Optional[Tensor], weights: list[Tensor],
             batch_sizes: Optional[Tensor], kernel: str, num_layers: int,
             bidirectional: bool, bias: bool, dropout: float, precision: str,
             keep_record: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(y, h_n, c_n, record handle); see `recurrent`."""
    _threads.follow_torch()
    H = weights[1].shape[1]
    stack = _stack_of(None, kernel, num_layers, bidirectional, H, precision)
    x_array = _step_array(x)
    dtype = x_array.dtype
    params = _parameters(weights, bias, num_layers, bidirectional)
    if batch_sizes is None:
        batch = _stack.PADDED
        B = x.shape[1]
    else:
        batch = _AlreadyPacked(_array(batch_sizes), x.shape[0])
        B = int(batch_sizes[0])
    LD = num_layers * (2 if bidirectional else 1)
    states0 = _states0(h0, c0, kernel, (LD, B, H), dtype)
    y, finals, tape = _stack.forward(stack, params, x_array, states0, batch, keep_record,
                                     _dropout_masks(dropout, x.dtype))
    handle = _keep(_Record(stack, tape, states0)) if keep_record \
        else torch.tensor([_NO_RECORD])
    c_n = torch.from_numpy(finals[1]) if len(finals) == 2 else _nothing(x.dtype)
    return torch.from_numpy(y), torch.from_numpy(finals[0]), c_n, handle


def _backward(handle: Tensor, dy: Optional[Tensor], dh_n: Optional[Tensor],
              dc_n: Optional[Tensor], x: Tensor, h0: Optional[Tensor], c0: Optional[Tensor],
              weights: list[Tensor], y: Tensor, bias: bool, need_dx: bool
              ) -> tuple[Tensor, Tensor, Tensor, list[Tensor]]:
    """(dx, dh0, dc0, the gradient of every weight); an empty tensor where the forward
    had no such input (h0, c0) or dx is not needed. x, h0, c0, the weights and y come
    only so that autograd keeps them intact for the record, which reads them."""
    record = _find(handle)
    _threads.follow_torch()
    # torch may hand a gradient over as a broadcast view (that of h_n.sum(), say)
    dstates = tuple(_arrays.zeros(record.state_shape, record.dtype) if d is None
                    else _contiguous_array(d) for d in (dh_n, dc_n)[:record.num_states])
    dx, dstates0, grads = _stack.backward(record.stack, record.tape,
                                          None if dy is None else _step_array(dy), dstates,
                                          need_dx)
    keys = [key for key in grads if bias or key.startswith("weight")]
    return (torch.from_numpy(dx) if need_dx else _nothing(y.dtype),
            torch.from_numpy(dstates0[0]) if h0 is not None else _nothing(y.dtype),
            torch.from_numpy(dstates0[1]) if c0 is not None else _nothing(y.dtype),
            [torch.from_numpy(grads[key]) for key in keys])


_recurrent = torch.library.custom_op(
    "fastrnn::recurrent", _forward, mutates_args=(), device_types="cpu",
    tags=(torch.Tag.nondeterministic_seeded,))   # dropout: two calls are never one
_recurrent_backward = torch.library.custom_op(
    "fastrnn::recurrent_backward", _backward, mutates_args=(), device_types="cpu")


@_recurrent.register_fake
def _(x, h0, c0, weights, batch_sizes, kernel, num_layers, bidirectional, bias, dropout,
      precision, keep_record):
    H = weights[1].shape[1]
    D = 2 if bidirectional else 1
    B = h0.shape[1] if h0 is not None else x.shape[1]
    y = x.new_empty(x.shape[:-1] + (D * H,))
    h_n = x.new_empty((num_layers * D, B, H))
    c_n = x.new_empty((num_layers * D, B, H) if len(KERNELS[kernel].states) == 2 else (0,))
    return y, h_n, c_n, x.new_empty((1,), dtype=torch.int64)


@_recurrent_backward.register_fake
def _(handle, dy, dh_n, dc_n, x, h0, c0, weights, y, bias, need_dx):
    nothing = y.new_empty((0,))
    return (x.new_empty(x.shape) if need_dx else nothing,
            h0.new_empty(h0.shape) if h0 is not None else nothing,
            c0.new_empty(c0.shape) if c0 is not None else nothing,
            [w.new_empty(w.shape) for w in weights])


# -- autograd ---------------------------------------------------------------------------

def _setup_context(ctx, inputs, output):
    x, h0, c0, weights, _, _, _, _, bias, _, _, _ = inputs
    y, _, _, handle = output
    ctx.save_for_backward(handle, x, h0, c0, y, *weights)
    ctx.bias = bias
    ctx.set_materialize_grads(False)   # an output without a gradient stays None


def _gradients(ctx, dy, dh_n, dc_n, backward):
    """(dx, dh0, dc0, [dweights]) of the inputs, None where there is none to give, from
    `backward` (the operator, or its implementation)."""
    if torch.is_grad_enabled():
        raise RuntimeError("fastrnn.torch has no double backward (create_graph=True, "
                           "gradients of gradients): use torch.nn's LSTM / GRU / RNN for it")
    handle, x, h0, c0, y, *weights = ctx.saved_tensors
    need_dx = ctx.needs_input_grad[0]
    dx, dh0, dc0, dweights = backward(handle, dy, dh_n, dc_n, x, h0, c0, weights, y,
                                      ctx.bias, need_dx)
    return (dx if need_dx else None, dh0 if h0 is not None else None,
            dc0 if c0 is not None else None, dweights)


def _operator_backward(ctx, dy, dh_n, dc_n, _):
    return (*_gradients(ctx, dy, dh_n, dc_n, _recurrent_backward),) + (None,) * 8


_recurrent.register_autograd(_operator_backward, setup_context=_setup_context)


def _no_double_backward(ctx, *grads):
    raise RuntimeError("fastrnn.torch has no double backward (create_graph=True, "
                       "gradients of gradients): use torch.nn's LSTM / GRU / RNN for it")


_recurrent_backward.register_autograd(_no_double_backward, setup_context=lambda *a: None)


class _Eager(torch.autograd.Function):
    """The operator's eager twin: the same implementation, record and gradients, through
    torch.autograd.Function instead of the dispatcher, whose custom-operator autograd
    (flattening the arguments at every call) cost more than the kernels on small shapes:
    a tiny LSTM's (T=3, B=2, H=8) forward with gradients took 168 us of CPU through the
    operator, 55 us here, its forward and backward 499 against 166 us (torch.nn.LSTM:
    79 and 267 us)."""

    @staticmethod
    def forward(ctx, x, h0, c0, batch_sizes, options, *weights):
        inputs = (x, h0, c0, list(weights), batch_sizes, *options)
        output = _forward(*inputs)
        _setup_context(ctx, inputs, output)
        ctx.mark_non_differentiable(output[3])
        return output

    @staticmethod
    def backward(ctx, dy, dh_n, dc_n, _):
        dx, dh0, dc0, dweights = _gradients(ctx, dy, dh_n, dc_n, _backward)
        return (dx, dh0, dc0, None, None, *dweights)


def _traced(x):
    """Whether torch traces this call rather than runs it (torch.compile, torch.export,
    make_fx, a dispatch mode such as FakeTensorMode, a tensor subclass), where only the
    operator will do."""
    return (torch.compiler.is_compiling() or type(x) is not torch.Tensor
            or _get_current_dispatch_mode() is not None)


def recurrent(kernel, x, states, weights, batch_sizes, num_layers, bidirectional, bias,
              dropout, precision="fp32"):
    """The stack on time-major x (T, B, I) (or a PackedSequence's data (N, I) with
    `batch_sizes`) from `states` (a tuple of (L*D, B, H) tensors, or None for zeros):
    (y, finals), y (T, B, D*H) or (N, D*H), finals a tuple like `states`. Every kernel
    call, forward and backward, runs at `precision` ("fp32" or "bf16": fastrnn's). The
    record for backward is kept only where autograd will ask for it."""
    h0, c0 = (tuple(states) + (None,))[:2] if states is not None else (None, None)
    keep_record = torch.is_grad_enabled() and (
        x.requires_grad or any(w.requires_grad for w in weights)
        or any(s.requires_grad for s in states or ()))
    options = (kernel, num_layers, bidirectional, bias, dropout, precision, keep_record)
    if _traced(x):
        y, h_n, c_n, _ = _recurrent(x, h0, c0, weights, batch_sizes, *options)
    elif keep_record:
        y, h_n, c_n, _ = _Eager.apply(x, h0, c0, batch_sizes, options, *weights)
    else:   # nothing to differentiate: no autograd node (whose making costs ~28 us)
        y, h_n, c_n, _ = _forward(x, h0, c0, weights, batch_sizes, *options)
    return y, ((h_n, c_n) if len(KERNELS[kernel].states) == 2 else (h_n,))
