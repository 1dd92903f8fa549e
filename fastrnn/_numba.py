"""The Numba backend: the reference kernels compiled, for installs without fastrnn._core.

Same kernel contract as `fastrnn/_reference.py` (its docstring has it), same
names and argument order. Sizes: T time steps, B batch, I input size, H hidden
size, G gates (1 RNN, 4 LSTM); kernels are time-major, x (T, B, I), y (T, B, H).

Where the time goes, and what is done about it:
- Matrix products are BLAS calls (Numba's np.dot goes to SciPy's BLAS): the
  input projection of all T steps is one GEMM before the time loop; the
  weight and input gradients are one GEMM each after the BPTT loop, so only
  the recurrent product h_{t-1} W_hh^T (or da_t W_hh) is left inside it.
- The elementwise gate math of a step is one fused loop writing straight into
  the saved workspace, with no temporaries. The forward pass keeps tanh(c_t)
  beside c_t, so BPTT needs no transcendental function at all.
- Each `_*` kernel compiles lazily, once per dtype, on its first call and is
  cached on disk (cache=True): importing this module compiles nothing.
- nogil: the kernels release the GIL, so Python threads can run them side by
  side. No `parallel=True`: at the sizes that matter a step's elementwise work
  is tens of microseconds, less than waking a second thread pool beside BLAS's.

The public functions only convert arguments (one dtype, C order, dy and
need_dx as flags) and call the compiled kernels.
"""

import math

import numba
import numpy as np
from numba import njit, types
from numba.extending import overload

name = "numba"

_jit = njit(cache=True, nogil=True)


# Gate activations. libm's tanh and exp are scalar calls that stop LLVM from
# vectorizing the fused gate loop (libm tanh alone costs ~5x NumPy's SIMD tanh
# here), so float32 kernels use the branch-free functions below, computed in
# float64 from multiplies and adds only; they vectorize with the rest of the
# loop and are correctly rounded to float32 but for ~0.1 ulp. float64 kernels
# keep libm's exact functions.
# _ONE is float32 so that float32 arithmetic stays float32 (a Python float
# literal would promote it to float64); in float64 kernels it is exact.
_ONE = np.float32(1.0)
_TANH_SATURATES = 10.0      # float32 tanh(x) rounds to +-1 beyond this
_SIGMOID_SATURATES = 110.0  # float32 sigmoid(-x) underflows to 0 beyond this
_HALVINGS = 9               # expm1 evaluated at y / 2**9, then doubled back


@_jit
def _expm1_f64(y):
    # expm1(y) for 0 <= y <= 110: Taylor to degree 8 at z = y / 512 (|z| <= 0.22,
    # truncation 1e-11 relative), then expm1(2z) = expm1(z) (expm1(z) + 2)
    # nine times; each step at most doubles the relative error (to 7e-9).
    z = y * (1.0 / 2 ** _HALVINGS)
    e = z * (1.0 + z * (1.0 / 2 + z * (1.0 / 6 + z * (1.0 / 24 + z * (
        1.0 / 120 + z * (1.0 / 720 + z * (1.0 / 5040 + z * (1.0 / 40320))))))))
    for _ in range(_HALVINGS):
        e = e * (e + 2.0)
    return e


@_jit
def _tanh_float32(x):
    e = _expm1_f64(2.0 * min(abs(float(x)), _TANH_SATURATES))
    t = e / (e + 2.0)
    return np.float32(t if x >= 0 else -t)


@_jit
def _sigmoid_float32(a):
    # 1 / (1 + exp(-a)) from exp(|a|) alone, so nothing overflows for large |a|.
    big = 1.0 + _expm1_f64(min(abs(float(a)), _SIGMOID_SATURATES))
    return np.float32(big / (big + 1.0) if a >= 0 else 1.0 / (big + 1.0))


@_jit
def _sigmoid_float64(a):
    # Split by sign so exp never overflows for large |a|.
    e = math.exp(-abs(a))
    return 1.0 / (1.0 + e) if a >= 0 else e / (1.0 + e)


