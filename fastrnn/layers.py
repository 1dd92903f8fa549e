"""RNN, LSTM and GRU layers: parameters, argument checks, layout; the math is in the backends."""

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


class _Recurrent:
    """What RNN, LSTM and GRU share; subclasses name the cell and its gates."""

    gates = 1
    cell = None

    def __init__(self, input_size, hidden_size, *, batch_first, backend, dtype, seed):
        self.input_size = check_int(input_size, "input_size")
        self.hidden_size = check_int(hidden_size, "hidden_size")
        self.batch_first = bool(batch_first)
        if np.dtype(dtype) not in [np.dtype(d) for d in _DTYPES]:
            raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
        self.dtype = np.dtype(dtype)
        self._backend = _backends.get_backend(backend)
        # torch's init: every parameter U(-1/sqrt(H), 1/sqrt(H)), in state_dict order.
        rng = np.random.default_rng(seed)
        k = 1.0 / np.sqrt(self.hidden_size)
        GH, I, H = self.gates * self.hidden_size, self.input_size, self.hidden_size
        self.weight_ih = rng.uniform(-k, k, (GH, I)).astype(self.dtype)
        self.weight_hh = rng.uniform(-k, k, (GH, H)).astype(self.dtype)
        self.bias_ih = rng.uniform(-k, k, (GH,)).astype(self.dtype)
        self.bias_hh = rng.uniform(-k, k, (GH,)).astype(self.dtype)
        self.grads = None
        self._tape = None

    @property
    def backend(self):
        """Name of the backend this layer runs on."""
        return self._backend.name

    # -- parameters --------------------------------------------------------

    def parameters(self):
        """The live parameter arrays, keyed like `state_dict()`."""
        return {
            "weight_ih_l0": self.weight_ih,
            "weight_hh_l0": self.weight_hh,
            "bias_ih_l0": self.bias_ih,
            "bias_hh_l0": self.bias_hh,
        }

    def state_dict(self):
        """Copies of the parameters, keyed like torch's state_dict."""
        return {key: value.copy() for key, value in self.parameters().items()}

    def load_state_dict(self, state_dict):
        """Copy parameters in place from array-likes keyed like `state_dict()`."""
        load_parameters(self.parameters(), state_dict)

    # -- forward and backward ------------------------------------------------

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
        H = self.hidden_size
        if value is None:
            return np.zeros((batch, H), dtype=self.dtype)
        value = as_real_array(value, self.dtype, what)
        _check_shape(value, (batch, H), what)
        return value

    def forward(self, x, state=None, *, training=True):
        """Run the whole sequence: (y, state_T). `training=False` keeps nothing for backward."""
        x_tm = self._check_input(x)
        states0 = self._initial_state(state, x_tm.shape[1])
        weights = self._kernel_weights()
        # The last forward's record goes first: its workspace is freed (and, on
        # the compiled backend, reused) instead of living beside the new one.
        self._tape = None
        y_tm, final, saved = self._run_forward(x_tm, states0, weights, training)
        # BPTT reads x again: as this forward saw it, not as the caller may leave it.
        if training and not self._reads_x_views() and np.may_share_memory(x_tm, x):
            x_tm = x_tm.copy()
        # y is kept for BPTT: hand it out read-only so it cannot be changed under us.
        y_tm.flags.writeable = False
        self._tape = (x_tm, states0, weights, y_tm, saved) if training else None
        y = y_tm.transpose(1, 0, 2) if self.batch_first else y_tm
        return y, final

    __call__ = forward

    def step(self, x_t, state=None):
        """One time step for inputs that arrive one at a time: x_t (B, I) -> new state.

        Keeps nothing for backward and leaves the last forward's record alone.
        """
        x_t = as_real_array(x_t, self.dtype, "x_t")
        if x_t.ndim != 2 or x_t.shape[1] != self.input_size or x_t.shape[0] == 0:
            raise ValueError(f"x_t must have shape (B, {self.input_size}) with B >= 1, "
                             f"got {x_t.shape}")
        states0 = self._initial_state(state, x_t.shape[0])
        _, final, _ = self._run_forward(x_t[None], states0, self._kernel_weights(), False)
        return final

    def _kernel_weights(self):
        # The kernels take one bias: b_ih + b_hh, summed once per call.
        return self.weight_ih, self.weight_hh, self.bias_ih + self.bias_hh

    def backward(self, dy=None, dstate=None, *, need_input_grad=True):
        """BPTT through the last forward: (dx, dstate0); sets `self.grads`."""
        if self._tape is None:
            raise ValueError("backward() needs a forward(x) with training=True first")
        x_tm, states0, weights, y_tm, saved = self._tape
        T, B, H = y_tm.shape
        if dy is not None:
            dy = as_real_array(dy, self.dtype, "dy")
            expected = (B, T, H) if self.batch_first else (T, B, H)
            _check_shape(dy, expected, "dy")
            dy = self._time_major(dy)
        dstates = self._final_state_grads(dstate, B)
        dx, dstates0, dw_ih, dw_hh, db_ih, db_hh = self._run_backward(
            x_tm, states0, weights, y_tm, saved, dy, dstates, need_input_grad)
        self.grads = {
            "weight_ih_l0": dw_ih,
            "weight_hh_l0": dw_hh,
            "bias_ih_l0": db_ih,
            "bias_hh_l0": db_hh,
        }
        if dx is not None and self.batch_first:
            dx = dx.transpose(1, 0, 2)
        return dx, dstates0

    def __repr__(self):
        return (f"{type(self).__name__}({self.input_size}, {self.hidden_size}, "
                f"batch_first={self.batch_first}, backend={self.backend!r}, "
                f"dtype={self.dtype.name})")


