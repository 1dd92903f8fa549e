"""The NumPy reference backend: the math spelled out plainly.

Every faster backend is tested against these functions, and these against
finite differences and PyTorch. Clarity wins over speed here, but the
structure is already the fast one: the input projection of all time steps is
one GEMM before the loop, and the weight gradients are GEMMs after it.

Sizes: T time steps, B batch, I input size, H hidden size, G gates (1 RNN,
4 LSTM, 3 GRU), N rows of a packed batch (below). Kernels are time-major:
x (T, B, I), y (T, B, H), or packed: x (N, I), y (N, H). Weights and biases
use torch's layout: w_ih (G*H, I), w_hh (G*H, H), b_ih and b_hh (G*H,).

Kernel contract, shared by every backend (same names, same argument order):

    rnn_forward(x, h0, w_ih, w_hh, b_ih, b_hh, training, *,
                batch_sizes=None, reverse=False, out=None) -> (y, saved)
    rnn_backward(saved, h0, w_ih, w_hh, y, dy, dhT, need_dx, *,
                 batch_sizes=None, reverse=False)
        -> (dx, dh0, dw_ih, dw_hh, db_ih, db_hh)
    rnn_relu_forward, rnn_relu_backward: the same as rnn_*, with relu for tanh
    lstm_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, training, *,
                 batch_sizes=None, reverse=False, out=None) -> (y, cT, saved)
    lstm_backward(saved, h0, c0, w_ih, w_hh, y, dy, dhT, dcT, need_dx, *,
                  batch_sizes=None, reverse=False)
        -> (dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh)
    gru_forward, gru_backward: as rnn_*

The compiled backend also takes threads=None (this call's own thread count)
as its last keyword.

Biases. Every cell takes b_ih and b_hh apart, and a backend adds them where
its cell sums them (once per call). Backward returns both gradients, two
arrays: equal for the RNN and the LSTM, whose gates sum the biases; the GRU's
differ in the n gate's slice, whose recurrent sum r multiplies, b_hn
included. dy may be None (no loss on y); dx is None when need_dx is False.

The saved workspace. `saved` is what a training forward keeps for BPTT (None
after an inference forward); only the same backend's backward reads it, and
backward takes the sizes of the call from it: there is no x argument, the
workspace holds x as the forward read it, and the caller's other arrays are
checked against it. What the reference keeps (a Workspace, below: the call's
cell, batch_sizes and direction, x, and per-step arrays in the order the
forward ran its steps):

    RNN    x (BPTT reads h_t from y)
    LSTM   x, every c_t (T, B, H) and the activated gates i, f, g, o (T, B, 4H)
    GRU    x, the activated gates r, z, n (T, B, 3H) and
           hn = h_{t-1} W_hn^T + b_hn (T, B, H), which n multiplies by r
(per-step arrays: (N, .) rows for a packed batch, below).

Where a backend differs:
- The compiled backend (fastrnn._core) keeps these in one opaque allocation,
  a Workspace, with the cell, dtype, sizes, batch_sizes and direction of the
  call, and refuses a foreign one. It takes x (and out=, y, dy) as any view
  whose last axis is contiguous (a transposed batch-first array, for one)
  and reads it through its strides, copying x once, into the workspace.
- The Numba backend keeps its arrays as (N, .) rows in a Workspace of its
  own (this one's, subclassed), and also every tanh(c_t) of the LSTM, which
  its forward computes for h_t anyway and its backward then reads instead of
  computing again.
Every backend copies x into its workspace: the caller may overwrite its
array between forward and backward.

Direction. reverse=True (only without batch_sizes: a ValueError otherwise, as
the layer reverses each packed sequence within its own length itself) runs
the time loop from t = T-1 down to 0: the recurrence starts at x[T-1], h0 is
the state before x[T-1], and y[t] is the state after reading x[t] (y stays
in x's time order, so y[0] is the final state). Its backward takes y and dy
in that same order and returns dx in x's order. The compiled backend reads x
backwards through a negative time stride, without a copy; this backend
reverses views of its arrays.

Output. out= (optional; None allocates y) is an array of y's shape and dtype,
(T, B, H) or packed (N, H), whose last axis is contiguous, with any other
strides: one half of a (T, B, 2H) array, joined[..., :H] or joined[..., H:],
for one. Forward writes y into it and returns it as y. Backward's y and dy may
be such views too: a bidirectional layer writes both directions into one
output and reads both halves of its gradient without copies.

Packed batches (variable lengths). batch_sizes=None: every step runs all B
sequences, x (T, B, I) as above. batch_sizes given, (T,) int64: the batch is
packed as torch's PackedSequence.data holds it (sorted_indices applied). Its
sequences are sorted by length, longest first, and step t runs sequences
[0, n_t), n_t = batch_sizes[t]; so batch_sizes is non-increasing, every
n_t >= 1, and n_0 = B, h0's rows. x is (N, I) with N = sum(batch_sizes):
step t's rows are x[o_t : o_t + n_t], o_t = n_0 + ... + n_{t-1} (o_0 = 0).
y and dy (N, H) and dx (N, I) are laid out the same way; h0, c0, dhT and dcT
stay (B, H), in the sorted order. cT is each sequence's cell state after its
own last step (sequence k's last step is the last t with n_t > k); h_T is not
returned: it is y at that step. In backward, dhT and dcT are the gradients of
each sequence's final state: BPTT of a sequence that ends at step t starts
there, from dhT[k] (plus dy at that step). The cost follows the tokens: in
every backend's time loop step t works on rows [0, n_t) only, the input
projection is one GEMM over the N rows, and so is each weight gradient.
Bad batch_sizes, or a packed x that is not (N, I), raise TypeError or
ValueError naming the fix (checked_offsets below does it for the Python
backends), and a backward refuses a saved from a forward with other
batch_sizes (checked_workspace).
"""

