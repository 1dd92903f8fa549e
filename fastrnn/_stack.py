"""The stack driver: the layers and directions of one cell over its kernels.

A stack is L layers of D directions (D = 2 where bidirectional). Layer k's forward
direction reads layer k-1's output (layer 0's: x) from the first step on, its reverse
direction from the last; each direction is one call of the cell's forward kernel, and
with two threads set the two run at the same time (`_run_directions`). Inside,
everything is time-major, in one of two batch layouts: `_Padded` (no lengths, or all
full: a layer's input and output are (T, B, F) arrays) or `Packed` (each sequence its
own length: the tokens alone, packed once per forward). One layer in one direction over
a padded batch is the case that runs without the stack's bookkeeping.

Over a padded batch nothing is copied between kernels: the reverse direction runs its
kernels with reverse=True, which read the layer's input backwards in time where it
lies; both directions write their halves of the layer's one (T, B, 2H) output through
out=, the next layer's input as it is; backward hands each direction its half of the
output's gradient as a view and adds the two input gradients once. A packed batch
reverses each sequence within its own length, which no stride can express: its reverse
direction gathers its input and scatters its output and gradients (`Packed.reverse`).

The driver keeps no state: `forward` returns a `Tape` that `backward` takes, so any
number of forwards can be in flight at once. Its caller checks the arguments (the public
layers in fastrnn.layers do) and draws the dropout masks.
"""

import concurrent.futures
import functools

import numpy as np

from . import _backends


def parameter_keys(k, direction):
    """The state_dict keys of layer k's weights and biases in one direction (a Stack
    holds its own: `Stack.keys`)."""
    suffix = "_reverse" if direction else ""
    return tuple(f"{name}_l{k}{suffix}" for name in ("weight_ih", "weight_hh", "bias_ih",
                                                    "bias_hh"))


def parameter_shapes(gates, input_size, hidden_size, num_layers=1, bidirectional=False):
    """{key: shape} of a stack's parameters in torch's state_dict order: for layer k and
    direction, weight_ih_l{k} (G*H, I_k), weight_hh_l{k} (G*H, H), bias_ih_l{k} and
    bias_hh_l{k} (G*H,), the reverse direction's keys ending in `_reverse`;
    I_0 = input_size, I_k = D*H above."""
    G, H, D = gates, hidden_size, 2 if bidirectional else 1
    shapes = {}
    for k in range(num_layers):
        for direction in range(D):
            w_ih, w_hh, b_ih, b_hh = parameter_keys(k, direction)
            shapes[w_ih] = (G * H, input_size if k == 0 else D * H)
            shapes[w_hh] = (G * H, H)
            shapes[b_ih] = (G * H,)
            shapes[b_hh] = (G * H,)
    return shapes


class Stack:
    """A stack's configuration as the driver needs it: the cell's kernels on one backend,
    L, D and H. Holds no arrays."""

    __slots__ = ("forward_kernel", "backward_kernel", "num_layers", "num_directions",
                 "hidden_size", "concurrent_calls", "one_layer", "keys")

    def __init__(self, backend, kernel, *, num_layers, num_directions, hidden_size):
        for stage in ("forward", "backward"):
            if not hasattr(backend, f"{kernel}_{stage}"):
                raise ValueError(f"the {backend.name} backend has no {kernel}_{stage} "
                                 f"kernel here; choose another backend (available: "
                                 f"{_backends.available_backends()})")
        self.forward_kernel = getattr(backend, f"{kernel}_forward")
        self.backward_kernel = getattr(backend, f"{kernel}_backward")
        self.num_layers = num_layers
        self.num_directions = num_directions
        self.hidden_size = hidden_size
        self.concurrent_calls = getattr(backend, "concurrent_single_thread_calls", False)
        # One layer in one direction: over full-length sequences, forward and backward
        # run it without the stack's bookkeeping.
        self.one_layer = num_layers == 1 and num_directions == 1
        # keys[k][direction]: the parameter_keys of layer k's direction
        self.keys = tuple(tuple(parameter_keys(k, d) for d in range(num_directions))
                          for k in range(num_layers))


# -- how a batch is laid out inside ---------------------------------------------------


