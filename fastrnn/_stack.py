"""The stack driver: the layers and directions of one cell over its kernels.

A stack is L layers of D directions (D = 2 where bidirectional). Layer k's forward
direction reads layer k-1's output (layer 0's: x) from the first step on, its reverse
direction from the last; each direction is one call of the cell's forward kernel, and
with two threads set the two run at the same time (`_run_directions`). Inside,
everything is time-major, in one of two batch layouts: `_Padded` (no lengths, or all
full: a layer's input and output are (T, B, F) arrays and the reverse direction reads
them backwards in time) or `Packed` (each sequence its own length: the tokens alone,
packed once per forward). One layer in one direction over a padded batch is the case
that runs without the stack's bookkeeping.

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
                 "hidden_size", "reads_x_views", "concurrent_calls", "one_layer", "keys")

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
        # The compiled backend reads x through strides and copies what BPTT needs.
        self.reads_x_views = getattr(backend, "reads_x_views", False)
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
    and the reverse direction reads them backwards in time. Rows keep their order."""

    kernel_options = {}                 # the unpacked kernels, exactly as without layers
    reverse = slice(None, None, -1)

    def pack(self, a_tm):
        return a_tm

    def unpack(self, a):
        return a

    def final(self, y):
        return y[-1]

    def sort(self, rows):
        return rows

    unsort = sort


class Packed:
    """Each sequence runs its own length, packed as the kernels take it.

    Rows are sorted by length, longest first (stably, once per forward); step t holds
    the n_t rows still running, stored after step t-1's, so a layer's input and output
    are (N, F) arrays, N the tokens. The reverse direction's packed row (t, k) is the
    token at time lengths[b] - 1 - t of sequence b = order[k]: the forward direction's
    rows in the order `reverse`.
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

    def final(self, y):
        """Each row's output at its own last step (sorted order)."""
        return y[self._last]

    def sort(self, rows):
        return rows[self.order]

    def unsort(self, rows):
        out = np.empty_like(rows)
        out[self.order] = rows
        return out


PADDED = _Padded()


def batch_layout(lengths, T):
    """PADDED where `lengths` (checked B int64 in [1, T], or None) leave no sequence
    short, else a Packed layout of them."""
    if lengths is None or lengths.min() == T:
        return PADDED   # every sequence full length: the plain kernels
    return Packed(lengths, T)


class Tape:
    """What backward needs of one training forward: the batch layout, T and B, and per
    layer (dropout mask, [per direction (x, states0, weights, y, workspace)])."""

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


def _forward_kernel(stack, x, s0, weights, training, batch, **threads):
    """The cell's forward kernel on one direction of one layer: (y, [c_T,] workspace)."""
    return stack.forward_kernel(x, *s0, *weights, training, **batch.kernel_options,
                                **threads)


def _backward_kernel(stack, record, dy, ds, need_dx, batch, **threads):
    """The cell's backward kernel on one direction of one layer's `record`:
    (dx, dstate0s..., dW_ih, dW_hh, db_ih, db_hh)."""
    _, s0, weights, y, saved = record
    return stack.backward_kernel(saved, *s0, *weights[:2], y, dy, *ds, need_dx,
                                 **batch.kernel_options, **threads)


def _split_grads(results, n_states):
    """A backward kernel's results after dx: (dstate0s, [dW_ih, dW_hh, db_ih, db_hh])."""
    return results[:n_states], list(results[n_states:])


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
    inputs = _kernel_input(stack, batch.pack(x_tm), x_tm, training)
    outputs, finals, layers = _forward_layers(stack, params, inputs, states0, batch,
                                              training, dropout_mask)
    y_tm = batch.unpack(outputs)
    # y may be kept for BPTT: hand it out read-only so it cannot be changed under us.
    y_tm.setflags(write=False)
    return y_tm, finals, Tape(batch, T, B, layers) if training else None


def _kernel_input(stack, inputs, x_tm, training):
    """Layer 0's input as the backend takes it: the compiled backend reads views and
    copies what BPTT needs; the others read contiguous arrays and keep x for BPTT, which
    must see it as this forward did, not as the caller may leave it."""
    if not stack.reads_x_views and (not inputs.flags.c_contiguous
                                    or training and np.may_share_memory(inputs, x_tm)):
        return np.array(inputs)
    return inputs


def _forward_layers(stack, params, inputs, states0, batch, training, dropout_mask):
    """forward's (last layer's output in the batch's layout, finals, per-layer tape)."""
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
        outputs, records = [], []
        xs = [inputs if d == 0 else np.ascontiguousarray(inputs[batch.reverse])
              for d in range(D)]
        s0s = [[batch.sort(s[k * D + d]) for s in states0] for d in range(D)]
        weights = [_kernel_weights(stack, params, k, d) for d in range(D)]
        results = _run_directions(stack, [
            functools.partial(_forward_kernel, stack, xs[d], s0s[d], weights[d], training,
                              batch) for d in range(D)])
        for direction, (y, *more_finals, saved) in enumerate(results):
            i = k * D + direction
            for final, rows in zip(finals, (batch.final(y), *more_finals)):
                final[i] = batch.unsort(rows)
            outputs.append(y)
            if training:
                records.append((xs[direction], s0s[direction], weights[direction], y, saved))
        layers.append((mask, records))
        inputs = _join_directions(stack, outputs, batch)
    return inputs, finals, layers