import numpy as np

from . import _blas

name = "numpy"


def _sigmoid(a):
    # Split by sign so exp never overflows for large |a|.
    e = np.exp(-np.abs(a))
    return np.where(a >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(a.dtype, copy=False)


def _relu(a):
    # np.maximum keeps NaN (NaN in, NaN out), as torch's relu does.
    return np.maximum(a, 0)


# --------------------------------------------------- arguments, steps, rows


def checked_offsets(fn, G, x, h0, w_ih, w_hh, batch_sizes, *, reverse=False, **more):
    """The first row of every time step in the call's per-step arrays, o_0..o_T
    ((T + 1,) int64, o_T = N), after checking x, h0, batch_sizes and the
    direction and that every other array has the shape they imply and x's
    dtype (float32 or float64); `more` holds the call's other arrays by name
    (None: not given). ValueError or TypeError naming the argument and the
    fix otherwise. Without batch_sizes, o_t = t * B.
    """
    dtype = np.asarray(x).dtype
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"{fn}: x must have dtype float32 or float64, got {dtype}")
    x_shape, h0_shape = np.shape(x), np.shape(h0)
    if batch_sizes is None:
        if len(x_shape) != 3 or 0 in x_shape:
            raise ValueError(f"{fn}: x must be 3-D (T, B, I) with T, B >= 1, "
                             f"got shape {x_shape}")
        T, B, I = x_shape
        if len(h0_shape) != 2 or h0_shape[0] != B or h0_shape[1] == 0:
            raise ValueError(f"{fn}: h0 must have shape ({B}, H) with H >= 1, got {h0_shape}")
        offsets = B * np.arange(T + 1, dtype=np.int64)
    else:
        if reverse:
            raise ValueError(f"{fn}: reverse=True runs full-length sequences only; reverse a "
                             "packed batch's sequences within their lengths and pass "
                             "reverse=False")
        if len(x_shape) != 2:
            raise ValueError(f"{fn}: a packed x must be 2-D (sum of batch_sizes, I), "
                             f"got shape {x_shape}")
        if len(h0_shape) != 2 or 0 in h0_shape:
            raise ValueError(f"{fn}: h0 must be 2-D (B, H) with B, H >= 1, got {h0_shape}")
        offsets = _packed_offsets(fn, batch_sizes, h0_shape[0])
        if offsets[-1] != x_shape[0]:
            raise ValueError(f"{fn}: a packed x must have sum(batch_sizes) = {offsets[-1]} "
                             f"rows, got shape {x_shape}")
        I = x_shape[1]
    B, H = h0_shape
    GH, per_step = G * H, x_shape[:-1]
    expected = {"w_ih": (GH, I), "w_hh": (GH, H), "b_ih": (GH,), "b_hh": (GH,), "c0": (B, H),
                "y": per_step + (H,), "dy": per_step + (H,), "out": per_step + (H,),
                "dhT": (B, H), "dcT": (B, H)}
    arrays = {"h0": h0, "w_ih": w_ih, "w_hh": w_hh, **more}
    for name, array in arrays.items():
        if name != "h0" and array is not None and np.shape(array) != expected[name]:
            raise ValueError(f"{fn}: {name} must have shape {expected[name]}, "
                             f"got {np.shape(array)}")
    for name, array in arrays.items():
        if array is not None and np.asarray(array).dtype != dtype:
            raise TypeError(f"{fn}: {name} has dtype {np.asarray(array).dtype}, expected "
                            f"{dtype} (x's)")
    if more.get("out") is not None and not isinstance(more["out"], np.ndarray):
        raise TypeError(f"{fn}: out must be a numpy.ndarray, got {type(more['out']).__name__}")
    return offsets


