"""RNN, LSTM and GRU layers: parameters, argument checks, layout, stacking, directions and
lengths; the math is in the backends.

One driver (`_Recurrent`) serves every cell: the layers one after another and, within a
layer, the forward direction then the reverse one, each one call of the cell's kernel.
Inside, everything is time-major. Without lengths a layer reads and writes (T, B, F)
arrays and the reverse direction reads its input reversed in time; with lengths the
batch is packed once per forward (`_Packed`) and every layer works on the tokens alone.
"""

import concurrent.futures
import copy
import functools
import numbers

import numpy as np

from . import _backends
from ._argtypes import check_int

_DTYPES = (np.float32, np.float64)


def as_real_array(value, dtype, what):
    """`value` as a C-contiguous array of `dtype`, refusing what is not real numbers."""
    if type(value) is np.ndarray and value.dtype == dtype and value.flags.c_contiguous:
        return value  # the common case, without the dtype checks below
    try:
        array = np.asarray(value)
    except Exception as exc:
        raise TypeError(f"{what} must be an array of real numbers: {exc}") from None
    if array.dtype == np.bool_ or not (np.issubdtype(array.dtype, np.integer)
                                      or np.issubdtype(array.dtype, np.floating)):
        raise TypeError(f"{what} must hold real numbers, got dtype {array.dtype}")
    return np.ascontiguousarray(array, dtype=dtype)


def _check_shape(array, shape, what):
    if array.shape != tuple(shape):
        raise ValueError(f"{what} must have shape {tuple(shape)}, got {array.shape}")


def load_parameters(params, state_dict):
    """Copy `state_dict` into the live arrays `params` (same keys and shapes), in place.

    Every entry is checked before any is changed, so a bad one leaves all as they were.
    """
    if not hasattr(state_dict, "keys"):
        raise TypeError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
    missing = sorted(set(params) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(params))
    if missing or unexpected:
        raise ValueError(f"state_dict keys do not match: missing {missing}, "
                         f"unexpected {unexpected}")
    converted = {}
    for key, target in params.items():
        value = as_real_array(state_dict[key], target.dtype, f"state_dict[{key!r}]")
        _check_shape(value, target.shape, f"state_dict[{key!r}]")
        converted[key] = value
    for key, target in params.items():
        np.copyto(target, converted[key])


def parameter_shapes(gates, input_size, hidden_size, num_layers=1, bidirectional=False):
    """{key: shape} of a layer's parameters in torch's state_dict order: for layer k and
    direction, weight_ih_l{k} (G*H, I_k), weight_hh_l{k} (G*H, H), bias_ih_l{k} and
    bias_hh_l{k} (G*H,), the reverse direction's keys ending in `_reverse`;
    I_0 = input_size, I_k = D*H above."""
    G, H, D = gates, hidden_size, 2 if bidirectional else 1
    shapes = {}
    for k in range(num_layers):
        for direction in range(D):
            w_ih, w_hh, b_ih, b_hh = _keys(k, direction)
            shapes[w_ih] = (G * H, input_size if k == 0 else D * H)
            shapes[w_hh] = (G * H, H)
            shapes[b_ih] = (G * H,)
            shapes[b_hh] = (G * H,)
    return shapes


@functools.lru_cache(maxsize=None)   # the names are built once, not at every call
def _keys(k, direction):
    """The state_dict keys of layer k's weights and biases in one direction."""
    suffix = "_reverse" if direction else ""
    return tuple(f"{name}_l{k}{suffix}" for name in ("weight_ih", "weight_hh", "bias_ih",
                                                    "bias_hh"))


@functools.lru_cache(maxsize=None)
def _direction_worker():
    """The thread that runs a bidirectional layer's reverse direction (see _run_directions)."""
    return concurrent.futures.ThreadPoolExecutor(max_workers=1,
                                                 thread_name_prefix="fastrnn-reverse")


@functools.lru_cache(maxsize=None)
def _state_labels(state_names, what):
    """How errors name each state array: h0, c0 or dstate (dh_T), dstate (dc_T)."""
    return tuple(f"{name}0" if what == "state" else f"dstate (d{name}_T)"
                 for name in state_names)