def _tanh(x):
    return math.tanh(x)


def _sigmoid(a):
    return 1.0 / (1.0 + math.exp(-a))


@overload(_tanh)
def _tanh_typed(x):
    if x == types.float32:
        return lambda x: _tanh_float32(x)
    return lambda x: math.tanh(x)


@overload(_sigmoid)
def _sigmoid_typed(a):
    if a == types.float32:
        return lambda a: _sigmoid_float32(a)
    return lambda a: _sigmoid_float64(a)


@_jit
def _dot_bt(a, b, out):
    """out = a @ b.T for C-ordered a (M, K), b (N, K); b.T is a free F-ordered view."""
    np.dot(a, b.T, out)


# ---------------------------------------------------------------- RNN (tanh)
#   a_t = x_t W_ih^T + h_{t-1} W_hh^T + b
#   h_t = tanh(a_t)
# saved = None: BPTT needs only y.


@_jit
def _rnn_forward(x, h0, w_ih, w_hh, b, y):
    # x (T, B, I), h0 (B, H), w_ih (H, I), w_hh (H, H), b (H,), y (T, B, H) filled.
    T, B, I = x.shape
    H = h0.shape[1]
    y2 = y.reshape(T * B, H)
    _dot_bt(x.reshape(T * B, I), w_ih, y2)       # every step's x_t W_ih^T at once
    recurrent = np.empty((B, H), dtype=y.dtype)
    for t in range(T):
        _dot_bt(h0 if t == 0 else y[t - 1], w_hh, recurrent)
        yt = y[t]
        for n in range(B):
            for j in range(H):
                yt[n, j] = _tanh(yt[n, j] + recurrent[n, j] + b[j])


@_jit
def _rnn_backward(x, h0, w_ih, w_hh, y, dy, has_dy, dhT, need_dx):
    # BPTT, for t = T..1:
    #   dh_t   = dy_t + dh_t(from t+1)                      (1)
    #   da_t   = dh_t * (1 - h_t^2)                         (2)
    #   dh_{t-1} (from t) = da_t W_hh                       (3)
    T, B, I = x.shape
    H = h0.shape[1]
    da = np.empty((T, B, H), dtype=y.dtype)
    dh = dhT.copy()
    for t in range(T - 1, -1, -1):
        dat, yt = da[t], y[t]
        for n in range(B):
            for j in range(H):
                g = dh[n, j]
                if has_dy:
                    g += dy[t, n, j]
                dat[n, j] = g * (_ONE - yt[n, j] * yt[n, j])
        np.dot(dat, w_hh, dh)
    dw_ih, dw_hh, db = _weight_grads(da, x, h0, y)
    dx = _input_grad(da, w_ih, need_dx)
    return dx, dh, dw_ih, dw_hh, db


@_jit
def _weight_grads(da, x, h0, y):
    """dW_ih = sum_t da_t^T x_t, dW_hh = sum_t da_t^T h_{t-1}, db = sum_t da_t."""
    T, B, GH = da.shape
    I = x.shape[2]
    H = y.shape[2]
    da2 = da.reshape(T * B, GH)
    dw_ih = np.dot(da2.T, x.reshape(T * B, I))
    # h_{t-1} is h0 for t = 1, else y_{t-1}: two GEMMs, no concatenated copy.
    dw_hh = np.dot(da[0].T, h0)
    if T > 1:
        dw_hh += np.dot(da2[B:].T, y.reshape(T * B, H)[:(T - 1) * B])
    db = np.zeros(GH, dtype=da.dtype)
    for r in range(T * B):
        for k in range(GH):
            db[k] += da2[r, k]
    return dw_ih, dw_hh, db