def _packed_offsets(fn, batch_sizes, B):
    """checked_offsets for a packed batch of B sequences (the C++ checker's messages)."""
    if not isinstance(batch_sizes, np.ndarray):
        raise TypeError(f"{fn}: batch_sizes must be a numpy.ndarray, "
                        f"got {type(batch_sizes).__name__}")
    if batch_sizes.dtype != np.int64:
        raise TypeError(f"{fn}: batch_sizes has dtype {batch_sizes.dtype}, expected int64")
    if batch_sizes.ndim != 1:
        raise ValueError(f"{fn}: batch_sizes must be 1-D (T,), got shape {batch_sizes.shape}")
    if batch_sizes.size == 0:
        raise ValueError(f"{fn}: batch_sizes needs at least one time step")
    if batch_sizes[0] != B:
        raise ValueError(f"{fn}: batch_sizes[0] must equal the batch of h0 ({B}), "
                         f"got {batch_sizes[0]}")
    bad = np.flatnonzero((batch_sizes < 1) | (np.diff(batch_sizes, prepend=B) > 0))
    if bad.size:
        raise ValueError(f"{fn}: batch_sizes must be non-increasing and at least 1 (the rows "
                         f"sorted by length, longest first), got {batch_sizes[bad[0]]} at "
                         f"step {bad[0]}")
    return np.concatenate([[0], np.cumsum(batch_sizes)])


class Workspace:
    """What a training forward keeps for its backward: the cell and the call's
    batch_sizes and direction (so that a backward of another call is refused), x as
    the forward read it (a copy, its steps in the order they ran) and the cell's
    saved arrays, as the backend keeps them. Each Python backend has its own
    subclass: a backward takes only its own."""

    __slots__ = ("cell", "batch_sizes", "reverse", "x", "arrays")

    def __init__(self, cell, x, arrays, batch_sizes, reverse):
        self.cell, self.x, self.arrays, self.reverse = cell, x, arrays, bool(reverse)
        self.batch_sizes = None if batch_sizes is None else np.array(batch_sizes)

    def __repr__(self):
        packed = "" if self.batch_sizes is None else " packed"
        direction = " reverse" if self.reverse else ""
        return (f"<{type(self).__module__}.Workspace {self.cell} {self.x.dtype}{packed}"
                f"{direction} x {self.x.shape}>")


