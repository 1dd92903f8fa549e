"""The Numba backend: the reference kernels compiled, for installs without fastrnn._core.

Same kernel contract as `fastrnn/_reference.py` (its docstring has it), same
names and argument order. Sizes: T time steps, B batch, I input size, H hidden
size, G gates (1 RNN, 4 LSTM, 3 GRU); kernels are time-major, x (T, B, I), y (T, B, H).

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
- The threads are BLAS's (SciPy's OpenBLAS, which sizes its pool from
  OPENBLAS_NUM_THREADS or the CPU count). No `parallel=True`: OpenBLAS's
  workers keep spinning after each of the T small GEMMs, and a Numba pool
  beside them fights for the same cores (2 here), so the gate loops stay on
  the calling thread. nogil: Python threads can run kernels side by side.

The public functions check every shape (the compiled kernels do no bounds
checks, so a mismatch must stop there), convert arguments (one dtype, C
order, dy and need_dx as flags) and call the compiled kernels.
"""

import numba
import numpy as np
# SciPy's BLAS, which Numba's matrix products call, loaded now so that
# set_num_threads can limit its threads.
import scipy.linalg.cython_blas  # noqa: F401
from numba import njit

from . import _blas

name = "numba"

_jit = njit(cache=True, nogil=True, error_model="numpy")


# Gate activations. libm's tanh and exp are scalar calls that stop LLVM from
# vectorizing the fused gate loop (libm tanh alone costs ~5x NumPy's SIMD tanh
# here), so both come from the branch-free expm1 below: multiplies and adds
# only, vectorized with the rest of the loop. Computed in float64, they are
# correctly rounded for float32 and within ~1e-15 relative for float64.
# error_model="numpy" (in _jit) matters as much: Python's ZeroDivisionError
# check on every division also blocks vectorization.
_HALVINGS = 9               # expm1 evaluated at y / 2**9, then doubled back
_TANH_SATURATES = 20.0      # tanh(x) rounds to +-1 beyond this, even in float64
_SIGMOID_SATURATES = 110.0  # float32 sigmoid(-x) underflows to 0 beyond this
# _ONE is float32 so that float32 arithmetic stays float32 (a Python float
# literal would promote it to float64); in float64 kernels it is exact.
_ONE = np.float32(1.0)


@_jit
def _expm1(y):
    # expm1(y) for 0 <= y <= 110: Taylor to degree 12 at z = y / 512 (|z| <= 0.22,
    # truncation 4e-19 relative), then expm1(2z) = expm1(z) (expm1(z) + 2) nine
    # times, each at most doubling the relative error (to ~1e-16 * 512 at worst).
    z = y * (1.0 / 2 ** _HALVINGS)
    p = 1.0 / 479001600
    p = p * z + 1.0 / 39916800
    p = p * z + 1.0 / 3628800
    p = p * z + 1.0 / 362880
    p = p * z + 1.0 / 40320
    p = p * z + 1.0 / 5040
    p = p * z + 1.0 / 720
    p = p * z + 1.0 / 120
    p = p * z + 1.0 / 24
    p = p * z + 1.0 / 6
    p = p * z + 0.5
    p = p * z + 1.0
    e = p * z
    for _ in range(_HALVINGS):
        e = e * (e + 2.0)
    return e


@_jit
def _tanh(x):
    # From expm1(2|x|), which keeps full relative precision for tiny x.
    # Clamped by `>`, which is false for NaN, so NaN passes through as NaN.
    ax = abs(x)
    e = _expm1(2.0 * (_TANH_SATURATES if ax > _TANH_SATURATES else ax))
    t = e / (e + 2.0)
    return t if x >= 0 else -t


