"""RNN, LSTM and GRU layers: the public classes, their parameters and their arguments.

A layer holds its parameters (torch's names, shapes and init), checks what the user
gives it once, on the way in, and hands the work to the stack driver (fastrnn._stack),
which runs the layers and directions over the backends' kernels; it keeps the last
training forward's tape for `backward`, with the copy of the weight matrices that forward
ran with (so that backward differentiates it whatever is written to the parameters in
between), and draws the forward's dropout masks (fastrnn._dropout).
"""

import copy

import numpy as np

from . import _backends, _memory, _stack, frozen
from ._argtypes import check_dropout, check_int
from ._arrays import (as_real_array, check_dtype, check_lengths, check_precision, check_shape,
                      load_parameters, zeros)
from ._dropout import dropout_mask
from .cells import CELLS


class _WeightsKept:
    """The layer's own copies of its weight matrices, which a training forward runs with
    and its record keeps for backward (which reads the matrices again; the biases it does
    not read: their effect is in the activations kept).

    So backward differentiates the forward it follows whatever is written to the
    parameters in between (load_state_dict, an optimizer step): NumPy arrays have no
    version counter, as torch's tensors do, to tell. The copies are refilled at every
    training forward (the layer drops the last forward's record first).
    """

    def __init__(self):
        self._params = self._kept = None
        self._pairs = ()   # (live matrix, its copy)

    def copied(self, params):
        """`params` with each weight matrix replaced by a copy of its value now."""
        if params is not self._params:   # (the first time: the layer's dict stays)
            copies = {key: np.empty_like(value) for key, value in params.items()
                      if key.startswith("weight_")}
            self._kept = {**params, **copies}
            self._pairs = [(params[key], copy) for key, copy in copies.items()]
            self._params = params
        for live, copy in self._pairs:
            np.copyto(copy, live)
        return self._kept