def checked_workspace(fn, cell, kind, saved, h0, batch_sizes, reverse):
    """`saved` once it is known to be a workspace of class `kind` left by a training
    forward of `cell` in this direction over these batch_sizes, in h0's dtype; else
    ValueError or TypeError naming what differs. The caller's arrays are then
    checked against its x (checked_offsets)."""
    if saved is None:
        raise ValueError(f"{fn} needs the state saved by a training forward (got None)")
    if type(saved) is not kind:
        raise TypeError(f"{fn}: saved must be the workspace returned by {cell}_forward of "
                        f"this backend, got {type(saved).__name__}")
    if saved.cell != cell:
        raise ValueError(f"{fn}: saved comes from {saved.cell}_forward")
    if saved.x.dtype != np.asarray(h0).dtype:
        raise TypeError(f"{fn}: saved comes from a forward of another dtype ({saved.x.dtype})")
    if batch_sizes is not None:  # sound in itself first, as a forward's
        _packed_offsets(fn, batch_sizes, saved.x.shape[1] if saved.batch_sizes is None
                        else int(saved.batch_sizes[0]))
    if (saved.batch_sizes is None) != (batch_sizes is None) or (
            batch_sizes is not None and not np.array_equal(saved.batch_sizes, batch_sizes)):
        raise ValueError(f"{fn}: batch_sizes differ from those of the forward that saved it")
    if saved.reverse != bool(reverse):
        raise ValueError(f"{fn}: reverse={bool(reverse)}, but the forward that saved it ran "
                         "the other way")
    return saved


def in_run_order(a, reverse):
    """A per-step array (or None) with its steps in the order the recurrence runs
    them: reversed in time, as a view, for reverse=True."""
    return a[::-1] if reverse and a is not None else a


def output_y(y, out):
    """y (in x's time order) as a forward returns it: written into `out` when given."""
    if out is None:
        return np.ascontiguousarray(y)
    out[...] = y
    return out


def _steps(offsets):
    """(rows, n_t) of every time step t in order: the slice of its rows in the
    per-step arrays, and how many sequences run (sequences 0..n_t-1)."""
    bounds = offsets.tolist()
    return [(slice(o, o_next), o_next - o) for o, o_next in zip(bounds, bounds[1:])]


def _as_rows(a):
    """A per-step array as its rows: (T, B, n) -> (T*B, n); packed (N, n) as it is."""
    return a.reshape(-1, a.shape[-1])


def _like(rows, x):
    """Rows (N, n) laid out as x's steps: (T, B, n), or (N, n) when x is packed."""
    return rows.reshape(x.shape[:-1] + rows.shape[-1:])


def _previous_states(s0, s, offsets):
    """s_{t-1} of every row (N, H), from s0 (B, H) and the rows of s (N, H):
    step t continues the first n_t sequences of step t - 1."""
    steps = _steps(offsets)
    previous = [s[before.start:before.start + n_t]
                for (before, _), (_, n_t) in zip(steps, steps[1:])]
    return np.concatenate([s0, *previous])


def _weight_grads(da, x, h_prev):
    """dW_ih, dW_hh, db from the pre-activation gradients da (N, G*H) of every row."""
    return da.T @ x, da.T @ h_prev, da.sum(axis=0)


def _forward_start(fn, G, x, h0, w_ih, w_hh, batch_sizes, reverse, **more):
    """(offsets, x in run order) of a forward call, checked."""
    offsets = checked_offsets(fn, G, x, h0, w_ih, w_hh, batch_sizes, reverse=reverse, **more)
    return offsets, in_run_order(np.asarray(x), reverse)