@_jit
def _sigmoid(a):
    # 1 / (1 + exp(-a)) from exp(|a|) alone, so nothing overflows for large |a|.
    aa = abs(a)
    big = 1.0 + _expm1(_SIGMOID_SATURATES if aa > _SIGMOID_SATURATES else aa)
    return (big if a >= 0 else 1.0) / (big + 1.0)


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
        for n in range(B):
            dhn, dan, yn = dh[n], da[t, n], y[t, n]
            if has_dy:                                              # (1)
                dyn = dy[t, n]
                for j in range(H):
                    dhn[j] += dyn[j]
            for j in range(H):                                      # (2)
                dan[j] = dhn[j] * (_ONE - yn[j] * yn[j])
        np.dot(da[t], w_hh, dh)                                     # (3)
    dw_ih, dw_hh, db = _weight_grads(da, x, h0, y)
    dx = _input_grad(da, w_ih, need_dx)
    return dx, dh, dw_ih, dw_hh, db


@_jit
def _weight_grads(da, x, h0, y):
    """dW_ih = sum_t da_t^T x_t, dW_hh = sum_t da_t^T h_{t-1}, db = sum_t da_t."""
    return _input_weight_grad(da, x), _recurrent_weight_grad(da, h0, y), _bias_grad(da)


@_jit
def _input_weight_grad(da, x):
    """dW_ih = sum_t da_t^T x_t."""
    T, B, GH = da.shape
    I = x.shape[2]
    # Computed as (x^T da)^T: OpenBLAS runs this orientation of the long-K GEMM
    # ~1.5x faster than da^T x here.
    return np.ascontiguousarray(np.dot(x.reshape(T * B, I).T, da.reshape(T * B, GH)).T)


@_jit
def _recurrent_weight_grad(da, h0, y):
    """dW_hh = sum_t da_t^T h_{t-1}."""
    T, B, GH = da.shape
    H = y.shape[2]
    # h_{t-1} is h0 for t = 1, else y_{t-1}: two GEMMs, no concatenated copy.
    dw_hh = np.dot(h0.T, da[0])
    if T > 1:
        dw_hh += np.dot(y.reshape(T * B, H)[:(T - 1) * B].T, da.reshape(T * B, GH)[B:])
    return np.ascontiguousarray(dw_hh.T)