@_jit
def _input_grad(da, w_ih, need_dx):
    """dx_t = da_t W_ih for every t in one GEMM, or an empty array when not wanted."""
    T, B, GH = da.shape
    I = w_ih.shape[1]
    if not need_dx:
        return np.empty((0, 0, 0), dtype=da.dtype)
    return np.dot(da.reshape(T * B, GH), w_ih).reshape(T, B, I)


# ---------------------------------------------------------------------- LSTM
#   a_t = x_t W_ih^T + h_{t-1} W_hh^T + b, split into gate order i, f, g, o
#   i = sigmoid(a_i), f = sigmoid(a_f), g = tanh(a_g), o = sigmoid(a_o)
#   c_t = f * c_{t-1} + i * g
#   h_t = o * tanh(c_t)
# saved = (c, tanh_c, gates): c_t and tanh(c_t) (T, B, H), activated gates (T, B, 4H).


@_jit
def _lstm_forward(x, h0, c0, w_ih, w_hh, b, y, c, tanh_c, gates, training):
    # x (T, B, I), h0 c0 (B, H), w_ih (4H, I), w_hh (4H, H), b (4H,);
    # fills y (T, B, H) and gates (T, B, 4H); c, tanh_c (T, B, H) when training,
    # else c (1, B, H) holds the running cell state and tanh_c is unused.
    T, B, I = x.shape
    H = h0.shape[1]
    _dot_bt(x.reshape(T * B, I), w_ih, gates.reshape(T * B, 4 * H))
    recurrent = np.empty((B, 4 * H), dtype=y.dtype)
    for t in range(T):
        _dot_bt(h0 if t == 0 else y[t - 1], w_hh, recurrent)
        a, yt = gates[t], y[t]
        c_prev = c0 if t == 0 else c[t - 1 if training else 0]
        ct = c[t if training else 0]
        for n in range(B):
            for j in range(H):
                i = _sigmoid(a[n, j] + recurrent[n, j] + b[j])
                f = _sigmoid(a[n, H + j] + recurrent[n, H + j] + b[H + j])
                g = _tanh(a[n, 2 * H + j] + recurrent[n, 2 * H + j] + b[2 * H + j])
                o = _sigmoid(a[n, 3 * H + j] + recurrent[n, 3 * H + j] + b[3 * H + j])
                cell = f * c_prev[n, j] + i * g
                tc = _tanh(cell)
                ct[n, j] = cell
                yt[n, j] = o * tc
                if training:
                    tanh_c[t, n, j] = tc
                    a[n, j] = i
                    a[n, H + j] = f
                    a[n, 2 * H + j] = g
                    a[n, 3 * H + j] = o


@_jit
def _lstm_backward(c, tanh_c, gates, x, h0, c0, w_ih, w_hh, y, dy, has_dy, dhT, dcT,
                   need_dx):
    # BPTT, for t = T..1, with dh, dc carried from step t+1:
    #   dh_t  = dy_t + dh                                   (1)
    #   do    = dh_t * tanh(c_t)                            (2)
    #   dc_t  = dc + dh_t * o * (1 - tanh(c_t)^2)           (3)
    #   di    = dc_t * g,  dg = dc_t * i                    (4)
    #   df    = dc_t * c_{t-1}                              (5)
    #   dc    = dc_t * f            (carried to t-1)        (6)
    #   da    = [di i(1-i), df f(1-f), dg (1-g^2), do o(1-o)]  (7)
    #   dh    = da W_hh             (carried to t-1)        (8)
    T, B, I = x.shape
    H = h0.shape[1]
    da = np.empty((T, B, 4 * H), dtype=y.dtype)
    dh = dhT.copy()
    dc = dcT.copy()
    for t in range(T - 1, -1, -1):
        s, dat, ct, tct = gates[t], da[t], c[t], tanh_c[t]
        c_prev = c0 if t == 0 else c[t - 1]
        for n in range(B):
            for j in range(H):
                i, f = s[n, j], s[n, H + j]
                g, o = s[n, 2 * H + j], s[n, 3 * H + j]
                tc = tct[n, j]
                dht = dh[n, j]
                if has_dy:
                    dht += dy[t, n, j]
                dct = dc[n, j] + dht * o * (_ONE - tc * tc)
                dat[n, j] = dct * g * i * (_ONE - i)
                dat[n, H + j] = dct * c_prev[n, j] * f * (_ONE - f)
                dat[n, 2 * H + j] = dct * i * (_ONE - g * g)
                dat[n, 3 * H + j] = dht * tc * o * (_ONE - o)
                dc[n, j] = dct * f
        np.dot(dat, w_hh, dh)
    dw_ih, dw_hh, db = _weight_grads(da, x, h0, y)
    dx = _input_grad(da, w_ih, need_dx)
    return dx, dh, dc, dw_ih, dw_hh, db