class _Recurrent:
    """What RNN, LSTM and GRU share: parameters, argument checks and the public API.

    A subclass names its cell (`class LSTM(_Recurrent, cell="lstm")`); what the layer
    needs of it comes from the table of cells: its name, gate count G, state names, its
    kernel (of the default nonlinearity).
    """

    def __init_subclass__(cls, *, cell=None, **kwargs):
        super().__init_subclass__(**kwargs)
        if cell is None:
            return   # a subclass of a layer: its cell
        cls._cell = CELLS[cell]
        cls.cell = cls._cell.name
        cls.gates = cls._cell.G
        cls.state_names = cls._cell.states
        cls.kernel = cls._cell.kernel
        # How errors name each state array: h0, c0 or dstate (dh_T), dstate (dc_T).
        cls._state_labels = {"state": tuple(f"{name}0" for name in cls.state_names),
                             "dstate": tuple(f"dstate (d{name}_T)" for name in cls.state_names)}

    def __init__(self, input_size, hidden_size, num_layers, *, bidirectional, dropout,
                 batch_first, backend, dtype, precision, seed):
        self.input_size = check_int(input_size, "input_size")
        self.hidden_size = check_int(hidden_size, "hidden_size")
        self.num_layers = check_int(num_layers, "num_layers")
        self.bidirectional = bool(bidirectional)
        self.num_directions = 2 if self.bidirectional else 1
        self.dropout = check_dropout(dropout)
        self.batch_first = bool(batch_first)
        self.dtype = check_dtype(dtype)
        # "bf16": every matrix product of the kernels on bfloat16 operands, summed in
        # float32; the parameters, gradients and returned arrays stay float32.
        self.precision = check_precision(precision, self.dtype)
        self._backend = _backends.get_backend(backend)
        _memory.refuse_unless_fits(
            {"parameters": self.dtype.itemsize * _stack.parameter_count(
                self.gates, self.input_size, self.hidden_size, self.num_layers,
                self.bidirectional)},
            f"{type(self).__name__}({self.input_size}, {self.hidden_size}"
            f"{self._options_repr()})", "choose fewer layers or a smaller hidden_size")
        # (after the size check: a Stack names every layer's parameters)
        self._stack = self._stack_config()
        # torch's init: every parameter U(-1/sqrt(H), 1/sqrt(H)), in state_dict order.
        rng = np.random.default_rng(seed)
        bound = 1.0 / np.sqrt(self.hidden_size)
        self._params = {key: rng.uniform(-bound, bound, shape).astype(self.dtype)
                        for key, shape in _stack.parameter_shapes(
                            self.gates, self.input_size, self.hidden_size, self.num_layers,
                            self.bidirectional).items()}
        # Dropout masks: a pure function of (seed, step, layer, row); see seed_dropout.
        self.seed_dropout(int(rng.integers(2 ** 63)), step=0)
        self.grads = None
        self._tape = None
        self._weights_kept = _WeightsKept()

    def _stack_config(self):
        return _stack.Stack(self._backend, self.kernel, num_layers=self.num_layers,
                            num_directions=self.num_directions, hidden_size=self.hidden_size,
                            precision=self.precision)

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

    def sublayer(self, layers, direction=None):
        """Layers `layers` (a range) of this stack as a layer of their own that shares this
        one's parameter arrays (live, not copies), without dropout; with `direction` (0
        forward, 1 reverse) that direction alone, as a one-way layer (which reads its
        input as given: reverse x in time for the reverse direction). For diagnostics,
        which look inside a stack."""
        directions = range(self.num_directions) if direction is None else [direction]
        view = copy.copy(self)   # the same cell, options and backend
        view.input_size = self.input_size if layers.start == 0 else \
            self.num_directions * self.hidden_size
        view.num_layers, view.num_directions = len(layers), len(directions)
        view.bidirectional, view.dropout = len(directions) == 2, 0.0
        view.grads, view._tape, view._weights_kept = None, None, _WeightsKept()
        view._stack = view._stack_config()
        view._params = {new: self._params[old]
                        for new_k, k in enumerate(layers)
                        for new_d, d in enumerate(directions)
                        for new, old in zip(_stack.parameter_keys(new_k, new_d),
                                            _stack.parameter_keys(k, d))}
        return view

    # -- arguments ----------------------------------------------------------------

    def _time_major(self, array):
        """(T, B, .) from the layer's layout (a view)."""
        return array.transpose(1, 0, 2) if self.batch_first else array

    def _check_input(self, x):
        x = as_real_array(x, self.dtype, "x", batch=True)
        layout = "(B, T, I)" if self.batch_first else "(T, B, I)"
        if x.ndim != 3:
            raise ValueError(f"x must be 3-D {layout}, got shape {x.shape}")
        if x.shape[2] != self.input_size:
            raise ValueError(f"x has {x.shape[2]} features, the layer expects "
                             f"input_size={self.input_size}")
        if x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"x {layout} must have at least one time step and one "
                             f"sequence, got shape {x.shape}")
        return self._time_major(x)

    def _state_array(self, value, shape, what):
        """A state or its gradient as `shape` (L*D, B, H); (B, H) is taken where L*D = 1;
        None is zeros (read-only, shared)."""
        if value is None:
            return zeros(shape, self.dtype)
        value = as_real_array(value, self.dtype, what)
        if value.shape == shape:
            return value
        if shape[0] == 1 and value.shape == shape[1:]:
            return value[None]
        single = f", or (B, H) = {shape[1:]}" if shape[0] == 1 else ""
        raise ValueError(f"{what} must have shape (num_layers * num_directions, B, H) = "
                         f"{shape}{single}, as torch lays it out; got {value.shape}")

    def _states(self, value, B, what):
        """The tuple of state arrays (h, or h and c), each (L*D, B, H), from a `what`
        ("state" or "dstate") as the user gives it."""
        shape = (self.num_layers * self.num_directions, B, self.hidden_size)
        labels = self._state_labels[what]
        if value is None:
            return (zeros(shape, self.dtype),) * len(labels)
        if len(labels) == 1:
            return (self._state_array(value, shape, labels[0]),)
        if not isinstance(value, (tuple, list)) or len(value) != len(labels):
            several = "pair" if len(labels) == 2 else "tuple"
            raise TypeError(f"{what} for an {type(self).__name__} must be a {several} "
                            f"({', '.join(self.state_names)}) or None, "
                            f"got {type(value).__name__}")
        return tuple([self._state_array(v, shape, label) for v, label in zip(value, labels)])

    @staticmethod
    def _user_state(states):
        """A tuple of states as the user sees it: h alone, or (h, c)."""
        return states[0] if len(states) == 1 else states

    # -- forward and backward ------------------------------------------------

    def forward(self, x, state=None, *, lengths=None, training=True):
        """Run the whole sequences: (y, state_T). `training=False` keeps nothing for backward.

        `lengths` (B integers in [1, T]): sequence b is x[b, :lengths[b]]; y is zero past
        each length and state_T each sequence's state after its own last step.
        """
        x_tm = self._check_input(x)
        T, B = x_tm.shape[:2]
        batch = _stack.PADDED if lengths is None else \
            _stack.batch_layout(check_lengths(lengths, T, B), T)
        states0 = self._states(state, B, "state")
        # The last forward's record goes first: its workspace is freed (and, on
        # the compiled backend, reused) instead of living beside the new one.
        self._tape = None
        masks = self._next_dropout_masks(batch, T, B) if self.dropout and training else None
        params = self._weights_kept.copied(self._params) if training else self._params
        y_tm, finals, self._tape = _stack.forward(self._stack, params, x_tm, states0, batch,
                                                  training, masks)
        # y may be kept for BPTT: hand it out read-only so it cannot be changed under us.
        y_tm.flags.writeable = False
        return self._time_major(y_tm), self._user_state(finals)

    __call__ = forward

    def seed_dropout(self, seed, step=0, first_row=0):
        """Have the next training forward draw the dropout masks of training step `step`
        of a run seeded `seed`, for rows first_row, first_row + 1, ... of that step's
        whole batch; the forwards after it take steps step + 1, step + 2, ...

        Masks are a pure function of (seed, step, layer, row), as training's data order
        is of (seed, step): a resumed run draws the masks the uninterrupted one drew, and
        ranks that each give the first row of their share draw between them those of
        one process. A new layer starts at step 0 of a seed drawn from its `seed`.
        """
        self._dropout_seed = check_int(seed, "seed", low=0)
        self._dropout_step = check_int(step, "step", low=0)
        self._dropout_first_row = check_int(first_row, "first_row", low=0)

    def _next_dropout_masks(self, batch, T, B):
        """This training forward's masks as the stack driver asks for them, (layer k,
        shape) -> mask in the batch's layout; the next forward takes the next step."""
        seed, step, first_row = self._dropout_seed, self._dropout_step, self._dropout_first_row
        self._dropout_step += 1
        return lambda k, shape: batch.pack(dropout_mask(
            self.dropout, self.dtype, seed, step, k, (T, B, shape[-1]), first_row))

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
        _, finals, _ = _stack.forward(self._stack, self._params, x_t[None], states0,
                                      _stack.PADDED, False)
        return self._user_state(finals)

    def freeze(self, quantize=None):
        """An inference snapshot (fastrnn.frozen.FrozenLayer) with its weights prepared once:
        `quantize` None keeps them float, "int8" quantizes them with a scale per output
        row. Later changes to this layer do not reach it."""
        return frozen.FrozenLayer(self, quantize)

    def backward(self, dy=None, dstate=None, *, need_input_grad=True):
        """BPTT through the last forward: (dx, dstate0); sets `self.grads`.

        dy is shaped like y, dstate like state_T (None: zeros); dx is zero past each
        length and dstate0 is (L*D, B, H) (each of h and c for the LSTM).
        """
        tape = self._tape
        if tape is None:
            raise ValueError("backward() needs a forward(x) with training=True first")
        dy_tm = None
        if dy is not None:
            dy = as_real_array(dy, self.dtype, "dy")
            features = self.num_directions * self.hidden_size
            expected = (tape.B, tape.T, features) if self.batch_first else \
                (tape.T, tape.B, features)
            check_shape(dy, expected, "dy")
            dy_tm = self._time_major(dy)
        dstates = self._states(dstate, tape.B, "dstate")
        dx_tm, dstates0, self.grads = _stack.backward(self._stack, tape, dy_tm, dstates,
                                                      need_input_grad)
        dx = None if dx_tm is None else self._time_major(dx_tm)
        return dx, self._user_state(dstates0)

    def _options_repr(self):
        options = []
        if self.num_layers != 1:
            options.append(f"num_layers={self.num_layers}")
        if self.bidirectional:
            options.append("bidirectional=True")
        if self.dropout:
            options.append(f"dropout={self.dropout}")
        if self.precision != "fp32":
            options.append(f"precision={self.precision!r}")
        return "".join(f", {option}" for option in options)

    def __repr__(self):
        return (f"{type(self).__name__}({self.input_size}, {self.hidden_size}"
                f"{self._options_repr()}, batch_first={self.batch_first}, "
                f"backend={self.backend!r}, dtype={self.dtype.name})")