@_jit
def _bias_grad(da):
    """db = sum_t da_t, summed over the batch too."""
    T, B, GH = da.shape
    da2 = da.reshape(T * B, GH)
    db = np.zeros(GH, dtype=da.dtype)
    for r in range(T * B):
        for k in range(GH):
            db[k] += da2[r, k]
    return db


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
def _lstm_forward(x, h0, c0, w_ih, w_hh, b, y, c, tanh_c, gates):
    # x (T, B, I), h0 c0 (B, H), w_ih (4H, I), w_hh (4H, H), b (4H,); fills
    # y (T, B, H), gates (T, B, 4H) with the activated gates, c_t into
    # c[t % len(c)] and tanh(c_t) into tanh_c[t % len(tanh_c)]: training passes
    # all T steps; inference passes two cell-state slots and one tanh slot.
    T, B, I = x.shape
    H = h0.shape[1]
    _dot_bt(x.reshape(T * B, I), w_ih, gates.reshape(T * B, 4 * H))
    recurrent = np.empty((B, 4 * H), dtype=y.dtype)
    # Gates as (.., 4, H): every index below is provably non-negative, so no
    # wraparound selects get in the vectorizer's way.
    a4 = gates.reshape(T, B, 4, H)
    r4 = recurrent.reshape(B, 4, H)
    b4 = b.reshape(4, H)
    n_c, n_tanh = c.shape[0], tanh_c.shape[0]
    for t in range(T):
        _dot_bt(h0 if t == 0 else y[t - 1], w_hh, recurrent)
        c_prev = c0 if t == 0 else c[(t - 1) % n_c]
        ct, tct, yt = c[t % n_c], tanh_c[t % n_tanh], y[t]
        # Short loops over few arrays each: with more pointers than this in one
        # loop, LLVM's runtime alias checks give up and it stays scalar (5x slower).
        for n in range(B):
            ai, af, ag, ao = a4[t, n, 0], a4[t, n, 1], a4[t, n, 2], a4[t, n, 3]
            ri, rf, rg, ro = r4[n, 0], r4[n, 1], r4[n, 2], r4[n, 3]
            for j in range(H):
                ai[j] = _sigmoid(ai[j] + ri[j] + b4[0, j])
            for j in range(H):
                af[j] = _sigmoid(af[j] + rf[j] + b4[1, j])
            for j in range(H):
                ag[j] = _tanh(ag[j] + rg[j] + b4[2, j])
            for j in range(H):
                ao[j] = _sigmoid(ao[j] + ro[j] + b4[3, j])
            cp, cn, tn, yn = c_prev[n], ct[n], tct[n], yt[n]
            for j in range(H):
                cell = af[j] * cp[j] + ai[j] * ag[j]
                cn[j] = cell
                tn[j] = _tanh(cell)
            for j in range(H):
                yn[j] = ao[j] * tn[j]


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
    # Gates as (.., 4, H) and short loops over few arrays, as in _lstm_forward.
    s4 = gates.reshape(T, B, 4, H)
    d4 = da.reshape(T, B, 4, H)
    for t in range(T - 1, -1, -1):
        c_prev = c0 if t == 0 else c[t - 1]
        for n in range(B):
            i, f, g, o = s4[t, n, 0], s4[t, n, 1], s4[t, n, 2], s4[t, n, 3]
            di, df, dg, do = d4[t, n, 0], d4[t, n, 1], d4[t, n, 2], d4[t, n, 3]
            dhn, dcn, tc, cp = dh[n], dc[n], tanh_c[t, n], c_prev[n]
            if has_dy:                                              # (1)
                dyn = dy[t, n]
                for j in range(H):
                    dhn[j] += dyn[j]
            for j in range(H):                                      # (2), (7)
                do[j] = dhn[j] * tc[j] * o[j] * (_ONE - o[j])
            for j in range(H):                                      # (3)
                dcn[j] += dhn[j] * o[j] * (_ONE - tc[j] * tc[j])
            for j in range(H):                                      # (4), (7)
                di[j] = dcn[j] * g[j] * i[j] * (_ONE - i[j])
            for j in range(H):
                dg[j] = dcn[j] * i[j] * (_ONE - g[j] * g[j])
            for j in range(H):                                      # (5), (7)
                df[j] = dcn[j] * cp[j] * f[j] * (_ONE - f[j])
            for j in range(H):                                      # (6)
                dcn[j] *= f[j]
        np.dot(da[t], w_hh, dh)                                     # (8)
    dw_ih, dw_hh, db = _weight_grads(da, x, h0, y)
    dx = _input_grad(da, w_ih, need_dx)
    return dx, dh, dc, dw_ih, dw_hh, db


# ----------------------------------------------------------------------- GRU
#   gx_t = x_t W_ih^T + b_ih,  gh_t = h_{t-1} W_hh^T + b_hh, split into gate order r, z, n
#   r = sigmoid(gx_r + gh_r),  z = sigmoid(gx_z + gh_z)
#   hn = gh_n                   (= h_{t-1} W_hn^T + b_hn)
#   n = tanh(gx_n + r * hn)
#   h_t = (1 - z) * n + z * h_{t-1},  computed as n + z * (h_{t-1} - n)
# saved = (gates, hn): the activated gates r, z, n (T, B, 3H) and hn (T, B, H).