def _backward_start(fn, cell, G, saved, h0, w_ih, w_hh, batch_sizes, reverse, y, dy, **more):
    """(offsets, saved, y rows, dy rows or None) of a backward call, checked, in run order."""
    saved = checked_workspace(fn, cell, Workspace, saved, h0, batch_sizes, reverse)
    offsets = checked_offsets(fn, G, saved.x, h0, w_ih, w_hh, batch_sizes, y=y, dy=dy, **more)
    y, dy = in_run_order(y, reverse), in_run_order(dy, reverse)
    return offsets, saved, _as_rows(y), None if dy is None else _as_rows(dy)


def _input_grad(da, w_ih, x, need_dx, reverse):
    """dx = da W_ih in x's time order, or None."""
    return in_run_order(_like(da @ w_ih, x), reverse) if need_dx else None


# -------------------------------------------------- RNN (tanh or relu)
#   a_t = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh
#   h_t = tanh(a_t)  (rnn_*),  or  h_t = relu(a_t) = max(a_t, 0)  (rnn_relu_*)
# saved: x alone; BPTT reads every h_t from y.


def _elman_forward(cell, activation, x, h0, w_ih, w_hh, b_ih, b_hh, training, batch_sizes,
                   reverse, out):
    offsets, x = _forward_start(f"{cell}_forward", 1, x, h0, w_ih, w_hh, batch_sizes, reverse,
                                b_ih=b_ih, b_hh=b_hh, out=out)
    xw = _as_rows(x) @ w_ih.T + (b_ih + b_hh)
    y = np.empty(xw.shape, dtype=x.dtype)
    h = h0.astype(x.dtype)   # row k: sequence k's latest state
    for rows, n_t in _steps(offsets):
        h[:n_t] = activation(xw[rows] + h[:n_t] @ w_hh.T)
        y[rows] = h[:n_t]
    saved = Workspace(cell, x.copy(), (), batch_sizes, reverse) if training else None
    return output_y(in_run_order(_like(y, x), reverse), out), saved


def rnn_forward(x, h0, w_ih, w_hh, b_ih, b_hh, training=True, *, batch_sizes=None,
                reverse=False, out=None):
    return _elman_forward("rnn", np.tanh, x, h0, w_ih, w_hh, b_ih, b_hh, training,
                          batch_sizes, reverse, out)


def rnn_relu_forward(x, h0, w_ih, w_hh, b_ih, b_hh, training=True, *, batch_sizes=None,
                     reverse=False, out=None):
    return _elman_forward("rnn_relu", _relu, x, h0, w_ih, w_hh, b_ih, b_hh, training,
                          batch_sizes, reverse, out)


def _tanh_backward(dh, h):
    return dh * (1.0 - h * h)


def _relu_backward(dh, h):
    # [h > 0] is false for NaN too: no gradient through a NaN unit.
    return np.where(h > 0, dh, 0)


def _elman_backward(cell, activation_backward, saved, h0, w_ih, w_hh, y, dy, dhT, need_dx,
                    batch_sizes, reverse):
    # BPTT, for t = T..1, over the sequences still running at t:
    #   dh_t   = dy_t + dh_t(from t+1)                      (1)
    #   da_t   = dh_t * (1 - h_t^2)      (tanh)             (2)
    #   da_t   = dh_t * [h_t > 0]        (relu)             (2)
    #   dh_{t-1} (from t) = da_t W_hh                       (3)
    # after the loop, one GEMM each over the N rows:
    #   dW_ih = sum_t da_t^T x_t,  dW_hh = sum_t da_t^T h_{t-1},
    #   db_ih = db_hh = sum_t da_t,  dx_t = da_t W_ih
    offsets, saved, y_rows, dy_rows = _backward_start(
        f"{cell}_backward", cell, 1, saved, h0, w_ih, w_hh, batch_sizes, reverse, y, dy,
        dhT=dhT)
    da = np.empty_like(y_rows)
    dh = dhT.astype(y_rows.dtype)   # row k: dhT[k] until BPTT reaches sequence k's last step
    for rows, n_t in reversed(_steps(offsets)):
        if dy_rows is not None:
            dh[:n_t] += dy_rows[rows]                               # (1)
        da[rows] = activation_backward(dh[:n_t], y_rows[rows])      # (2)
        dh[:n_t] = da[rows] @ w_hh                                  # (3)
    x = saved.x
    dw_ih, dw_hh, db = _weight_grads(da, _as_rows(x), _previous_states(h0, y_rows, offsets))
    return (_input_grad(da, w_ih, x, need_dx, reverse), dh, dw_ih, dw_hh, db, db.copy())


