"""Frozen models: inference snapshots whose weights are prepared once, and streams that
advance them one frame at a time.

`layer.freeze(quantize)` and `SequenceClassifier.freeze(quantize)` copy the weights out
of the model and prepare them for the kernels (`quantize`: None keeps the layer's float
type, "bf16" rounds the products' operands to bfloat16, "int8" quantizes as
fastrnn/_quantize.py says); nothing the model does later reaches the snapshot. A frozen
layer runs the same stack driver as the layer (fastrnn._stack) with kernels that take
the prepared weights of one layer direction.

On the compiled backend the weights of each layer direction are packed once into the
kernels' panels (fastrnn._core.PackedWeights), so no call packs them again: a frozen
float model gives the layer's outputs bit for bit, from the same kernels. Elsewhere a
frozen float or bf16 model keeps copies of the arrays for the backend's kernels, and
int8 runs the NumPy reference's arithmetic.

A stream (`frozen.stream(batch_size)`, unidirectional models only) keeps the state of
every layer between calls: `step(x_t)` advances them all by one frame, on the compiled
backend in one call into C++ that allocates nothing but its result and releases the GIL.
It holds its own references to the prepared weights, so it keeps working after the
frozen model is gone, and its state is its own: several streams of one frozen model may
run at once, one per thread.
"""

import copy
import numbers

import numpy as np

from . import _quantize, _stack
from ._arrays import check_lengths

QUANTIZE = (None, "bf16", "int8")


def check_quantize(quantize):
    """`quantize` if it names a kind this build can freeze to, else ValueError."""
    if quantize not in QUANTIZE:
        raise ValueError(f"quantize must be one of {', '.join(map(repr, QUANTIZE))}, "
                         f"got {quantize!r}")
    return quantize


# -- the prepared weights of one layer direction ------------------------------------


class _Packed:
    """Weights packed once by the compiled backend for its kernels (PackedWeights)."""

    def __init__(self, core, kernel, w_ih, w_hh, b_ih, b_hh, quantize):
        if quantize == "int8":
            q = _quantize.QuantizedWeights(w_ih, w_hh, b_ih, b_hh)
            self.packed = core.pack_weights(kernel, q.q_ih, q.q_hh, q.b_ih, q.b_hh, "int8",
                                            q.s_ih, q.s_hh)
        else:
            self.packed = core.pack_weights(kernel, w_ih, w_hh, b_ih, b_hh, quantize or "fp32")
        self._forward = core.frozen_forward
        self.nbytes = self.packed.nbytes

    def kernel(self):
        """(f, w) with f(w, x, *states) = self.forward(x, *states), and nothing between."""
        return self._forward, self.packed

    def forward(self, x, *states, batch_sizes=None, threads=None):
        if batch_sizes is None and threads is None:   # keywords cost pybind11 0.3 µs a call
            return self._forward(self.packed, x, *states)
        return self._forward(self.packed, x, *states, batch_sizes=batch_sizes, threads=threads)


class _Float:
    """Float weights as a backend's kernels take them, copied once; with quantize="bf16"
    the kernels' precision="bf16"."""

    def __init__(self, backend, kernel, w_ih, w_hh, b_ih, b_hh, quantize=None):
        self._options = {"precision": "bf16"} if quantize == "bf16" else {}
        self._kernel = getattr(backend, f"{kernel}_forward")
        # threads= is the compiled backend's alone
        self._takes_threads = getattr(backend, "concurrent_single_thread_calls", False)
        self._weights = tuple(w.copy() for w in (w_ih, w_hh, b_ih, b_hh))
        self.nbytes = sum(w.nbytes for w in self._weights)

    def forward(self, x, *states, batch_sizes=None, threads=None):
        options = dict(self._options)
        if batch_sizes is not None:
            options["batch_sizes"] = batch_sizes
        if threads is not None and self._takes_threads:
            options["threads"] = threads
        return self._kernel(x, *states, *self._weights, False, **options)

    def kernel(self):
        """(f, w) with f(w, x, *states) = self.forward(x, *states)."""
        return type(self).forward, self