@_jit
def _gru_forward(x, h0, w_ih, w_hh, b_ih, b_hh, y, gates, hn):
    # x (T, B, I), h0 (B, H), w_ih (3H, I), w_hh (3H, H), b_ih b_hh (3H,); fills
    # y (T, B, H), gates (T, B, 3H) with the activated gates and hn_t into
    # hn[t % len(hn)]: training passes all T steps, inference one slot.
    T, B, I = x.shape
    H = h0.shape[1]
    _dot_bt(x.reshape(T * B, I), w_ih, gates.reshape(T * B, 3 * H))
    recurrent = np.empty((B, 3 * H), dtype=y.dtype)
    # r and z add both biases, summed once here; b_hn stays apart, inside r * hn.
    b3 = b_ih.reshape(3, H).copy()
    b3[:2] += b_hh.reshape(3, H)[:2]
    b_hn = b_hh[2 * H:]
    # Gates as (.., 3, H) and short loops over few arrays, as in _lstm_forward.
    a3 = gates.reshape(T, B, 3, H)
    r3 = recurrent.reshape(B, 3, H)
    n_hn = hn.shape[0]
    for t in range(T):
        h_prev = h0 if t == 0 else y[t - 1]
        _dot_bt(h_prev, w_hh, recurrent)
        hnt, yt = hn[t % n_hn], y[t]
        for seq in range(B):
            ar, az, an = a3[t, seq, 0], a3[t, seq, 1], a3[t, seq, 2]
            rr, rz, rn = r3[seq, 0], r3[seq, 1], r3[seq, 2]
            hns, hp, ys = hnt[seq], h_prev[seq], yt[seq]
            for j in range(H):
                ar[j] = _sigmoid(ar[j] + rr[j] + b3[0, j])
            for j in range(H):
                az[j] = _sigmoid(az[j] + rz[j] + b3[1, j])
            for j in range(H):
                hns[j] = rn[j] + b_hn[j]
            for j in range(H):
                an[j] = _tanh(an[j] + b3[2, j] + ar[j] * hns[j])
            for j in range(H):
                ys[j] = an[j] + az[j] * (hp[j] - an[j])


@_jit
def _gru_backward(gates, hn, x, h0, w_ih, w_hh, y, dy, has_dy, dhT, need_dx):
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
    T, B, I = x.shape
    H = h0.shape[1]
    # The input and the recurrent sums differ in the n gate only; each is kept
    # whole so that every weight gradient is one GEMM over contiguous rows.
    da_in = np.empty((T, B, 3 * H), dtype=y.dtype)
    da_rec = np.empty((T, B, 3 * H), dtype=y.dtype)
    dh = dhT.copy()
    dh_recurrent = np.empty((B, H), dtype=y.dtype)
    s3 = gates.reshape(T, B, 3, H)
    di3 = da_in.reshape(T, B, 3, H)
    dr3 = da_rec.reshape(T, B, 3, H)
    for t in range(T - 1, -1, -1):
        h_prev = h0 if t == 0 else y[t - 1]
        for seq in range(B):
            r, z, n = s3[t, seq, 0], s3[t, seq, 1], s3[t, seq, 2]
            dar, daz, dan = di3[t, seq, 0], di3[t, seq, 1], di3[t, seq, 2]
            dhn = dr3[t, seq, 2]
            dhs, hp, hns = dh[seq], h_prev[seq], hn[t, seq]
            if has_dy:                                              # (1)
                dys = dy[t, seq]
                for j in range(H):
                    dhs[j] += dys[j]
            for j in range(H):                                      # (2), (4)
                dan[j] = dhs[j] * (_ONE - z[j]) * (_ONE - n[j] * n[j])
            for j in range(H):                                      # (3), (7)
                daz[j] = dhs[j] * (hp[j] - n[j]) * z[j] * (_ONE - z[j])
            for j in range(H):                                      # (6), (7)
                dar[j] = dan[j] * hns[j] * r[j] * (_ONE - r[j])
            for j in range(H):                                      # (5)
                dhn[j] = dan[j] * r[j]
            da_rec[t, seq, :2 * H] = da_in[t, seq, :2 * H]
            for j in range(H):                                      # (8)
                dhs[j] *= z[j]
        np.dot(da_rec[t], w_hh, dh_recurrent)                       # (9)
        dh += dh_recurrent
    dw_ih = _input_weight_grad(da_in, x)                            # (10)
    dw_hh = _recurrent_weight_grad(da_rec, h0, y)                   # (11)
    db_ih, db_hh = _bias_grad(da_in), _bias_grad(da_rec)            # (10), (11)
    dx = _input_grad(da_in, w_ih, need_dx)                          # (10)
    return dx, dh, dw_ih, dw_hh, db_ih, db_hh