def rnn_backward(saved, h0, w_ih, w_hh, y, dy, dhT, need_dx=True, *, batch_sizes=None,
                 reverse=False):
    return _elman_backward("rnn", _tanh_backward, saved, h0, w_ih, w_hh, y, dy, dhT, need_dx,
                           batch_sizes, reverse)


def rnn_relu_backward(saved, h0, w_ih, w_hh, y, dy, dhT, need_dx=True, *, batch_sizes=None,
                      reverse=False):
    return _elman_backward("rnn_relu", _relu_backward, saved, h0, w_ih, w_hh, y, dy, dhT,
                           need_dx, batch_sizes, reverse)


# ---------------------------------------------------------------------- LSTM
#   a_t = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh, split into gate order i, f, g, o
#   i = sigmoid(a_i), f = sigmoid(a_f), g = tanh(a_g), o = sigmoid(a_o)
#   c_t = f * c_{t-1} + i * g
#   h_t = o * tanh(c_t)
# saved: x, then arrays = (c, gates): every c_t (T, B, H) and the activated
# gates (T, B, 4H).


def lstm_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, training=True, *, batch_sizes=None,
                 reverse=False, out=None):
    offsets, x = _forward_start("lstm_forward", 4, x, h0, w_ih, w_hh, batch_sizes, reverse,
                                b_ih=b_ih, b_hh=b_hh, c0=c0, out=out)
    H = h0.shape[1]
    xw = _as_rows(x) @ w_ih.T + (b_ih + b_hh)
    N = len(xw)
    y = np.empty((N, H), dtype=x.dtype)
    c_all = np.empty((N, H), dtype=x.dtype) if training else None
    gates = np.empty((N, 4 * H), dtype=x.dtype) if training else None
    # Row k: sequence k's latest states, so c ends as each one's own last c_t.
    h, c = h0.astype(x.dtype), c0.astype(x.dtype)
    for rows, n_t in _steps(offsets):
        a = xw[rows] + h[:n_t] @ w_hh.T
        i = _sigmoid(a[:, :H])
        f = _sigmoid(a[:, H:2 * H])
        g = np.tanh(a[:, 2 * H:3 * H])
        o = _sigmoid(a[:, 3 * H:])
        c[:n_t] = f * c[:n_t] + i * g
        h[:n_t] = o * np.tanh(c[:n_t])
        y[rows] = h[:n_t]
        if training:
            c_all[rows] = c[:n_t]
            gates[rows] = np.concatenate([i, f, g, o], axis=1)
    saved = (Workspace("lstm", x.copy(), (_like(c_all, x), _like(gates, x)), batch_sizes,
                       reverse) if training else None)
    return output_y(in_run_order(_like(y, x), reverse), out), c, saved