class RNN(_Recurrent, cell="rnn"):
    """Elman RNN: h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh), act tanh or relu."""

    def __init__(self, input_size, hidden_size, num_layers=1, *, nonlinearity="tanh",
                 bidirectional=False, dropout=0.0, batch_first=True, backend=None,
                 dtype=np.float32, precision="fp32", seed=None):
        kernels = self._cell.kernels
        if nonlinearity not in kernels:
            raise ValueError(f"nonlinearity must be {' or '.join(map(repr, kernels))}, "
                             f"got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        self.kernel = kernels[nonlinearity]
        super().__init__(input_size, hidden_size, num_layers, bidirectional=bidirectional,
                         dropout=dropout, batch_first=batch_first, backend=backend,
                         dtype=dtype, precision=precision, seed=seed)


class LSTM(_Recurrent, cell="lstm"):
    """LSTM with gate order i, f, g, o: c_t = f c_{t-1} + i g, h_t = o tanh(c_t).

    `forget_bias` (1.0) is added to the f slice of every bias_ih after torch's init,
    so that the cell starts out remembering; torch adds nothing: forget_bias=0.0 gives
    torch's init. Like every fastrnn layer, batch_first defaults to True (torch: False).
    """

    def __init__(self, input_size, hidden_size, num_layers=1, *, forget_bias=1.0,
                 bidirectional=False, dropout=0.0, batch_first=True, backend=None,
                 dtype=np.float32, precision="fp32", seed=None):
        super().__init__(input_size, hidden_size, num_layers, bidirectional=bidirectional,
                         dropout=dropout, batch_first=batch_first, backend=backend,
                         dtype=dtype, precision=precision, seed=seed)
        self.forget_bias = float(forget_bias)
        H = self.hidden_size
        f = self._cell.gates.index("f")
        for key, value in self._params.items():
            if key.startswith("bias_ih"):
                value[f * H:(f + 1) * H] += self.dtype.type(self.forget_bias)


class GRU(_Recurrent, cell="gru"):
    """GRU with gate order r, z, n: n = tanh(x W_in^T + b_in + r (h W_hn^T + b_hn)),
    h_t = (1 - z) n + z h_{t-1}."""

    def __init__(self, input_size, hidden_size, num_layers=1, *, bidirectional=False,
                 dropout=0.0, batch_first=True, backend=None, dtype=np.float32,
                 precision="fp32", seed=None):
        super().__init__(input_size, hidden_size, num_layers, bidirectional=bidirectional,
                         dropout=dropout, batch_first=batch_first, backend=backend,
                         dtype=dtype, precision=precision, seed=seed)


# The layer class of every cell in the table, by cell name.
LAYERS = {name: globals()[cell.layer] for name, cell in CELLS.items()}