# ------------------------------------------------------ the kernel contract


def _c_array(a, dtype):
    return np.ascontiguousarray(a, dtype=dtype)


def _kernel_dtype(x):
    """The dtype every array is converted to: x's, if the kernels are compiled for it."""
    dt = np.asarray(x).dtype
    if dt not in (np.float32, np.float64):
        raise TypeError(f"the numba kernels take float32 or float64 arrays, got {dt}")
    return dt


def _check_shapes(fn, G, x, h0, w_ih, w_hh, **more):
    """Raise ValueError unless every array has the shape x (T, B, I) and h0 (B, H)
    imply; `more` holds the others of the call (None: not given)."""
    x, h0 = np.asarray(x), np.asarray(h0)
    if x.ndim != 3 or 0 in x.shape:
        raise ValueError(f"{fn}: x must be 3-D (T, B, I) with T, B >= 1, got shape {x.shape}")
    T, B, I = x.shape
    if h0.ndim != 2 or h0.shape[0] != B or h0.shape[1] == 0:
        raise ValueError(f"{fn}: h0 must have shape ({B}, H) with H >= 1, got {h0.shape}")
    H = h0.shape[1]
    expected = {"w_ih": (G * H, I), "w_hh": (G * H, H), "b": (G * H,), "b_ih": (G * H,),
                "b_hh": (G * H,), "c0": (B, H),
                "y": (T, B, H), "dy": (T, B, H), "dhT": (B, H), "dcT": (B, H)}
    for name, array in {"w_ih": w_ih, "w_hh": w_hh, **more}.items():
        if array is not None and np.shape(array) != expected[name]:
            raise ValueError(f"{fn}: {name} must have shape {expected[name]}, "
                             f"got {np.shape(array)}")


def _dy_flag(dy, y):
    """(dy as an array, has_dy): the kernels take an unused empty array for None."""
    if dy is None:
        return np.empty((0, 0, 0), dtype=y.dtype), False
    return _c_array(dy, y.dtype), True


def rnn_forward(x, h0, w_ih, w_hh, b, training=True):
    _check_shapes("rnn_forward", 1, x, h0, w_ih, w_hh, b=b)
    dt = _kernel_dtype(x)
    x = _c_array(x, dt)
    T, B, _ = x.shape
    H = h0.shape[1]
    y = np.empty((T, B, H), dtype=dt)
    _rnn_forward(x, _c_array(h0, dt), _c_array(w_ih, dt), _c_array(w_hh, dt),
                 _c_array(b, dt), y)
    return y, None


def rnn_backward(saved, x, h0, w_ih, w_hh, y, dy, dhT, need_dx=True):
    _check_shapes("rnn_backward", 1, x, h0, w_ih, w_hh, y=y, dy=dy, dhT=dhT)
    dt = _kernel_dtype(y)
    dy, has_dy = _dy_flag(dy, y)
    dx, dh0, dw_ih, dw_hh, db = _rnn_backward(
        _c_array(x, dt), _c_array(h0, dt), _c_array(w_ih, dt), _c_array(w_hh, dt),
        _c_array(y, dt), dy, has_dy, _c_array(dhT, dt), bool(need_dx))
    return (dx if need_dx else None), dh0, dw_ih, dw_hh, db


def lstm_forward(x, h0, c0, w_ih, w_hh, b, training=True):
    _check_shapes("lstm_forward", 4, x, h0, w_ih, w_hh, b=b, c0=c0)
    dt = _kernel_dtype(x)
    x = _c_array(x, dt)
    T, B, _ = x.shape
    H = h0.shape[1]
    y = np.empty((T, B, H), dtype=dt)
    gates = np.empty((T, B, 4 * H), dtype=dt)
    # Inference keeps only c_{t-1}, c_t (two slots, used in turn) and one tanh(c_t).
    c = np.empty((T if training else 2, B, H), dtype=dt)
    tanh_c = np.empty((T if training else 1, B, H), dtype=dt)
    _lstm_forward(x, _c_array(h0, dt), _c_array(c0, dt), _c_array(w_ih, dt),
                  _c_array(w_hh, dt), _c_array(b, dt), y, c, tanh_c, gates)
    cT = c[(T - 1) % c.shape[0]].copy()
    saved = (c, tanh_c, gates) if training else None
    return y, cT, saved