def lstm_backward(saved, h0, c0, w_ih, w_hh, y, dy, dhT, dcT, need_dx=True, *,
                  batch_sizes=None, reverse=False):
    # BPTT, for t = T..1, over the sequences still running at t, with dh, dc
    # carried from step t+1:
    #   dh_t  = dy_t + dh                                   (1)
    #   do    = dh_t * tanh(c_t)                            (2)
    #   dc_t  = dc + dh_t * o * (1 - tanh(c_t)^2)           (3)
    #   di    = dc_t * g,  dg = dc_t * i                    (4)
    #   df    = dc_t * c_{t-1}                              (5)
    #   dc    = dc_t * f            (carried to t-1)        (6)
    #   da    = [di i(1-i), df f(1-f), dg (1-g^2), do o(1-o)]  (7)
    #   dh    = da W_hh             (carried to t-1)        (8)
    # after the loop: weight, bias and input gradients as one GEMM each.
    offsets, saved, y_rows, dy_rows = _backward_start(
        "lstm_backward", "lstm", 4, saved, h0, w_ih, w_hh, batch_sizes, reverse, y, dy,
        c0=c0, dhT=dhT, dcT=dcT)
    H = h0.shape[1]
    c_all, gates = (_as_rows(a) for a in saved.arrays)
    c_prev = _previous_states(c0, c_all, offsets)
    da = np.empty_like(gates)
    # Row k: dhT[k] and dcT[k] until BPTT reaches sequence k's last step.
    dh, dc = dhT.astype(y_rows.dtype), dcT.astype(y_rows.dtype)
    for rows, n_t in reversed(_steps(offsets)):
        i = gates[rows, :H]
        f = gates[rows, H:2 * H]
        g = gates[rows, 2 * H:3 * H]
        o = gates[rows, 3 * H:]
        if dy_rows is not None:
            dh[:n_t] += dy_rows[rows]                               # (1)
        tanh_c = np.tanh(c_all[rows])
        do = dh[:n_t] * tanh_c                                      # (2)
        dc[:n_t] += dh[:n_t] * o * (1.0 - tanh_c * tanh_c)          # (3)
        da[rows, :H] = dc[:n_t] * g * i * (1.0 - i)                 # (4), (7)
        da[rows, H:2 * H] = dc[:n_t] * c_prev[rows] * f * (1.0 - f)  # (5), (7)
        da[rows, 2 * H:3 * H] = dc[:n_t] * i * (1.0 - g * g)        # (4), (7)
        da[rows, 3 * H:] = do * o * (1.0 - o)                       # (7)
        dc[:n_t] *= f                                               # (6)
        dh[:n_t] = da[rows] @ w_hh                                  # (8)
    x = saved.x
    dw_ih, dw_hh, db = _weight_grads(da, _as_rows(x), _previous_states(h0, y_rows, offsets))
    return (_input_grad(da, w_ih, x, need_dx, reverse), dh, dc, dw_ih, dw_hh, db, db.copy())


# ----------------------------------------------------------------------- GRU
#   gx_t = x_t W_ih^T + b_ih,  gh_t = h_{t-1} W_hh^T + b_hh, split into gate order r, z, n
#   r = sigmoid(gx_r + gh_r),  z = sigmoid(gx_z + gh_z)
#   hn = gh_n                   (= h_{t-1} W_hn^T + b_hn)
#   n = tanh(gx_n + r * hn)
#   h_t = (1 - z) * n + z * h_{t-1},  computed as n + z * (h_{t-1} - n)
# r scales hn, b_hn included, so the two biases cannot be summed, and BPTT
# gives the input and the recurrent sums of the n gate different gradients.
# saved: x, then arrays = (gates, hn): the activated gates r, z, n (T, B, 3H)
# and hn (T, B, H).


def gru_forward(x, h0, w_ih, w_hh, b_ih, b_hh, training=True, *, batch_sizes=None,
                reverse=False, out=None):
    offsets, x = _forward_start("gru_forward", 3, x, h0, w_ih, w_hh, batch_sizes, reverse,
                                b_ih=b_ih, b_hh=b_hh, out=out)
    H = h0.shape[1]
    gx = _as_rows(x) @ w_ih.T + b_ih
    N = len(gx)
    y = np.empty((N, H), dtype=x.dtype)
    gates = np.empty((N, 3 * H), dtype=x.dtype) if training else None
    hn_all = np.empty((N, H), dtype=x.dtype) if training else None
    h = h0.astype(x.dtype)   # row k: sequence k's latest state
    for rows, n_t in _steps(offsets):
        gh = h[:n_t] @ w_hh.T + b_hh
        r = _sigmoid(gx[rows, :H] + gh[:, :H])
        z = _sigmoid(gx[rows, H:2 * H] + gh[:, H:2 * H])
        hn = gh[:, 2 * H:]
        n = np.tanh(gx[rows, 2 * H:] + r * hn)
        h[:n_t] = n + z * (h[:n_t] - n)
        y[rows] = h[:n_t]
        if training:
            gates[rows] = np.concatenate([r, z, n], axis=1)
            hn_all[rows] = hn
    saved = (Workspace("gru", x.copy(), (_like(gates, x), _like(hn_all, x)), batch_sizes,
                       reverse) if training else None)
    return output_y(in_run_order(_like(y, x), reverse), out), saved