class _Int8:
    """int8 codes with a scale per output row (fastrnn/_quantize.py), run by the
    reference arithmetic."""

    def __init__(self, kernel, w_ih, w_hh, b_ih, b_hh):
        self._kernel = kernel
        self.weights = _quantize.QuantizedWeights(w_ih, w_hh, b_ih, b_hh)
        self.nbytes = sum(a.nbytes for a in vars(self.weights).values())

    def forward(self, x, *states, batch_sizes=None, threads=None):
        y, finals = _quantize.forward(self._kernel, self.weights, x, states, batch_sizes)
        return (y, *finals[1:], None)

    kernel = _Float.kernel


def _prepared_forward(x, *args, reverse=False, out=None, **options):
    """The frozen stack's forward kernel: args are the states, the prepared weights of
    one layer direction and `training` (always False here). The prepared forwards run
    forward in time into arrays of their own: a reverse direction's x is reversed for
    them (a copy) and y reversed back into `out`."""
    *states, prepared, _ = args
    if reverse:
        x = np.ascontiguousarray(x[::-1])
    y, *rest = prepared.forward(x, *states, **options)
    if reverse:
        y = y[::-1]
    if out is not None:
        out[...] = y
        y = out
    return (y, *rest)


class _FrozenStack(_stack.Stack):
    """The stack driver's view of a frozen layer: its kernel weights are the prepared
    weights of each layer direction, keyed (k, direction)."""

    __slots__ = ()

    def __init__(self, layer, compiled):
        self.forward_kernel = _prepared_forward
        self.backward_kernel = None
        self.num_layers = layer.num_layers
        self.num_directions = layer.num_directions
        self.hidden_size = layer.hidden_size
        self.one_layer = layer._stack.one_layer
        self.keys = layer._stack.keys
        self.kernel_options = {}   # the prepared weights know their precision
        # The compiled forward runs one-thread calls side by side, as the layer's
        # kernels do.
        self.concurrent_calls = compiled

    def kernel_weights(self, params, k, direction):
        return (params[k, direction],)


# -- frozen layers and classifiers ---------------------------------------------------