def check_dropout(dropout):
    """`dropout` as a float in [0, 1), else TypeError or ValueError naming the fix."""
    if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real):
        raise TypeError(f"dropout must be a number in [0, 1) (the probability of zeroing "
                        f"each output between layers), got {dropout!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must lie in [0, 1) (the probability of zeroing each "
                         f"output between layers), got {dropout!r}")
    return float(dropout)


def check_lengths(lengths, T, B):
    """`lengths` as B int64 in [1, T], else TypeError or ValueError naming the fix."""
    try:
        array = np.asarray(lengths)
    except Exception as exc:
        raise TypeError(f"lengths must be B integers in [1, T]: {exc}") from None
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"lengths must be integers, one per sequence, got dtype {array.dtype} "
                        f"(pass numpy.asarray(lengths, dtype=numpy.int64))")
    if array.ndim != 1 or array.size != B:
        raise ValueError(f"lengths must have shape (B,) = ({B},), one length per sequence of "
                         f"x, got shape {array.shape}")
    outside = np.flatnonzero((array < 1) | (array > T))
    if outside.size:
        b = int(outside[0])
        raise ValueError(f"lengths must lie in [1, T] = [1, {T}], got {array[b]} for "
                         f"sequence {b}")
    return array.astype(np.int64)


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


class _Packed:
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


_PADDED = _Padded()


# -- the layers -------------------------------------------------------------------------


