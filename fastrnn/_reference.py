"""The NumPy reference backend: the math spelled out plainly.

Every faster backend is tested against these functions, and these against
finite differences and PyTorch. Clarity wins over speed here, but the
structure is already the fast one: the input projection of all time steps is
one GEMM before the loop, and the weight gradients are GEMMs after it.

Sizes: T time steps, B batch, I input size, H hidden size, G gates (1 RNN,
4 LSTM, 3 GRU). Kernels are time-major: x (T, B, I), y (T, B, H). Weights use
torch's layout: w_ih (G*H, I), w_hh (G*H, H); b is b_ih + b_hh, (G*H,). The
GRU takes b_ih and b_hh apart: its reset gate multiplies b_hn.

Kernel contract, shared by every backend (same names, same argument order):

    rnn_forward(x, h0, w_ih, w_hh, b, training) -> (y, saved)
    rnn_backward(saved, x, h0, w_ih, w_hh, y, dy, dhT, need_dx)
        -> (dx, dh0, dw_ih, dw_hh, db)
    lstm_forward(x, h0, c0, w_ih, w_hh, b, training) -> (y, cT, saved)
    lstm_backward(saved, x, h0, c0, w_ih, w_hh, y, dy, dhT, dcT, need_dx)
        -> (dx, dh0, dc0, dw_ih, dw_hh, db)
    gru_forward(x, h0, w_ih, w_hh, b_ih, b_hh, training) -> (y, saved)
    gru_backward(saved, x, h0, w_ih, w_hh, y, dy, dhT, need_dx)
        -> (dx, dh0, dw_ih, dw_hh, db_ih, db_hh)

dy may be None (no loss on y); dx is None when need_dx is False. db is the
gradient of both b_ih and b_hh; the GRU's db_ih and db_hh differ in the n
gate's slice.

The saved workspace. `saved` is what a training forward keeps for BPTT (None
after an inference forward); only the same backend's backward reads it, and
it holds the same contents on every backend:

    RNN    nothing beyond x and y (y holds every h_t), which backward is
           given: saved is None
    LSTM   every c_t (T, B, H) and the activated gates i, f, g, o (T, B, 4H)
    GRU    the activated gates r, z, n (T, B, 3H) and
           hn = h_{t-1} W_hn^T + b_hn (T, B, H), which n multiplies by r

Where a backend differs:
- The compiled backend (fastrnn._core) keeps these in one opaque allocation,
  a Workspace, and beside them its own contiguous copy of x (T, B, I), for the
  RNN too. Its module sets `reads_x_views = True`: it takes x as any (T, B, I)
  view whose last axis is contiguous (a transposed batch-first array, for
  one) and reads it through its strides, so it copies x once, into the
  workspace, where BPTT reads it; the caller may overwrite its array between
  forward and backward. For the other backends the layer keeps a copy of
  a caller's x itself.
- The Numba backend also keeps every tanh(c_t) (T, B, H) of the LSTM, which
  its forward computes for h_t anyway and its backward then reads instead of
  computing again.
"""

import numpy as np

from . import _blas

name = "numpy"