def _forward_one_layer(stack, params, x_tm, states0, training):
    """forward of one layer in one direction over full-length sequences: the same kernel
    call and tape as _forward_layers makes, without the stack's bookkeeping (which cost
    a batch-1 RNN forward (T=28, H=128) 3.4 of its 40 µs)."""
    inputs = x_tm if stack.reads_x_views else _kernel_input(stack, x_tm, x_tm, training)
    weights = _kernel_weights(stack, params, 0, 0)
    s0 = [s[0] for s in states0]
    y, *more_finals, saved = _forward_kernel(stack, inputs, s0, weights, training, PADDED)
    y.setflags(write=False)   # as forward's y
    finals = (y[-1:].copy(), *[final[None] for final in more_finals])
    if not training:
        return y, finals, None
    T, B = x_tm.shape[:2]
    return y, finals, Tape(PADDED, T, B, [(None, [(inputs, s0, weights, y, saved)])])


def _join_directions(stack, outputs, batch):
    """One layer's output (..., D*H), the forward direction's H first."""
    if len(outputs) == 1:
        return outputs[0]
    forward, reverse = outputs
    H = stack.hidden_size
    joined = np.empty(forward.shape[:-1] + (2 * H,), dtype=forward.dtype)
    joined[..., :H] = forward
    joined[batch.reverse, ..., H:] = reverse
    return joined


def _direction_part(stack, grad, direction, batch):
    """The gradient of one direction's output, in the order that direction ran."""
    if stack.num_directions == 1:
        return grad
    H = stack.hidden_size
    if direction == 0:
        return np.ascontiguousarray(grad[..., :H])
    return np.ascontiguousarray(grad[batch.reverse, ..., H:])


def backward(stack, tape, dy_tm, dstates, need_input_grad):
    """BPTT through the forward that returned `tape`: (dx_tm, dstates0, grads).

    dy_tm: (T, B, D*H) (any strides) or None for zeros; dstates: like forward's finals.
    dx_tm: (T, B, I), zero past each length, None unless need_input_grad; dstates0: like
    forward's states0; grads: {state_dict key: gradient} in state_dict order.
    """
    batch = tape.batch
    grad = None if dy_tm is None else np.ascontiguousarray(batch.pack(dy_tm))
    if batch is PADDED and stack.one_layer:
        (_, (record,)), = tape.layers   # (no dropout mask, one direction's record)
        return _backward_one_layer(stack, record, grad, dstates, need_input_grad)
    L, D = stack.num_layers, stack.num_directions
    dstates0 = tuple(np.empty_like(s) for s in dstates)
    grads = {}
    for k in reversed(range(L)):
        mask, records = tape.layers[k]
        need_dx = k > 0 or need_input_grad
        grad_inputs = None
        calls = []
        for direction, record in enumerate(records):
            i = k * D + direction
            dy_d = None if grad is None else _direction_part(stack, grad, direction, batch)
            ds = [batch.sort(s[i]) for s in dstates]
            calls.append(functools.partial(_backward_kernel, stack, record, dy_d, ds, need_dx,
                                           batch))
        for direction, (dx, *rest) in enumerate(_run_directions(stack, calls)):
            i = k * D + direction
            ds0, weight_grads = _split_grads(rest, len(records[direction][1]))
            grads[k, direction] = weight_grads
            for out, rows in zip(dstates0, ds0):
                out[i] = batch.unsort(rows)
            if not need_dx:
                continue
            if direction == 0:
                grad_inputs = dx
            else:   # both directions read the layer's input: their gradients add up
                grad_inputs[batch.reverse] += dx
        if mask is not None:
            grad_inputs = grad_inputs * mask
        grad = grad_inputs
    named = {key: value for k in range(L) for d in range(D)
             for key, value in zip(stack.keys[k][d], grads[k, d])}
    return (batch.unpack(grad) if need_input_grad else None), dstates0, named


def _backward_one_layer(stack, record, dy, dstates, need_input_grad):
    """backward for one layer in one direction over full-length sequences, as
    _forward_one_layer is to _forward_layers."""
    dx, *rest = _backward_kernel(stack, record, dy, [s[0] for s in dstates],
                                 need_input_grad, PADDED)
    ds0, weight_grads = _split_grads(rest, len(dstates))
    return dx, tuple([d[None] for d in ds0]), dict(zip(stack.keys[0][0], weight_grads))