# ------------------------------------------------------ the kernel contract


def _c_array(a, dtype):
    return np.ascontiguousarray(a, dtype=dtype)


def _dy_flag(dy, y):
    """(dy as an array, has_dy): the kernels take an unused empty array for None."""
    if dy is None:
        return np.empty((0, 0, 0), dtype=y.dtype), False
    return _c_array(dy, y.dtype), True


def rnn_forward(x, h0, w_ih, w_hh, b, training=True):
    x = _c_array(x, x.dtype)
    dt = x.dtype
    T, B, _ = x.shape
    H = h0.shape[1]
    y = np.empty((T, B, H), dtype=dt)
    _rnn_forward(x, _c_array(h0, dt), _c_array(w_ih, dt), _c_array(w_hh, dt),
                 _c_array(b, dt), y)
    return y, None


def rnn_backward(saved, x, h0, w_ih, w_hh, y, dy, dhT, need_dx=True):
    dt = y.dtype
    dy, has_dy = _dy_flag(dy, y)
    dx, dh0, dw_ih, dw_hh, db = _rnn_backward(
        _c_array(x, dt), _c_array(h0, dt), _c_array(w_ih, dt), _c_array(w_hh, dt),
        _c_array(y, dt), dy, has_dy, _c_array(dhT, dt), bool(need_dx))
    return (dx if need_dx else None), dh0, dw_ih, dw_hh, db


def lstm_forward(x, h0, c0, w_ih, w_hh, b, training=True):
    x = _c_array(x, x.dtype)
    dt = x.dtype
    T, B, _ = x.shape
    H = h0.shape[1]
    training = bool(training)
    y = np.empty((T, B, H), dtype=dt)
    gates = np.empty((T, B, 4 * H), dtype=dt)
    # Inference keeps only the running cell state.
    c = np.empty((T if training else 1, B, H), dtype=dt)
    tanh_c = np.empty((T, B, H) if training else (0, 0, 0), dtype=dt)
    _lstm_forward(x, _c_array(h0, dt), _c_array(c0, dt), _c_array(w_ih, dt),
                  _c_array(w_hh, dt), _c_array(b, dt), y, c, tanh_c, gates, training)
    cT = c[-1].copy()
    saved = (c, tanh_c, gates) if training else None
    return y, cT, saved


def lstm_backward(saved, x, h0, c0, w_ih, w_hh, y, dy, dhT, dcT, need_dx=True):
    if saved is None:
        raise ValueError("lstm_backward needs the state saved by a training forward")
    c, tanh_c, gates = saved
    dt = y.dtype
    dy, has_dy = _dy_flag(dy, y)
    dx, dh0, dc0, dw_ih, dw_hh, db = _lstm_backward(
        c, tanh_c, gates, _c_array(x, dt), _c_array(h0, dt), _c_array(c0, dt),
        _c_array(w_ih, dt), _c_array(w_hh, dt), _c_array(y, dt), dy, has_dy,
        _c_array(dhT, dt), _c_array(dcT, dt), bool(need_dx))
    return (dx if need_dx else None), dh0, dc0, dw_ih, dw_hh, db


def set_num_threads(n):
    """Threads for Numba's parallel regions, clamped to the pool Numba started with."""
    numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))