class _Recurrent:
    """What RNN, LSTM and GRU share: the one driver over layers, directions and lengths.

    A subclass names its kernels (`kernel`), its gates and how many states it carries
    (1, or 2 for the LSTM's h and c).
    """

    gates = 1
    cell = None
    kernel = None
    state_names = ("h",)

    def __init__(self, input_size, hidden_size, num_layers, *, bidirectional, dropout,
                 batch_first, backend, dtype, seed):
        self.input_size = check_int(input_size, "input_size")
        self.hidden_size = check_int(hidden_size, "hidden_size")
        self.num_layers = check_int(num_layers, "num_layers")
        self.bidirectional = bool(bidirectional)
        self.num_directions = 2 if self.bidirectional else 1
        self.dropout = check_dropout(dropout)
        self.batch_first = bool(batch_first)
        if np.dtype(dtype) not in [np.dtype(d) for d in _DTYPES]:
            raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
        self.dtype = np.dtype(dtype)
        self._backend = _backends.get_backend(backend)
        for stage in ("forward", "backward"):
            if not hasattr(self._backend, f"{self.kernel}_{stage}"):
                raise ValueError(f"the {self._backend.name} backend has no {self.kernel}_{stage} "
                                 f"kernel here; choose another backend (available: "
                                 f"{_backends.available_backends()})")
        self._forward_kernel = getattr(self._backend, f"{self.kernel}_forward")
        self._backward_kernel = getattr(self._backend, f"{self.kernel}_backward")
        # torch's init: every parameter U(-1/sqrt(H), 1/sqrt(H)), in state_dict order.
        rng = np.random.default_rng(seed)
        bound = 1.0 / np.sqrt(self.hidden_size)
        self._params = {key: rng.uniform(-bound, bound, shape).astype(self.dtype)
                        for key, shape in parameter_shapes(
                            self.gates, self.input_size, self.hidden_size, self.num_layers,
                            self.bidirectional).items()}
        self._rng = rng   # dropout masks go on from the stream that drew the weights
        self.grads = None
        self._tape = None

    @property
    def backend(self):
        """Name of the backend this layer runs on."""
        return self._backend.name

    # -- parameters --------------------------------------------------------

    def parameters(self):
        """The live parameter arrays, keyed like `state_dict()`."""
        return dict(self._params)

    def state_dict(self):
        """Copies of the parameters, keyed like torch's state_dict."""
        return {key: value.copy() for key, value in self._params.items()}

    def load_state_dict(self, state_dict):
        """Copy parameters in place from array-likes keyed like `state_dict()`."""
        load_parameters(self._params, state_dict)

    # Layer 0's forward direction by name, as one-layer code has always read it.
    weight_ih = property(lambda self: self._params["weight_ih_l0"])
    weight_hh = property(lambda self: self._params["weight_hh_l0"])
    bias_ih = property(lambda self: self._params["bias_ih_l0"])
    bias_hh = property(lambda self: self._params["bias_hh_l0"])

    def _kernel_weights(self, k, direction):
        return [self._params[key] for key in _keys(k, direction)]

    def sublayer(self, layers, direction=None):
        """Layers `layers` (a range) of this stack as a layer of their own that shares this
        one's parameter arrays (live, not copies), without dropout; with `direction` (0
        forward, 1 reverse) that direction alone, as a one-way layer (which reads its
        input as given: reverse x in time for the reverse direction). For diagnostics,
        which look inside a stack."""
        directions = range(self.num_directions) if direction is None else [direction]
        view = copy.copy(self)   # the same cell, options, backend and kernels
        view.input_size = self.input_size if layers.start == 0 else \
            self.num_directions * self.hidden_size
        view.num_layers, view.num_directions = len(layers), len(directions)
        view.bidirectional, view.dropout = len(directions) == 2, 0.0
        view.grads, view._tape = None, None
        view._params = {new: self._params[old]
                        for new_k, k in enumerate(layers)
                        for new_d, d in enumerate(directions)
                        for new, old in zip(_keys(new_k, new_d), _keys(k, d))}
        return view

    # -- arguments ----------------------------------------------------------------

    def _reads_x_views(self):
        # The compiled backend reads x through strides and copies what BPTT needs.
        return getattr(self._backend, "reads_x_views", False)

    def _time_major(self, array, *, view_ok=False):
        """(T, B, .) from the layer's layout: a copy, or a transposed view where
        `view_ok` and the backend reads views."""
        if not self.batch_first:
            return array
        if view_ok and self._reads_x_views():
            return array.transpose(1, 0, 2)
        return np.ascontiguousarray(array.transpose(1, 0, 2))

    def _check_input(self, x):
        x = as_real_array(x, self.dtype, "x")
        layout = "(B, T, I)" if self.batch_first else "(T, B, I)"
        if x.ndim != 3:
            raise ValueError(f"x must be 3-D {layout}, got shape {x.shape}")
        if x.shape[2] != self.input_size:
            raise ValueError(f"x has {x.shape[2]} features, the layer expects "
                             f"input_size={self.input_size}")
        if x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"x {layout} must have at least one time step and one "
                             f"sequence, got shape {x.shape}")
        return self._time_major(x, view_ok=True)

    def _state_array(self, value, batch, what):
        """A state or its gradient as (L*D, B, H); (B, H) is taken where L*D = 1."""
        shape = (self.num_layers * self.num_directions, batch, self.hidden_size)
        if value is None:
            return np.zeros(shape, dtype=self.dtype)
        value = as_real_array(value, self.dtype, what)
        if shape[0] == 1 and value.shape == shape[1:]:
            return value[None]
        if value.shape != shape:
            single = f", or (B, H) = {shape[1:]}" if shape[0] == 1 else ""
            raise ValueError(f"{what} must have shape (num_layers * num_directions, B, H) = "
                             f"{shape}{single}, as torch lays it out; got {value.shape}")
        return value

    def _states(self, value, batch, what):
        """The tuple of state arrays (h, or h and c) from a `what` ("state" or "dstate")
        as the user gives it."""
        names = _state_labels(self.state_names, what)
        if len(names) == 1:
            return (self._state_array(value, batch, names[0]),)
        if value is None:
            value = (None, None)
        if not isinstance(value, (tuple, list)) or len(value) != 2:
            raise TypeError(f"{what} for an LSTM must be a pair (h, c) or None, "
                            f"got {type(value).__name__}")
        return tuple(self._state_array(v, batch, name) for v, name in zip(value, names))

    def _user_state(self, states):
        return states[0] if len(states) == 1 else tuple(states)

    def _batch_layout(self, lengths, T, B):
        if lengths is None:
            return _PADDED
        lengths = check_lengths(lengths, T, B)
        if lengths.min() == T:
            return _PADDED   # every sequence full length: the plain kernels
        return _Packed(lengths, T)

    # -- forward and backward ------------------------------------------------

    def forward(self, x, state=None, *, lengths=None, training=True):
        """Run the whole sequences: (y, state_T). `training=False` keeps nothing for backward.

        `lengths` (B integers in [1, T]): sequence b is x[b, :lengths[b]]; y is zero past
        each length and state_T each sequence's state after its own last step.
        """
        x_tm = self._check_input(x)
        T, B = x_tm.shape[:2]
        batch = self._batch_layout(lengths, T, B)
        states0 = self._states(state, B, "state")
        # The last forward's record goes first: its workspace is freed (and, on
        # the compiled backend, reused) instead of living beside the new one.
        self._tape = None
        inputs = batch.pack(x_tm)
        # BPTT reads x again: as this forward saw it, not as the caller may leave it.
        if training and not self._reads_x_views() and np.may_share_memory(inputs, x):
            inputs = inputs.copy()
        outputs, finals, tape = self._run_stack(inputs, states0, batch, training)
        y_tm = batch.unpack(outputs)
        # y may be kept for BPTT: hand it out read-only so it cannot be changed under us.
        y_tm.flags.writeable = False
        self._tape = (batch, T, B, tape) if training else None
        y = y_tm.transpose(1, 0, 2) if self.batch_first else y_tm
        return y, self._user_state(finals)

    __call__ = forward

    def _run_stack(self, inputs, states0, batch, training):
        """Every layer and direction on `inputs` (layer 0's input in the batch's layout):
        (last layer's output, final states (L*D, B, H) each, what backward needs)."""
        if self._is_one_layer(batch):
            return self._run_one_layer(inputs, states0, training)
        D = self.num_directions
        B = states0[0].shape[1]
        finals = tuple(np.empty((self.num_layers * D, B, self.hidden_size), self.dtype)
                       for _ in states0)
        tape = []
        for k in range(self.num_layers):
            mask = None
            if k and training and self.dropout:
                mask = self._dropout_mask(inputs.shape)
                inputs = inputs * mask
            outputs, records = [], []
            xs = [inputs if d == 0 else np.ascontiguousarray(inputs[batch.reverse])
                  for d in range(D)]
            s0s = [[batch.sort(s[k * D + d]) for s in states0] for d in range(D)]
            weights = [self._kernel_weights(k, d) for d in range(D)]
            results = self._run_directions([
                functools.partial(self._forward_kernel, xs[d], *s0s[d], *weights[d], training,
                                  **batch.kernel_options) for d in range(D)])
            for direction, (y, *more_finals, saved) in enumerate(results):
                i = k * D + direction
                for final, rows in zip(finals, (batch.final(y), *more_finals)):
                    final[i] = batch.unsort(rows)
                outputs.append(y)
                if training:
                    records.append((xs[direction], s0s[direction], weights[direction], y, saved))
            tape.append((mask, records))
            inputs = self._join_directions(outputs, batch)
        return inputs, finals, tape

    def _is_one_layer(self, batch):
        """One layer in one direction over full-length sequences, which forward and
        backward run without the stack's bookkeeping."""
        return self.num_layers == 1 and self.num_directions == 1 and batch is _PADDED

    def _run_one_layer(self, inputs, states0, training):
        """_run_stack for one layer in one direction over full-length sequences: the
        same kernel call and record without the stack's bookkeeping, which cost a
        batch-1 RNN forward (T=28, H=128) 3.4 of its 40 µs."""
        weights = self._kernel_weights(0, 0)
        s0 = [s[0] for s in states0]
        y, *more_finals, saved = self._forward_kernel(inputs, *s0, *weights, training)
        finals = (y[-1][None].copy(), *(final[None] for final in more_finals))
        tape = [(None, [(inputs, s0, weights, y, saved)])] if training else None
        return y, finals, tape

    def _run_directions(self, calls):
        """The results of a layer's kernel calls, one per direction, in order. Where the
        backend runs one-thread calls side by side and two threads are set, the two
        directions run at the same time, a thread each: no barrier at every time step
        (measured: a bidirectional RNN, GRU and LSTM layer's step at the origin's shape
        1.10x, 1.18x and 1.04x as fast as the directions one after the other on two
        threads, 1.05x at the medium shape, 1.5x at batch 1). Kernels give the same bits
        for any thread count, so the results are those of the sequential run."""
        if len(calls) == 1 or not self._directions_side_by_side():
            return [call() for call in calls]
        reverse = _direction_worker().submit(calls[1], threads=1)
        forward = calls[0](threads=1)
        return [forward, reverse.result()]

    def _directions_side_by_side(self):
        return (getattr(self._backend, "concurrent_single_thread_calls", False)
                and _backends.get_num_threads() == 2)

    def _join_directions(self, outputs, batch):
        """One layer's output (..., D*H), the forward direction's H first."""
        if len(outputs) == 1:
            return outputs[0]
        forward, reverse = outputs
        H = self.hidden_size
        joined = np.empty(forward.shape[:-1] + (2 * H,), dtype=forward.dtype)
        joined[..., :H] = forward
        joined[batch.reverse, ..., H:] = reverse
        return joined

    def _direction_part(self, grad, direction, batch):
        """The gradient of one direction's output, in the order that direction ran."""
        if self.num_directions == 1:
            return grad
        H = self.hidden_size
        if direction == 0:
            return np.ascontiguousarray(grad[..., :H])
        return np.ascontiguousarray(grad[batch.reverse, ..., H:])

    def _dropout_mask(self, shape):
        # torch's dropout: zero with probability p, scale what is kept by 1 / (1 - p)
        keep = self._rng.random(shape, dtype=self.dtype) >= self.dropout
        return keep.astype(self.dtype) / self.dtype.type(1.0 - self.dropout)

    def step(self, x_t, state=None):
        """One time step for inputs that arrive one at a time: x_t (B, I) -> new state,
        (L*D, B, H) as forward's state_T, through every layer (unidirectional layers only).

        Keeps nothing for backward and leaves the last forward's record alone.
        """
        if self.bidirectional:
            raise ValueError("step() runs one time step forward, but a bidirectional layer's "
                             "reverse direction starts at the end of the sequence: use "
                             "forward(x) on the whole sequence")
        x_t = as_real_array(x_t, self.dtype, "x_t")
        if x_t.ndim != 2 or x_t.shape[1] != self.input_size or x_t.shape[0] == 0:
            raise ValueError(f"x_t must have shape (B, {self.input_size}) with B >= 1, "
                             f"got {x_t.shape}")
        states0 = self._states(state, x_t.shape[0], "state")
        _, finals, _ = self._run_stack(x_t[None], states0, _PADDED, False)
        return self._user_state(finals)

    def backward(self, dy=None, dstate=None, *, need_input_grad=True):
        """BPTT through the last forward: (dx, dstate0); sets `self.grads`.

        dy is shaped like y, dstate like state_T (None: zeros); dx is zero past each
        length and dstate0 is (L*D, B, H) (each of h and c for the LSTM).
        """
        if self._tape is None:
            raise ValueError("backward() needs a forward(x) with training=True first")
        batch, T, B, tape = self._tape
        D, H = self.num_directions, self.hidden_size
        grad = None
        if dy is not None:
            dy = as_real_array(dy, self.dtype, "dy")
            expected = (B, T, D * H) if self.batch_first else (T, B, D * H)
            _check_shape(dy, expected, "dy")
            grad = batch.pack(self._time_major(dy))
        dstates = self._states(dstate, B, "dstate")
        if self._is_one_layer(batch):
            _, (record,) = tape[0]   # (dropout mask, one direction's record)
            dx, dstates0 = self._backward_one_layer(record, grad, dstates, need_input_grad)
            return self._user_grads(dx), self._user_state(dstates0)
        dstates0 = tuple(np.empty_like(s) for s in dstates)
        grads = {}
        for k in reversed(range(self.num_layers)):
            mask, records = tape[k]
            need_dx = k > 0 or need_input_grad
            grad_inputs = None
            calls = []
            for direction, (x, s0, weights, y, saved) in enumerate(records):
                i = k * D + direction
                dy_d = None if grad is None else self._direction_part(grad, direction, batch)
                ds = [batch.sort(s[i]) for s in dstates]
                calls.append(functools.partial(self._backward_kernel, saved, *s0, *weights[:2],
                                               y, dy_d, *ds, need_dx, **batch.kernel_options))
            for direction, (dx, *rest) in enumerate(self._run_directions(calls)):
                i = k * D + direction
                ds0, weight_grads = self._split_grads(rest, len(records[direction][1]))
                grads.update(zip(_keys(k, direction), weight_grads))
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
        self.grads = {key: grads[key] for key in self._params}
        dx = batch.unpack(grad) if need_input_grad else None
        return self._user_grads(dx), self._user_state(dstates0)

    def _backward_one_layer(self, record, dy, dstates, need_input_grad):
        """backward's (dx time-major, dstates0) for one layer in one direction over
        full-length sequences, as _run_one_layer is to _run_stack; sets `self.grads`."""
        x, s0, weights, y, saved = record
        dx, *rest = self._backward_kernel(saved, *s0, *weights[:2], y, dy,
                                          *(s[0] for s in dstates), need_input_grad)
        ds0, weight_grads = self._split_grads(rest, len(s0))
        self.grads = dict(zip(_keys(0, 0), weight_grads))
        return dx, tuple(d[None] for d in ds0)

    @staticmethod
    def _split_grads(results, n_states):
        """A backward kernel's results after dx: (dstate0s, [dW_ih, dW_hh, db_ih, db_hh])."""
        return results[:n_states], list(results[n_states:])

    def _user_grads(self, dx):
        """dx in the layer's layout (None stays None)."""
        return dx.transpose(1, 0, 2) if dx is not None and self.batch_first else dx

    def _options_repr(self):
        options = []
        if self.num_layers != 1:
            options.append(f"num_layers={self.num_layers}")
        if self.bidirectional:
            options.append("bidirectional=True")
        if self.dropout:
            options.append(f"dropout={self.dropout}")
        return "".join(f", {option}" for option in options)

    def __repr__(self):
        return (f"{type(self).__name__}({self.input_size}, {self.hidden_size}"
                f"{self._options_repr()}, batch_first={self.batch_first}, "
                f"backend={self.backend!r}, dtype={self.dtype.name})")