def _sigmoid(a):
    # Split by sign so exp never overflows for large |a|.
    e = np.exp(-np.abs(a))
    return np.where(a >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(a.dtype, copy=False)


def _previous_states(s0, s):
    """s_{t-1} for t = 1..T: (T, B, H) from s0 (B, H) and s (T, B, H)."""
    return np.concatenate([s0[None], s[:-1]], axis=0)


def _weight_grads(da, x, h_prev):
    """dW_ih, dW_hh, db from the pre-activation gradients da (T, B, G*H)."""
    T, B, GH = da.shape
    da2 = da.reshape(T * B, GH)
    dw_ih = da2.T @ x.reshape(T * B, -1)
    dw_hh = da2.T @ h_prev.reshape(T * B, -1)
    db = da2.sum(axis=0)
    return dw_ih, dw_hh, db


# ---------------------------------------------------------------- RNN (tanh)
#   a_t = x_t W_ih^T + h_{t-1} W_hh^T + b
#   h_t = tanh(a_t)


def rnn_forward(x, h0, w_ih, w_hh, b, training=True):
    T, B, _ = x.shape
    H = h0.shape[1]
    xw = (x.reshape(T * B, -1) @ w_ih.T + b).reshape(T, B, H)
    y = np.empty((T, B, H), dtype=x.dtype)
    h = h0
    for t in range(T):
        h = np.tanh(xw[t] + h @ w_hh.T)
        y[t] = h
    return y, None


def rnn_backward(saved, x, h0, w_ih, w_hh, y, dy, dhT, need_dx=True):
    # BPTT, for t = T..1:
    #   dh_t   = dy_t + dh_t(from t+1)                      (1)
    #   da_t   = dh_t * (1 - h_t^2)                         (2)
    #   dh_{t-1} (from t) = da_t W_hh                       (3)
    # after the loop, one GEMM each:
    #   dW_ih = sum_t da_t^T x_t,  dW_hh = sum_t da_t^T h_{t-1},
    #   db = sum_t da_t,  dx_t = da_t W_ih
    T = x.shape[0]
    da = np.empty_like(y)
    dh = dhT.copy()
    for t in range(T - 1, -1, -1):
        if dy is not None:
            dh = dh + dy[t]
        da[t] = dh * (1.0 - y[t] * y[t])
        dh = da[t] @ w_hh
    dw_ih, dw_hh, db = _weight_grads(da, x, _previous_states(h0, y))
    dx = da @ w_ih if need_dx else None
    return dx, dh, dw_ih, dw_hh, db


# ---------------------------------------------------------------------- LSTM
#   a_t = x_t W_ih^T + h_{t-1} W_hh^T + b, split into gate order i, f, g, o
#   i = sigmoid(a_i), f = sigmoid(a_f), g = tanh(a_g), o = sigmoid(a_o)
#   c_t = f * c_{t-1} + i * g
#   h_t = o * tanh(c_t)
# saved = (c, gates): every c_t (T, B, H) and the activated gates (T, B, 4H).


def lstm_forward(x, h0, c0, w_ih, w_hh, b, training=True):
    T, B, _ = x.shape
    H = h0.shape[1]
    xw = (x.reshape(T * B, -1) @ w_ih.T + b).reshape(T, B, 4 * H)
    y = np.empty((T, B, H), dtype=x.dtype)
    c_all = np.empty((T, B, H), dtype=x.dtype) if training else None
    gates = np.empty((T, B, 4 * H), dtype=x.dtype) if training else None
    h, c = h0, c0
    for t in range(T):
        a = xw[t] + h @ w_hh.T
        i = _sigmoid(a[:, :H])
        f = _sigmoid(a[:, H:2 * H])
        g = np.tanh(a[:, 2 * H:3 * H])
        o = _sigmoid(a[:, 3 * H:])
        c = f * c + i * g
        h = o * np.tanh(c)
        y[t] = h
        if training:
            c_all[t] = c
            gates[t] = np.concatenate([i, f, g, o], axis=1)
    saved = (c_all, gates) if training else None
    return y, c, saved


def lstm_backward(saved, x, h0, c0, w_ih, w_hh, y, dy, dhT, dcT, need_dx=True):
    # BPTT, for t = T..1, with dh, dc carried from step t+1:
    #   dh_t  = dy_t + dh                                   (1)
    #   do    = dh_t * tanh(c_t)                            (2)
    #   dc_t  = dc + dh_t * o * (1 - tanh(c_t)^2)           (3)
    #   di    = dc_t * g,  dg = dc_t * i                    (4)
    #   df    = dc_t * c_{t-1}                              (5)
    #   dc    = dc_t * f            (carried to t-1)        (6)
    #   da    = [di i(1-i), df f(1-f), dg (1-g^2), do o(1-o)]  (7)
    #   dh    = da W_hh             (carried to t-1)        (8)
    # after the loop: weight, bias and input gradients as one GEMM each.
    if saved is None:
        raise ValueError("lstm_backward needs the state saved by a training forward")
    c_all, gates = saved
    T, B, H = y.shape
    c_prev = _previous_states(c0, c_all)
    da = np.empty_like(gates)
    dh = dhT.copy()
    dc = dcT.copy()
    for t in range(T - 1, -1, -1):
        i = gates[t, :, :H]
        f = gates[t, :, H:2 * H]
        g = gates[t, :, 2 * H:3 * H]
        o = gates[t, :, 3 * H:]
        if dy is not None:
            dh = dh + dy[t]
        tanh_c = np.tanh(c_all[t])
        do = dh * tanh_c
        dc = dc + dh * o * (1.0 - tanh_c * tanh_c)
        da[t, :, :H] = dc * g * i * (1.0 - i)
        da[t, :, H:2 * H] = dc * c_prev[t] * f * (1.0 - f)
        da[t, :, 2 * H:3 * H] = dc * i * (1.0 - g * g)
        da[t, :, 3 * H:] = do * o * (1.0 - o)
        dc = dc * f
        dh = da[t] @ w_hh
    dw_ih, dw_hh, db = _weight_grads(da, x, _previous_states(h0, y))
    dx = da @ w_ih if need_dx else None
    return dx, dh, dc, dw_ih, dw_hh, db


# ----------------------------------------------------------------------- GRU
#   gx_t = x_t W_ih^T + b_ih,  gh_t = h_{t-1} W_hh^T + b_hh, split into gate order r, z, n
#   r = sigmoid(gx_r + gh_r),  z = sigmoid(gx_z + gh_z)
#   hn = gh_n                   (= h_{t-1} W_hn^T + b_hn)
#   n = tanh(gx_n + r * hn)
#   h_t = (1 - z) * n + z * h_{t-1},  computed as n + z * (h_{t-1} - n)
# r scales hn, b_hn included, so the two biases cannot be summed, and BPTT
# gives the input and the recurrent sums of the n gate different gradients.
# saved = (gates, hn): the activated gates r, z, n (T, B, 3H) and hn (T, B, H).


def gru_forward(x, h0, w_ih, w_hh, b_ih, b_hh, training=True):
    T, B, _ = x.shape
    H = h0.shape[1]
    gx = (x.reshape(T * B, -1) @ w_ih.T + b_ih).reshape(T, B, 3 * H)
    y = np.empty((T, B, H), dtype=x.dtype)
    gates = np.empty((T, B, 3 * H), dtype=x.dtype) if training else None
    hn_all = np.empty((T, B, H), dtype=x.dtype) if training else None
    h = h0
    for t in range(T):
        gh = h @ w_hh.T + b_hh
        r = _sigmoid(gx[t, :, :H] + gh[:, :H])
        z = _sigmoid(gx[t, :, H:2 * H] + gh[:, H:2 * H])
        hn = gh[:, 2 * H:]
        n = np.tanh(gx[t, :, 2 * H:] + r * hn)
        h = n + z * (h - n)
        y[t] = h
        if training:
            gates[t] = np.concatenate([r, z, n], axis=1)
            hn_all[t] = hn
    saved = (gates, hn_all) if training else None
    return y, saved


def gru_backward(saved, x, h0, w_ih, w_hh, y, dy, dhT, need_dx=True):
    # BPTT, for t = T..1, with dh carried from step t+1:
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
    if saved is None:
        raise ValueError("gru_backward needs the state saved by a training forward")
    gates, hn_all = saved
    T, B, H = y.shape
    h_prev = _previous_states(h0, y)
    da_in = np.empty_like(gates)
    da_rec = np.empty_like(gates)
    dh = dhT.copy()
    for t in range(T - 1, -1, -1):
        r = gates[t, :, :H]
        z = gates[t, :, H:2 * H]
        n = gates[t, :, 2 * H:]
        if dy is not None:
            dh = dh + dy[t]                                        # (1)
        da_n = dh * (1.0 - z) * (1.0 - n * n)                      # (2), (4)
        da_z = dh * (h_prev[t] - n) * z * (1.0 - z)                # (3), (7)
        da_r = da_n * hn_all[t] * r * (1.0 - r)                    # (6), (7)
        da_in[t] = np.concatenate([da_r, da_z, da_n], axis=1)
        da_rec[t] = np.concatenate([da_r, da_z, da_n * r], axis=1)  # (5)
        dh = dh * z + da_rec[t] @ w_hh                             # (8), (9)
    da_in2, da_rec2 = da_in.reshape(T * B, 3 * H), da_rec.reshape(T * B, 3 * H)
    dw_ih = da_in2.T @ x.reshape(T * B, -1)                        # (10)
    dw_hh = da_rec2.T @ h_prev.reshape(T * B, H)                   # (11)
    dx = da_in @ w_ih if need_dx else None                         # (10)
    return dx, dh, dw_ih, dw_hh, da_in2.sum(axis=0), da_rec2.sum(axis=0)


def set_num_threads(n):
    """The reference's threads are those of NumPy's BLAS."""
    _blas.limit_threads(n)