class _Padded:
    """Every sequence runs all T steps: a layer's input and output are (T, B, F) arrays,
    rows in their order. The reverse direction runs its kernels in reverse: it reads the
    input, writes its output and reads its gradient where they lie, in time order."""

    def pack(self, a_tm):
        return a_tm

    def unpack(self, a):
        return a

    def sort(self, rows):
        return rows

    unsort = sort

    def options(self, direction):
        """The kernels' options for one direction."""
        return {"reverse": True} if direction else {}

    def reads(self, inputs, direction):
        """The input a direction's forward kernel reads."""
        return inputs

    def writes(self, half, direction):
        """Where a direction's forward kernel writes y (out=), its half of the layer's
        output; None: y of its own, which `join` puts there."""
        return half

    def join(self, half, y, direction):
        """Puts a direction's y into its half of the layer's output, where the kernel did
        not write it."""

    def final(self, y, direction):
        """Each row's output after its last step (sorted order): the reverse direction's
        is at time 0."""
        return y[0] if direction else y[-1]

    def gradient(self, half, direction):
        """dy of one direction, from its half of the layer's output gradient."""
        return half

    def add_input_grad(self, grad, dx, direction):
        """Adds the reverse direction's input gradient to the forward one's."""
        grad += dx


class Packed:
    """Each sequence runs its own length, packed as the kernels take it.

    Rows are sorted by length, longest first (stably, once per forward); step t holds
    the n_t rows still running, stored after step t-1's, so a layer's input and output
    are (N, F) arrays, N the tokens. The reverse direction's packed row (t, k) is the
    token at time lengths[b] - 1 - t of sequence b = order[k]: the forward direction's
    rows in the order `reverse`. That direction gathers its input and scatters its
    output and gradients by it (a stride cannot reverse each sequence within its own
    length); the forward direction writes its half of the output in place.
    """

    def __init__(self, lengths, T):
        self.order = np.argsort(-lengths, kind="stable")
        sorted_lengths = lengths[self.order]
        running = np.arange(sorted_lengths[0])[:, None] < sorted_lengths[None, :]
        steps, rows = np.nonzero(running)           # packed order: step by step
        batch_sizes = running.sum(axis=1, dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(batch_sizes)])
        self.kernel_options = {"batch_sizes": batch_sizes}
        self._time, self._sequence = steps, self.order[rows]
        self.reverse = offsets[sorted_lengths[rows] - 1 - steps] + rows
        self._last = offsets[sorted_lengths - 1] + np.arange(lengths.size)
        self._T = T

    def pack(self, a_tm):
        """(N, F) tokens of a (T, B, F) array (any strides)."""
        return a_tm[self._time, self._sequence]

    def unpack(self, a):
        """(T, B, F) from packed tokens (N, F), zero past each length."""
        out = np.zeros((self._T, self.order.size) + a.shape[1:], dtype=a.dtype)
        out[self._time, self._sequence] = a
        return out

    def sort(self, rows):
        return rows[self.order]

    def unsort(self, rows):
        out = np.empty_like(rows)
        out[self.order] = rows
        return out

    def options(self, direction):
        return self.kernel_options

    def reads(self, inputs, direction):
        return inputs[self.reverse] if direction else inputs

    def writes(self, half, direction):
        return None if direction else half

    def join(self, half, y, direction):
        if direction:
            half[self.reverse] = y

    def final(self, y, direction):
        """Each row's output at its own last step (sorted order), in either direction's
        packed order."""
        return y[self._last]

    def gradient(self, half, direction):
        return half[self.reverse] if direction else half

    def add_input_grad(self, grad, dx, direction):
        grad[self.reverse] += dx


PADDED = _Padded()


def batch_layout(lengths, T):
    """PADDED where `lengths` (checked B int64 in [1, T], or None) leave no sequence
    short, else a Packed layout of them."""
    if lengths is None or lengths.min() == T:
        return PADDED   # every sequence full length: the plain kernels
    return Packed(lengths, T)


class Tape:
    """What backward needs of one training forward: the batch layout, T and B, and per
    layer (dropout mask, [per direction (states0, weights, y, workspace)]); the
    workspace holds what BPTT reads of x."""

    __slots__ = ("batch", "T", "B", "layers")

    def __init__(self, batch, T, B, layers):
        self.batch, self.T, self.B, self.layers = batch, T, B, layers

    def workspace(self, k, direction):
        """The kernel's workspace of layer k in one direction."""
        return self.layers[k][1][direction][-1]