class RNN(_Recurrent):
    """Elman RNN: h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh), act tanh or relu."""

    gates = 1
    cell = "rnn"

    def __init__(self, input_size, hidden_size, num_layers=1, *, nonlinearity="tanh",
                 bidirectional=False, dropout=0.0, batch_first=True, backend=None,
                 dtype=np.float32, seed=None):
        if nonlinearity not in NONLINEARITIES:
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        self.kernel = NONLINEARITIES[nonlinearity]
        super().__init__(input_size, hidden_size, num_layers, bidirectional=bidirectional,
                         dropout=dropout, batch_first=batch_first, backend=backend,
                         dtype=dtype, seed=seed)


# The RNN's kernels by nonlinearity.
NONLINEARITIES = {"tanh": "rnn", "relu": "rnn_relu"}


class LSTM(_Recurrent):
    """LSTM with gate order i, f, g, o: c_t = f c_{t-1} + i g, h_t = o tanh(c_t)."""

    gates = 4
    cell = kernel = "lstm"
    state_names = ("h", "c")

    def __init__(self, input_size, hidden_size, num_layers=1, *, forget_bias=1.0,
                 bidirectional=False, dropout=0.0, batch_first=True, backend=None,
                 dtype=np.float32, seed=None):
        super().__init__(input_size, hidden_size, num_layers, bidirectional=bidirectional,
                         dropout=dropout, batch_first=batch_first, backend=backend,
                         dtype=dtype, seed=seed)
        self.forget_bias = float(forget_bias)
        H = self.hidden_size
        for key, value in self._params.items():
            if key.startswith("bias_ih"):
                value[H:2 * H] += self.dtype.type(self.forget_bias)


class GRU(_Recurrent):
    """GRU with gate order r, z, n: n = tanh(x W_in^T + b_in + r (h W_hn^T + b_hn)),
    h_t = (1 - z) n + z h_{t-1}."""

    gates = 3
    cell = kernel = "gru"

    def __init__(self, input_size, hidden_size, num_layers=1, *, bidirectional=False,
                 dropout=0.0, batch_first=True, backend=None, dtype=np.float32, seed=None):
        super().__init__(input_size, hidden_size, num_layers, bidirectional=bidirectional,
                         dropout=dropout, batch_first=batch_first, backend=backend,
                         dtype=dtype, seed=seed)


# The cells by name: every list of cell names (the model, checkpoints, the command line)
# is this one.
CELLS = {"lstm": LSTM, "gru": GRU, "rnn": RNN}