class FrozenLayer:
    """An inference snapshot of an RNN, LSTM or GRU layer (see `freeze`)."""

    def __init__(self, layer, quantize=None):
        quantize = check_quantize(quantize)
        if quantize is None and layer.precision == "bf16":
            quantize = "bf16"   # None keeps the layer's precision
        if quantize is not None and layer.dtype != np.float32:
            raise ValueError(f"quantize={quantize!r} takes a float32 layer, this one is "
                             f"{layer.dtype.name}")
        self.quantize = quantize
        self.cell = layer.cell
        self.input_size, self.hidden_size = layer.input_size, layer.hidden_size
        self.num_layers, self.num_directions = layer.num_layers, layer.num_directions
        self.bidirectional, self.batch_first = layer.bidirectional, layer.batch_first
        self.dtype = layer.dtype
        self.state_names = layer.state_names
        # The layer's argument checks need only its sizes: a shell without parameters.
        self._shell = copy.copy(layer)
        self._shell._params, self._shell.grads, self._shell._tape = None, None, None
        backend = layer._backend
        self._core = backend if backend.name == "cpp" else None
        params = layer.parameters()
        self._prepared = {}
        for k in range(self.num_layers):
            for d in range(self.num_directions):
                weights = [params[key] for key in _stack.parameter_keys(k, d)]
                if self._core is not None:
                    prepared = _Packed(self._core, layer.kernel, *weights, quantize)
                elif quantize == "int8":
                    prepared = _Int8(layer.kernel, *weights)
                else:
                    prepared = _Float(backend, layer.kernel, *weights, quantize)
                self._prepared[k, d] = prepared
        self._stack = _FrozenStack(layer, self._core is not None)
        self._zeros = (None, None)   # (B, the zero states of batch B): _initial_states
        # One layer direction: forward() calls its kernel itself (see there).
        self._kernel = self._prepared[0, 0].kernel() if len(self._prepared) == 1 else None

    @property
    def nbytes(self):
        """Bytes of the prepared weights and biases."""
        return sum(p.nbytes for p in self._prepared.values())

    def forward(self, x, state=None, *, lengths=None):
        """(y, state_T) of x, as the layer's `forward(x, state, lengths=lengths,
        training=False)` gives them."""
        shell = self._shell
        if lengths is None and self._kernel is not None:
            # One layer direction, full sequences: its kernel alone; and an x that is
            # already what the kernel takes passes the few checks below instead of the
            # layer's. The stack driver's bookkeeping cost a batch-1 int8 LSTM call (T=28,
            # H=128) 3 of its 32 µs, the layer's checks and calls half a µs of its 21.
            kernel, packed = self._kernel
            if (type(x) is np.ndarray and x.dtype == self.dtype and x.ndim == 3 and x.size
                    and x.flags.c_contiguous and x.shape[2] == self.input_size):
                x_tm = x.transpose(1, 0, 2) if self.batch_first else x
            else:
                x_tm = shell._check_input(x)
            y, *finals, _ = kernel(packed, x_tm, *self._initial_states(state, x_tm.shape[1]))
            finals = (y[-1:].copy(), *[final[None] for final in finals])
            return (y.transpose(1, 0, 2) if self.batch_first else y), shell._user_state(finals)
        x_tm = shell._check_input(x)
        T, B = x_tm.shape[:2]
        states0 = shell._states(state, B, "state")
        batch = _stack.batch_layout(None if lengths is None else check_lengths(lengths, T, B),
                                    T)
        y_tm, finals, _ = _stack.forward(self._stack, self._prepared, x_tm, states0, batch,
                                         False)
        return shell._time_major(y_tm), shell._user_state(finals)

    __call__ = forward

    def _initial_states(self, state, B):
        """A one-layer, one-direction forward's initial states, each (B, H). Zeros (state
        None) are kept for the last B: making them took 2 of a batch-1 call's 28 µs."""
        kept_batch, kept = self._zeros   # one read: other threads may replace it
        if state is None and kept_batch == B:
            return kept
        states = [s[0] for s in self._shell._states(state, B, "state")]
        if state is None:
            self._zeros = (B, states)
        return states

    def stream(self, batch_size=1):
        """A `Stream` of `batch_size` sequences, every state zero."""
        return Stream(self, batch_size)

    def __repr__(self):
        kind = "float" if self.quantize is None else self.quantize
        return (f"<frozen {self.cell.upper()}({self.input_size}, {self.hidden_size}, "
                f"num_layers={self.num_layers}, bidirectional={self.bidirectional}) "
                f"{kind}, {self.nbytes} bytes of weights>")


class FrozenClassifier:
    """An inference snapshot of a SequenceClassifier: its frozen layer and a copy of the
    head. `logits`, `predict` and `evaluate` as the model's; `stream` steps it."""

    def __init__(self, model, quantize=None):
        self.layer = FrozenLayer(model.layer, quantize)
        self.quantize = self.layer.quantize
        self.cell, self.num_classes = model.cell, model.num_classes
        self.fc_weight, self.fc_bias = model.fc_weight.copy(), model.fc_bias.copy()
        # The model's own predict and evaluate (chunks, labels, the loss), on a shell
        # that reads this snapshot's layer, head and logits.
        self._model = copy.copy(model)
        self._model.layer = self.layer
        self._model.fc_weight, self._model.fc_bias = self.fc_weight, self.fc_bias
        self._model.logits = self.logits

    @property
    def nbytes(self):
        return self.layer.nbytes + self.fc_weight.nbytes + self.fc_bias.nbytes

    def logits(self, x, lengths=None):
        _, state = self.layer.forward(x, lengths=lengths)
        return self._model.head_features(state) @ self.fc_weight.T + self.fc_bias

    def predict(self, x, lengths=None):
        return self._model.predict(x, lengths)

    def evaluate(self, x, y, lengths=None):
        return self._model.evaluate(x, y, lengths)

    def stream(self, batch_size=1):
        """A `Stream` whose `step(x_t)` returns the head's logits (B, num_classes)."""
        return Stream(self.layer, batch_size, head=(self.fc_weight, self.fc_bias))

    def __repr__(self):
        return f"<frozen classifier of {self.num_classes} classes over {self.layer!r}>"


# -- streams -------------------------------------------------------------------------