# -- the kernel calls: each in one place --------------------------------------------


def _kernel_weights(stack, params, k, direction):
    """(w_ih, w_hh, b_ih, b_hh) of layer k's direction: the kernels add the biases where
    the cell sums them."""
    return [params[key] for key in stack.keys[k][direction]]


def _forward_kernel(stack, x, s0, weights, training, options, out=None, **threads):
    """The cell's forward kernel on one direction of one layer: (y, [c_T,] workspace)."""
    return stack.forward_kernel(x, *s0, *weights, training, out=out, **options, **threads)


def _backward_kernel(stack, record, dy, ds, need_dx, options, **threads):
    """The cell's backward kernel on one direction of one layer's `record`:
    (dx, dstate0s..., dW_ih, dW_hh, db_ih, db_hh)."""
    s0, weights, y, saved = record
    return stack.backward_kernel(saved, *s0, *weights[:2], y, dy, *ds, need_dx, **options,
                                 **threads)


@functools.lru_cache(maxsize=None)
def _direction_worker():
    """The thread that runs a bidirectional layer's reverse direction (see _run_directions)."""
    return concurrent.futures.ThreadPoolExecutor(max_workers=1,
                                                 thread_name_prefix="fastrnn-reverse")


def _run_directions(stack, calls):
    """The results of a layer's kernel calls, one per direction, in order. Where the
    backend runs one-thread calls side by side and two threads are set, the two
    directions run at the same time, a thread each: no barrier at every time step
    (measured: a bidirectional layer's step at the origin's shape 1.04x to 1.18x as
    fast, by cell, as the directions one after the other on two threads, 1.05x at the
    medium shape, 1.5x at batch 1). Kernels give the same bits
    for any thread count, so the results are those of the sequential run."""
    if len(calls) == 1 or not (stack.concurrent_calls and _backends.get_num_threads() == 2):
        return [call() for call in calls]
    reverse = _direction_worker().submit(calls[1], threads=1)
    forward = calls[0](threads=1)
    return [forward, reverse.result()]


def _halves(stack, joined):
    """Each direction's (..., H) part of a layer's (..., D*H) output or its gradient, as
    views; the array itself for one direction."""
    if stack.num_directions == 1:
        return [joined]
    H = stack.hidden_size
    return [joined[..., :H], joined[..., H:]]


# -- forward and backward -------------------------------------------------------------


def forward(stack, params, x_tm, states0, batch, training, dropout_mask=None):
    """Every layer and direction on x_tm (T, B, I, any strides): (y_tm, finals, tape).

    params: {state_dict key: array}; states0: a tuple of (L*D, B, H) arrays (h, or h and
    c); batch: PADDED or a Packed layout (see `batch_layout`); dropout_mask: None or a
    callable (layer k, shape) -> mask or None, called for k >= 1 where training, whose
    mask multiplies layer k's input (in the batch's layout).

    y_tm: (T, B, D*H), read-only (BPTT may read it), zero past each length; finals: like
    states0, each sequence's states after its own last step; tape: what `backward`
    needs, None unless training.
    """
    if batch is PADDED and stack.one_layer:
        return _forward_one_layer(stack, params, x_tm, states0, training)
    T, B = x_tm.shape[:2]
    outputs, finals, layers = _forward_layers(stack, params, batch.pack(x_tm), states0, batch,
                                              training, dropout_mask)
    y_tm = batch.unpack(outputs)
    # y may be kept for BPTT: hand it out read-only so it cannot be changed under us.
    y_tm.setflags(write=False)
    return y_tm, finals, Tape(batch, T, B, layers) if training else None