def gru_backward(saved, h0, w_ih, w_hh, y, dy, dhT, need_dx=True, *, batch_sizes=None,
                 reverse=False):
    # BPTT, for t = T..1, over the sequences still running at t, with dh
    # carried from step t+1:
    #   dh_t  = dy_t + dh                                   (1)
    #   dn    = dh_t * (1 - z)                              (2)
    #   dz    = dh_t * (h_{t-1} - n)                        (3)
    #   da_n  = dn * (1 - n^2)      (n's input sum gx_n)    (4)
    #   dhn   = da_n * r            (n's recurrent sum hn)  (5)
    #   dr    = da_n * hn                                   (6)
    #   da_r  = dr * r(1-r),  da_z = dz * z(1-z)            (7)
    #   dh    = dh_t * z            (the direct path)       (8)
    #   dh   += [da_r, da_z, dhn] W_hh   (carried to t-1)   (9)
    # after the loop, with da_in = [da_r, da_z, da_n] and da_rec = [da_r, da_z, dhn]:
    #   dW_ih = sum_t da_in_t^T x_t,  db_ih = sum_t da_in_t,  dx_t = da_in_t W_ih   (10)
    #   dW_hh = sum_t da_rec_t^T h_{t-1},  db_hh = sum_t da_rec_t                  (11)
    offsets, saved, y_rows, dy_rows = _backward_start(
        "gru_backward", "gru", 3, saved, h0, w_ih, w_hh, batch_sizes, reverse, y, dy, dhT=dhT)
    H = h0.shape[1]
    gates, hn_all = (_as_rows(a) for a in saved.arrays)
    h_prev = _previous_states(h0, y_rows, offsets)
    da_in = np.empty_like(gates)
    da_rec = np.empty_like(gates)
    dh = dhT.astype(y_rows.dtype)   # row k: dhT[k] until BPTT reaches sequence k's last step
    for rows, n_t in reversed(_steps(offsets)):
        r = gates[rows, :H]
        z = gates[rows, H:2 * H]
        n = gates[rows, 2 * H:]
        if dy_rows is not None:
            dh[:n_t] += dy_rows[rows]                               # (1)
        da_n = dh[:n_t] * (1.0 - z) * (1.0 - n * n)                 # (2), (4)
        da_z = dh[:n_t] * (h_prev[rows] - n) * z * (1.0 - z)        # (3), (7)
        da_r = da_n * hn_all[rows] * r * (1.0 - r)                  # (6), (7)
        da_in[rows] = np.concatenate([da_r, da_z, da_n], axis=1)
        da_rec[rows] = np.concatenate([da_r, da_z, da_n * r], axis=1)  # (5)
        dh[:n_t] = dh[:n_t] * z + da_rec[rows] @ w_hh               # (8), (9)
    x = saved.x
    dw_ih = da_in.T @ _as_rows(x)                                   # (10)
    dw_hh = da_rec.T @ h_prev                                       # (11)
    dx = _input_grad(da_in, w_ih, x, need_dx, reverse)              # (10)
    return dx, dh, dw_ih, dw_hh, da_in.sum(axis=0), da_rec.sum(axis=0)


def set_num_threads(n):
    """The reference's threads are those of NumPy's BLAS."""
    _blas.limit_threads(n)