class Stream:
    """B sequences advanced one frame at a time through a unidirectional frozen layer.

    `step(x_t)` takes the frame (B, I) and returns the last layer's h_t (B, H) (with a
    classifier's head: its logits), a new array, or written into `out` if given.
    `state` is the state after the last step, laid out as forward's state_T;
    `reset(state=None)` starts again from zeros or `state`.
    """

    def __init__(self, frozen, batch_size=1, head=None):
        if frozen.bidirectional:
            raise ValueError("stream() runs one frame at a time, but a bidirectional layer's "
                             "reverse direction starts at the end of the sequence: use "
                             "forward(x) on whole sequences")
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) \
                or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.batch_size = int(batch_size)
        self.input_size, self.hidden_size = frozen.input_size, frozen.hidden_size
        self.dtype = frozen.dtype
        self._shell = frozen._shell
        layers = [frozen._prepared[k, 0] for k in range(frozen.num_layers)]
        if frozen._core is not None:
            self._stepper = frozen._core.Stream([layer.packed for layer in layers],
                                                self.batch_size, *(head or ()))
        else:
            self._stepper = _PythonStepper(layers, self.batch_size, head, self._check_frame)
        # A step goes straight to the stepper: no Python in between.
        self.step = self._stepper.step
        self.reset()

    def step(self, x_t, out=None):
        """Advance every layer one frame: x_t (B, I) -> h_t (B, H) of the last layer, or
        a classifier's logits (B, num_classes); into `out` when given. (Each stream's
        step is its stepper's, set in __init__; this is its documentation.)"""
        return self._stepper.step(x_t, out)

    def reset(self, state=None):
        """Start again from `state` (forward's state_T layout; None: zeros)."""
        states = self._shell._states(state, self.batch_size, "state")
        self._stepper.set_state(*states)

    @property
    def state(self):
        """A copy of the state after the last step, as forward's state_T."""
        h, c = self._stepper.state()
        return h if c is None else (h, c)

    @property
    def nbytes(self):
        """Bytes of the stream's own state (the weights are the frozen model's)."""
        return self._stepper.nbytes

    def _check_frame(self, x_t):
        if not isinstance(x_t, np.ndarray):
            raise TypeError(f"x_t must be a numpy.ndarray (B, I), got {type(x_t).__name__}")
        if x_t.dtype != self.dtype:
            raise TypeError(f"x_t has dtype {x_t.dtype}, the stream takes {self.dtype.name} "
                            f"(x_t.astype(numpy.{self.dtype.name}))")
        expected = (self.batch_size, self.input_size)
        if x_t.shape != expected:
            raise ValueError(f"x_t must have shape (B, I) = {expected} for this stream of "
                             f"batch_size={self.batch_size}, got {x_t.shape}")
        return np.ascontiguousarray(x_t)


class _PythonStepper:
    """A stream's steps on the backends without compiled streams: each layer's kernel on
    one time step, the states kept here (the compiled one is fastrnn._core.Stream)."""

    def __init__(self, layers, batch_size, head, check_frame):
        self._layers, self._head, self._check_frame = layers, head, check_frame
        self._states = None

    def set_state(self, h, c=None):
        self._states = tuple(np.array(s) for s in ((h,) if c is None else (h, c)))

    def state(self):
        h, *c = (s.copy() for s in self._states)
        return h, (c[0] if c else None)

    @property
    def nbytes(self):
        return sum(s.nbytes for s in self._states)

    def step(self, x_t, out=None):
        inputs = self._check_frame(x_t)[None]
        for k, prepared in enumerate(self._layers):
            y, *more, _ = prepared.forward(inputs, *(s[k] for s in self._states), threads=1)
            for state, value in zip(self._states, (y[0], *more)):
                state[k] = value
            inputs = y
        result = inputs[0].copy()
        if self._head is not None:
            weight, bias = self._head
            result = result @ weight.T + bias
        if out is None:
            return result
        out[...] = result
        return out


def freeze_layer(layer, quantize=None):
    """`layer.freeze(quantize)`: a FrozenLayer."""
    return FrozenLayer(layer, quantize)


def freeze_classifier(model, quantize=None):
    """`model.freeze(quantize)`: a FrozenClassifier."""
    return FrozenClassifier(model, quantize)


__all__ = ["FrozenLayer", "FrozenClassifier", "Stream", "QUANTIZE"]