class RNN(_Recurrent):
    """Elman RNN with tanh: h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)."""

    gates = 1
    cell = "rnn"

    def __init__(self, input_size, hidden_size, *, nonlinearity="tanh", batch_first=True,
                 backend=None, dtype=np.float32, seed=None):
        if nonlinearity != "tanh":
            raise ValueError(f"nonlinearity must be 'tanh', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, batch_first=batch_first,
                         backend=backend, dtype=dtype, seed=seed)

    def _initial_state(self, state, batch):
        return (self._state_array(state, batch, "h0"),)

    def _final_state_grads(self, dstate, batch):
        return (self._state_array(dstate, batch, "dstate (dh_T)"),)

    def _run_forward(self, x, states0, weights, training):
        y, saved = self._backend.rnn_forward(x, *states0, *weights, training)
        return y, y[-1].copy(), saved

    def _run_backward(self, x, states0, weights, y, saved, dy, dstates, need_dx):
        dx, dh0, dw_ih, dw_hh, db = self._backend.rnn_backward(
            saved, x, *states0, *weights[:2], y, dy, *dstates, need_dx)
        return dx, dh0, dw_ih, dw_hh, db, db.copy()   # b_ih and b_hh: one sum, one gradient


class LSTM(_Recurrent):
    """LSTM with gate order i, f, g, o: c_t = f c_{t-1} + i g, h_t = o tanh(c_t)."""

    gates = 4
    cell = "lstm"

    def __init__(self, input_size, hidden_size, *, forget_bias=1.0, batch_first=True,
                 backend=None, dtype=np.float32, seed=None):
        super().__init__(input_size, hidden_size, batch_first=batch_first,
                         backend=backend, dtype=dtype, seed=seed)
        self.forget_bias = float(forget_bias)
        H = self.hidden_size
        self.bias_ih[H:2 * H] += self.dtype.type(self.forget_bias)

    def _pair(self, value, what):
        if value is None:
            return None, None
        if not isinstance(value, (tuple, list)) or len(value) != 2:
            raise TypeError(f"{what} for an LSTM must be a pair (h, c) or None, "
                            f"got {type(value).__name__}")
        return value

    def _initial_state(self, state, batch):
        h0, c0 = self._pair(state, "state")
        return self._state_array(h0, batch, "h0"), self._state_array(c0, batch, "c0")

    def _final_state_grads(self, dstate, batch):
        dh, dc = self._pair(dstate, "dstate")
        return (self._state_array(dh, batch, "dstate (dh_T)"),
                self._state_array(dc, batch, "dstate (dc_T)"))

    def _run_forward(self, x, states0, weights, training):
        y, cT, saved = self._backend.lstm_forward(x, *states0, *weights, training)
        return y, (y[-1].copy(), cT), saved

    def _run_backward(self, x, states0, weights, y, saved, dy, dstates, need_dx):
        dx, dh0, dc0, dw_ih, dw_hh, db = self._backend.lstm_backward(
            saved, x, *states0, *weights[:2], y, dy, *dstates, need_dx)
        return dx, (dh0, dc0), dw_ih, dw_hh, db, db.copy()


class GRU(_Recurrent):
    """GRU with gate order r, z, n: n = tanh(x W_in^T + b_in + r (h W_hn^T + b_hn)),
    h_t = (1 - z) n + z h_{t-1}."""

    gates = 3
    cell = "gru"

    def __init__(self, input_size, hidden_size, *, batch_first=True, backend=None,
                 dtype=np.float32, seed=None):
        super().__init__(input_size, hidden_size, batch_first=batch_first,
                         backend=backend, dtype=dtype, seed=seed)

    # One hidden state, as in the RNN.
    _initial_state = RNN._initial_state
    _final_state_grads = RNN._final_state_grads

    def _kernel_weights(self):
        # Both biases apart: the reset gate scales b_hn with the rest of h W_hn^T.
        return self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh

    def _run_forward(self, x, states0, weights, training):
        y, saved = self._backend.gru_forward(x, *states0, *weights, training)
        return y, y[-1].copy(), saved

    def _run_backward(self, x, states0, weights, y, saved, dy, dstates, need_dx):
        # (dx, dh0, dw_ih, dw_hh, db_ih, db_hh): already the order backward() takes.
        return self._backend.gru_backward(saved, x, *states0, *weights[:2], y, dy, *dstates,
                                          need_dx)


# The cells by name: every list of cell names (the model, checkpoints, the command line)
# is this one.
CELLS = {"lstm": LSTM, "gru": GRU, "rnn": RNN}