def _forward_layers(stack, params, inputs, states0, batch, training, dropout_mask):
    """forward's (last layer's output in the batch's layout, finals, per-layer tape).
    Two directions write their halves of one output array, which is the next layer's
    input."""
    L, D, H = stack.num_layers, stack.num_directions, stack.hidden_size
    B = states0[0].shape[1]
    finals = tuple(np.empty((L * D, B, H), s.dtype) for s in states0)
    layers = []
    for k in range(L):
        mask = None
        if k and training and dropout_mask is not None:
            mask = dropout_mask(k, inputs.shape)
            if mask is not None:
                inputs = inputs * mask
        output = None if D == 1 else np.empty(inputs.shape[:-1] + (D * H,), inputs.dtype)
        halves = [None] if D == 1 else _halves(stack, output)
        s0s = [[batch.sort(s[k * D + d]) for s in states0] for d in range(D)]
        weights = [_kernel_weights(stack, params, k, d) for d in range(D)]
        results = _run_directions(stack, [
            functools.partial(_forward_kernel, stack, batch.reads(inputs, d), s0s[d],
                              weights[d], training, batch.options(d),
                              None if D == 1 else batch.writes(halves[d], d))
            for d in range(D)])
        records = []
        for d, (y, *more_finals, saved) in enumerate(results):
            for final, rows in zip(finals, (batch.final(y, d), *more_finals)):
                final[k * D + d] = batch.unsort(rows)
            if D > 1:
                batch.join(halves[d], y, d)
            if training:
                records.append((s0s[d], weights[d], y, saved))
        layers.append((mask, records))
        inputs = results[0][0] if D == 1 else output
    return inputs, finals, layers


def _forward_one_layer(stack, params, x_tm, states0, training):
    """forward of one layer in one direction over full-length sequences: the same kernel
    call and tape as _forward_layers makes, without the stack's bookkeeping (which cost
    a batch-1 RNN forward (T=28, H=128) 3.4 of its 40 µs)."""
    weights = _kernel_weights(stack, params, 0, 0)
    s0 = [s[0] for s in states0]
    y, *more_finals, saved = _forward_kernel(stack, x_tm, s0, weights, training, {})
    y.setflags(write=False)   # as forward's y
    finals = (y[-1:].copy(), *[final[None] for final in more_finals])
    if not training:
        return y, finals, None
    T, B = x_tm.shape[:2]
    return y, finals, Tape(PADDED, T, B, [(None, [(s0, weights, y, saved)])])


def backward(stack, tape, dy_tm, dstates, need_input_grad):
    """BPTT through the forward that returned `tape`: (dx_tm, dstates0, grads).

    dy_tm: (T, B, D*H) with a contiguous last axis (any other strides) or None for
    zeros; dstates: like forward's finals. dx_tm: (T, B, I), zero past each length,
    None unless need_input_grad; dstates0: like forward's states0; grads: {state_dict
    key: gradient} in state_dict order.
    """
    batch = tape.batch
    grad = None if dy_tm is None else batch.pack(dy_tm)
    if batch is PADDED and stack.one_layer:
        (_, (record,)), = tape.layers   # (no dropout mask, one direction's record)
        return _backward_one_layer(stack, record, grad, dstates, need_input_grad)
    L, D = stack.num_layers, stack.num_directions
    dstates0 = tuple(np.empty_like(s) for s in dstates)
    grads = {}
    for k in reversed(range(L)):
        mask, records = tape.layers[k]
        need_dx = k > 0 or need_input_grad
        dys = [None] * D if grad is None else \
            [batch.gradient(half, d) for d, half in enumerate(_halves(stack, grad))]
        calls = [functools.partial(_backward_kernel, stack, record, dys[d],
                                   [batch.sort(s[k * D + d]) for s in dstates], need_dx,
                                   batch.options(d))
                 for d, record in enumerate(records)]
        grad = None
        for d, (dx, *rest) in enumerate(_run_directions(stack, calls)):
            n_states = len(dstates)
            for out, rows in zip(dstates0, rest[:n_states]):
                out[k * D + d] = batch.unsort(rows)
            grads[k, d] = rest[n_states:]
            if need_dx:  # both directions read the layer's input: their gradients add up
                if d == 0:
                    grad = dx
                else:
                    batch.add_input_grad(grad, dx, d)
        if mask is not None:
            grad = grad * mask
    named = {key: value for k in range(L) for d in range(D)
             for key, value in zip(stack.keys[k][d], grads[k, d])}
    return (batch.unpack(grad) if need_input_grad else None), dstates0, named


def _backward_one_layer(stack, record, dy, dstates, need_input_grad):
    """backward for one layer in one direction over full-length sequences, as
    _forward_one_layer is to _forward_layers."""
    dx, *rest = _backward_kernel(stack, record, dy, [s[0] for s in dstates],
                                 need_input_grad, {})
    n_states = len(dstates)
    return (dx, tuple([d[None] for d in rest[:n_states]]),
            dict(zip(stack.keys[0][0], rest[n_states:])))