def lstm_backward(saved, x, h0, c0, w_ih, w_hh, y, dy, dhT, dcT, need_dx=True):
    if saved is None:
        raise ValueError("lstm_backward needs the state saved by a training forward")
    c, tanh_c, gates = saved
    _check_shapes("lstm_backward", 4, x, h0, w_ih, w_hh, c0=c0, y=y, dy=dy, dhT=dhT, dcT=dcT)
    if gates.shape[:2] != np.shape(x)[:2] or gates.shape[2] != 4 * np.shape(h0)[1]:
        raise ValueError("lstm_backward: saved comes from a forward of other sizes")
    dt = _kernel_dtype(y)
    dy, has_dy = _dy_flag(dy, y)
    dx, dh0, dc0, dw_ih, dw_hh, db = _lstm_backward(
        c, tanh_c, gates, _c_array(x, dt), _c_array(h0, dt), _c_array(c0, dt),
        _c_array(w_ih, dt), _c_array(w_hh, dt), _c_array(y, dt), dy, has_dy,
        _c_array(dhT, dt), _c_array(dcT, dt), bool(need_dx))
    return (dx if need_dx else None), dh0, dc0, dw_ih, dw_hh, db


def gru_forward(x, h0, w_ih, w_hh, b_ih, b_hh, training=True):
    _check_shapes("gru_forward", 3, x, h0, w_ih, w_hh, b_ih=b_ih, b_hh=b_hh)
    dt = _kernel_dtype(x)
    x = _c_array(x, dt)
    T, B, _ = x.shape
    H = h0.shape[1]
    y = np.empty((T, B, H), dtype=dt)
    gates = np.empty((T, B, 3 * H), dtype=dt)
    hn = np.empty((T if training else 1, B, H), dtype=dt)   # inference: one slot, reused
    _gru_forward(x, _c_array(h0, dt), _c_array(w_ih, dt), _c_array(w_hh, dt),
                 _c_array(b_ih, dt), _c_array(b_hh, dt), y, gates, hn)
    saved = (gates, hn) if training else None
    return y, saved


def gru_backward(saved, x, h0, w_ih, w_hh, y, dy, dhT, need_dx=True):
    if saved is None:
        raise ValueError("gru_backward needs the state saved by a training forward")
    gates, hn = saved
    _check_shapes("gru_backward", 3, x, h0, w_ih, w_hh, y=y, dy=dy, dhT=dhT)
    T, B, H = np.shape(x)[0], np.shape(x)[1], np.shape(h0)[1]
    if gates.shape != (T, B, 3 * H) or hn.shape != (T, B, H):
        raise ValueError("gru_backward: saved comes from a forward of other sizes")
    dt = _kernel_dtype(y)
    dy, has_dy = _dy_flag(dy, y)
    dx, dh0, dw_ih, dw_hh, db_ih, db_hh = _gru_backward(
        gates, hn, _c_array(x, dt), _c_array(h0, dt), _c_array(w_ih, dt),
        _c_array(w_hh, dt), _c_array(y, dt), dy, has_dy, _c_array(dhT, dt), bool(need_dx))
    return (dx if need_dx else None), dh0, dw_ih, dw_hh, db_ih, db_hh


def set_num_threads(n):
    """Numba's thread count, clamped to the pool Numba started with, and the BLAS's.

    The kernels have no parallel regions of their own: their threads are the
    BLAS library's, which Numba's matrix products call.
    """
    numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))
    _blas.limit_threads(n)
