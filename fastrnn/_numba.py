"""The Numba backend: the reference kernels compiled, for installs without fastrnn._core.

Same kernel contract as `fastrnn/_reference.py` (its docstring has it), same
names and argument order. Sizes: T time steps, B batch, I input size, H hidden
size, G gates (1 RNN, 4 LSTM, 3 GRU), N rows; kernels are time-major, x (T, B, I),
y (T, B, H), or packed (N, I) and (N, H) with batch_sizes. The compiled kernels
see rows only: x (N, I) and the step offsets o_0..o_T (step t is rows
[o_t, o_{t+1}) of every per-step array, its sequences 0..n_t-1); an unpacked
batch is the one whose steps all run B sequences, o_t = t * B.

Where the time goes, and what is done about it:
- Matrix products are BLAS gemm calls (`gemm`, fastrnn/_numba_blas.py), in
  the OpenBLAS NumPy multiplies with when it is found, else SciPy's: the
  input projection of all N rows is one GEMM before the time loop; the
  weight and input gradients are one GEMM each after the BPTT loop, so only
  the recurrent product h_{t-1} W_hh^T (or da_t W_hh) is left inside it,
  on the n_t rows of the sequences still running: the cost follows the tokens.
- The elementwise gate math of a step is one fused loop writing straight into
  the saved workspace, with no temporaries, its tanh and sigmoid vectorized
  with it (float32 ones in float32, below). The forward pass keeps tanh(c_t)
  beside c_t, so BPTT needs no transcendental function at all.
- Each `_*` kernel compiles lazily, once per dtype, on its first call and is
  cached on disk (cache=True): importing this module compiles nothing.
- The threads are BLAS's (OpenBLAS's, which sizes its pool from
  OPENBLAS_NUM_THREADS or the CPU count). No `parallel=True`: OpenBLAS's
  workers keep spinning after each of the T small GEMMs, and a Numba pool
  beside them fights for the same cores (2 here), so the gate loops stay on
  the calling thread. nogil: Python threads can run kernels side by side.

The public functions check every shape and batch_sizes with the reference's
checker (the compiled kernels do no bounds checks, so a mismatch must stop
there), convert arguments (one dtype, C-ordered rows in the order the
recurrence runs, dy and need_dx as flags, b_ih + b_hh summed once where the
cell sums them) and call the compiled kernels. A training forward returns a
Workspace: the saved arrays, x, and the call's cell, batch_sizes and
direction, against which its backward checks the call it is given. reverse=
and out= cost a copy here (of x, and of y into out): only the compiled
backend reads and writes through strides.
"""

import math

import numpy as np
# SciPy's BLAS, which the matrix products call when NumPy's is not found,
# loaded now so that set_num_threads can limit its threads.
import scipy.linalg.cython_blas  # noqa: F401
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

from . import _blas, _reference
from ._numba_blas import gemm
from ._reference import (checked_offsets, checked_precision, checked_workspace, in_run_order,
                         output_y)

name = "numba"

# fastmath "contract" alone: a * b + c may become one fused multiply-add (one
# rounding instead of two); nothing is reordered. Without it every step of the
# activations' polynomials takes two instructions.
_JIT_OPTIONS = {"nogil": True, "error_model": "numpy", "fastmath": {"contract"}}
_jit = njit(cache=True, **_JIT_OPTIONS)


# _ONE is float32 so that float32 arithmetic stays float32 (a Python float
# literal would promote it to float64); in float64 kernels it is exact.
_ONE = np.float32(1.0)
_ZERO = np.float32(0.0)
_TWO = np.float32(2.0)


# Gate activations. libm's tanh and exp are scalar calls that stop LLVM from
# vectorizing the fused gate loop (libm tanh alone costs ~5x NumPy's SIMD tanh
# here), so ours are multiplies, adds and one division, vectorized with the
# rest of the loop. error_model="numpy" (in _jit) matters as much: Python's
# ZeroDivisionError check on every division also blocks vectorization.
# _tanh and _sigmoid compile to the version for their argument's type: float32
# computes in float32 (within 3 ulp; twice the SIMD lanes of float64, which
# made the old float64-only version 3-4x slower than NumPy's float32 tanh),
# float64 in float64 (within 5e-14 relative). NaN passes through as NaN.


def _tanh(x):
    """tanh(x): a stub that only compiled code can call (it gets _tanh32 or _tanh64)."""
    raise NotImplementedError("_tanh runs inside the Numba kernels only")


def _sigmoid(a):
    """1 / (1 + exp(-a)): a stub that only compiled code can call (_sigmoid32 or _sigmoid64)."""
    raise NotImplementedError("_sigmoid runs inside the Numba kernels only")


@overload(_tanh, jit_options=_JIT_OPTIONS)
def _tanh_of_type(x):
    return (_tanh32 if x == types.float32 else _tanh64).py_func


@overload(_sigmoid, jit_options=_JIT_OPTIONS)
def _sigmoid_of_type(a):
    return (_sigmoid32 if a == types.float32 else _sigmoid64).py_func


# float32: exp(x) = 2**n exp(r), n = round(x / ln 2), |r| <= ln(2) / 2, exp(r)
# from its Taylor polynomial (degree 7: truncation below 0.1 ulp), 2**n made
# by moving n into a float's exponent bits. Constants are float32, as _ONE is.
_F32 = np.float32
_EXP_MIN32 = _F32(-87.6)             # x / ln 2 > -126.4: n >= -126, 2**n a normal float
_LOG2E32 = _F32(1.4426950408889634)
# Adding 1.5 * 2**23 rounds x / ln 2 to an integer n in the low mantissa bits;
# the 127 more there is the exponent bias, so those bits shifted up are 2**n.
_ROUNDS32 = _F32(1.5 * 2 ** 23 + 127)
_LN2_HI32 = _F32(0.693359375)        # ln 2 in 9 bits, so n * _LN2_HI32 is exact,
_LN2_LO32 = _F32(-2.12194440e-4)     # and the rest of it
_EXP_TAYLOR32 = tuple(_F32(1 / math.factorial(k)) for k in range(8))
# tanh(x) near 0, where (1 - e) / (1 + e) would lose bits: its odd Taylor series
# x + x^3 (-1/3 + x^2 (2/15 + ...)) to x^11, truncated below 0.01 ulp for |x| < 0.3.
_TANH_SERIES_BELOW32 = _F32(0.3)
_TANH_TAYLOR32 = (_F32(-1 / 3), _F32(2 / 15), _F32(-17 / 315), _F32(62 / 2835),
                  _F32(-1382 / 155925))


@intrinsic
def _exponent_bits_to_power_of_two(typingctx, rounded):
    """2**n from float32 `rounded` = x / ln 2 + _ROUNDS32, whose low mantissa
    bits hold n + 127 (1 <= n + 127 <= 254): those bits moved into the exponent field."""
    if rounded != types.float32:
        return None

    def codegen(context, builder, signature, args):
        bits = builder.bitcast(args[0], ir.IntType(32))
        exponent = builder.shl(bits, ir.Constant(ir.IntType(32), 23))
        return builder.bitcast(exponent, ir.FloatType())
    return types.float32(types.float32), codegen


@_jit
def _exp_nonpositive32(x):
    # exp(x) for x <= 0, within 1 ulp down to the least normal float32 (x = -87.34),
    # subnormal down to _EXP_MIN32, 0 below.
    rounded = x * _LOG2E32 + _ROUNDS32
    n = rounded - _ROUNDS32
    r = (x - n * _LN2_HI32) - n * _LN2_LO32
    p = _EXP_TAYLOR32[7]
    for k in range(6, -1, -1):
        p = p * r + _EXP_TAYLOR32[k]
    # `<` is false for NaN, which so reaches p and comes out NaN.
    return _ZERO if x < _EXP_MIN32 else p * _exponent_bits_to_power_of_two(rounded)


@_jit
def _tanh32(x):
    # (1 - e) / (1 + e) with e = exp(-2|x|) <= 1 (nothing overflows), the series near 0.
    ax = abs(x)
    e = _exp_nonpositive32(-_TWO * ax)
    far = (_ONE - e) / (_ONE + e)
    x2 = x * x
    p = _TANH_TAYLOR32[4]
    for k in range(3, -1, -1):
        p = p * x2 + _TANH_TAYLOR32[k]
    near = ax + ax * x2 * p
    t = near if ax < _TANH_SERIES_BELOW32 else far
    return t if x >= 0 else -t


@_jit
def _sigmoid32(a):
    # From e = exp(-|a|) <= 1: 1 / (1 + e) for a >= 0, e / (1 + e) below.
    e = _exp_nonpositive32(-abs(a))
    return (_ONE if a >= 0 else e) / (_ONE + e)


# float64: both from expm1 (below), which is computed at y / 2**9 and doubled back.
_HALVINGS = 9               # expm1 evaluated at y / 2**9, then doubled back
_TANH_SATURATES = 20.0      # tanh(x) rounds to +-1 beyond this, even in float64
_SIGMOID_SATURATES = 110.0  # sigmoid(-x) < 2e-48 beyond this: clamped, so exp cannot overflow


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
def _tanh64(x):
    # From expm1(2|x|), which keeps full relative precision for tiny x.
    # Clamped by `>`, which is false for NaN, so NaN passes through as NaN.
    ax = abs(x)
    e = _expm1(2.0 * (_TANH_SATURATES if ax > _TANH_SATURATES else ax))
    t = e / (e + 2.0)
    return t if x >= 0 else -t


@_jit
def _sigmoid64(a):
    # 1 / (1 + exp(-a)) from exp(|a|) alone, so nothing overflows for large |a|.
    aa = abs(a)
    big = 1.0 + _expm1(_SIGMOID_SATURATES if aa > _SIGMOID_SATURATES else aa)
    return (big if a >= 0 else 1.0) / (big + 1.0)


@_jit
def _bf16_bits(b):
    """The float32 bits b rounded to bfloat16 (_reference.round_to_bf16), low half zero."""
    if (b & 0x7FFFFFFF) > 0x7F800000:      # NaN, kept quiet
        return (b | 0x00400000) & 0xFFFF0000
    if (b & 0x7F800000) == 0:               # subnormal: a zero of its sign
        return b & 0x80000000
    return (b + 0x7FFF + ((b >> 16) & 1)) & 0xFFFF0000


@_jit
def _operand(a, bf16):
    """A matrix product's operand: a itself, or with bf16 a copy rounded to bfloat16."""
    if not bf16:
        return a
    out = np.empty(a.shape, dtype=a.dtype)
    src = np.ascontiguousarray(a).reshape(-1).view(np.uint32)
    dst = out.reshape(-1).view(np.uint32)
    for i in range(src.size):
        dst[i] = _bf16_bits(src[i])
    return out


@_jit
def _dot_bt(a, b, out):
    """out = a @ b.T for a (M, K), b (N, K)."""
    gemm(a, False, b, True, out, 0)


@_jit
def _relu(a):
    # `<` is false for NaN, so NaN passes through as NaN, as in torch's relu.
    return _ZERO if a < 0 else a


@_jit
def _num_steps(offsets):
    """T, the number of time steps of the step offsets o_0..o_T."""
    return len(offsets) - 1


@_jit
def _step_batch(offsets, t):
    """n_t, the sequences running at step t; 0 past the last step."""
    return offsets[t + 1] - offsets[t] if t + 1 < len(offsets) else 0


@_jit
def _previous(s0, s, starts, t, n_t):
    """s_{t-1} (n_t, H) of the n_t sequences running at step t: s0's first rows
    at t = 0, else the first n_t rows of step t-1 in s, which start at starts[t-1]."""
    if t == 0:
        return s0[:n_t]
    return s[starts[t - 1]:starts[t - 1] + n_t]


# -------------------------------------------------------- RNN (tanh or relu)
#   a_t = x_t W_ih^T + h_{t-1} W_hh^T + b
#   h_t = tanh(a_t)  (rnn_*),  or  h_t = relu(a_t) = max(a_t, 0)  (rnn_relu_*)
# saved: no arrays of its own (BPTT reads h_t from y), x and the call's batch_sizes.


@_jit
def _rnn_forward(x, h0, w_ih, w_hh, b, offsets, relu, y, bf16):
    # x (N, I), h0 (B, H), w_ih (H, I), w_hh (H, H), b (H,), offsets (T + 1,);
    # y (N, H) filled. bf16: every product on operands rounded to bfloat16.
    B, H = h0.shape
    _dot_bt(_operand(x, bf16), _operand(w_ih, bf16), y)   # every step's x_t W_ih^T at once
    w_hh = _operand(w_hh, bf16)
    recurrent = np.empty((B, H), dtype=y.dtype)
    for t in range(_num_steps(offsets)):
        row0, n_t = offsets[t], _step_batch(offsets, t)
        _dot_bt(_operand(_previous(h0, y, offsets, t, n_t), bf16), w_hh, recurrent[:n_t])
        for k in range(n_t):
            yk, rk = y[row0 + k], recurrent[k]
            if relu:
                for j in range(H):
                    yk[j] = _relu(yk[j] + rk[j] + b[j])
            else:
                for j in range(H):
                    yk[j] = _tanh(yk[j] + rk[j] + b[j])


@_jit
def _rnn_backward(x, h0, w_ih, w_hh, y, dy, has_dy, dhT, need_dx, offsets, relu, bf16):
    # BPTT, for t = T..1, over the sequences still running at t:
    #   dh_t   = dy_t + dh_t(from t+1)                      (1)
    #   da_t   = dh_t * (1 - h_t^2)      (tanh)             (2)
    #   da_t   = dh_t * [h_t > 0]        (relu)             (2)
    #   dh_{t-1} (from t) = da_t W_hh                       (3)
    H = h0.shape[1]
    da = np.empty((x.shape[0], H), dtype=y.dtype)
    w_hh = _operand(w_hh, bf16)
    dh = dhT.copy()        # row k: dhT[k] until BPTT reaches sequence k's last step
    for t in range(_num_steps(offsets) - 1, -1, -1):
        row0, n_t = offsets[t], _step_batch(offsets, t)
        for k in range(n_t):
            dhk, dak, yk = dh[k], da[row0 + k], y[row0 + k]
            if has_dy:                                              # (1)
                dyk = dy[row0 + k]
                for j in range(H):
                    dhk[j] += dyk[j]
            if relu:                                                # (2)
                for j in range(H):
                    dak[j] = dhk[j] if yk[j] > 0 else _ZERO
            else:
                for j in range(H):
                    dak[j] = dhk[j] * (_ONE - yk[j] * yk[j])
        gemm(_operand(da[row0:row0 + n_t], bf16), False, w_hh, False, dh[:n_t], 0)  # (3)
    dw_ih, dw_hh, db = _weight_grads(da, x, h0, y, offsets, bf16)
    dx = _input_grad(da, w_ih, need_dx, bf16)
    return dx, dh, dw_ih, dw_hh, db


@_jit
def _weight_grads(da, x, h0, y, offsets, bf16):
    """dW_ih = sum_t da_t^T x_t, dW_hh = sum_t da_t^T h_{t-1}, db = sum_t da_t
    (db unrounded: a sum, not a product)."""
    da_operand = _operand(da, bf16)
    return (_input_weight_grad(da_operand, _operand(x, bf16)),
            _recurrent_weight_grad(da_operand, _operand(h0, bf16), _operand(y, bf16), offsets),
            _bias_grad(da))


@_jit
def _input_weight_grad(da, x):
    """dW_ih = sum_t da_t^T x_t, over the N rows."""
    # da^T x straight into dW_ih's layout: 5-20% faster than (x^T da)^T here
    # (OpenBLAS 0.3.30 and 0.3.31), and no transposed copy follows.
    dw_ih = np.empty((da.shape[1], x.shape[1]), dtype=da.dtype)
    gemm(da, True, x, False, dw_ih, 0)
    return dw_ih


@_jit
def _recurrent_weight_grad(da, h0, y, offsets):
    """dW_hh = sum_t da_t^T h_{t-1}, over the N rows."""
    B = h0.shape[0]
    # h_{t-1} is h0 for t = 1, else y's rows of step t-1: two GEMMs, one sum.
    dw_hh = np.empty((da.shape[1], h0.shape[1]), dtype=da.dtype)
    gemm(da[:B], True, h0, False, dw_hh, 0)
    if _num_steps(offsets) > 1:
        gemm(da[B:], True, _rows_before(y, offsets), False, dw_hh, 1)
    return dw_hh


@_jit
def _rows_before(y, offsets):
    """h_{t-1} of the rows of steps 1..T-1 (N - B, H): y's first N - B rows when
    every step runs all B sequences (no copy), else gathered step by step."""
    T, B = _num_steps(offsets), offsets[1]
    N = offsets[T]
    if N == T * B:
        return y[:N - B]
    before = np.empty((N - B, y.shape[1]), dtype=y.dtype)
    for t in range(1, T):
        n_t = _step_batch(offsets, t)
        before[offsets[t] - B:offsets[t + 1] - B] = y[offsets[t - 1]:offsets[t - 1] + n_t]
    return before


@_jit
def _bias_grad(da):
    """db = sum_t da_t, summed over the batch too."""
    N, GH = da.shape
    db = np.zeros(GH, dtype=da.dtype)
    for r in range(N):
        for k in range(GH):
            db[k] += da[r, k]
    return db


@_jit
def _input_grad(da, w_ih, need_dx, bf16):
    """dx_t = da_t W_ih of every row in one GEMM, or an empty array when not wanted."""
    if not need_dx:
        return np.empty((0, 0), dtype=da.dtype)
    dx = np.empty((da.shape[0], w_ih.shape[1]), dtype=da.dtype)
    gemm(_operand(da, bf16), False, _operand(w_ih, bf16), False, dx, 0)
    return dx


# ---------------------------------------------------------------------- LSTM
#   a_t = x_t W_ih^T + h_{t-1} W_hh^T + b, split into gate order i, f, g, o
#   i = sigmoid(a_i), f = sigmoid(a_f), g = tanh(a_g), o = sigmoid(a_o)
#   c_t = f * c_{t-1} + i * g
#   h_t = o * tanh(c_t)
# saved = (c, tanh_c, gates): c_t and tanh(c_t) (N, H), activated gates (N, 4H).


@_jit
def _lstm_forward(x, h0, c0, w_ih, w_hh, b, offsets, y, cT, gates, c, c_at, tanh_c, tanh_at,
                  bf16):
    # x (N, I), h0 c0 (B, H), w_ih (4H, I), w_hh (4H, H), b (4H,), offsets (T + 1,);
    # fills y (N, H), cT (B, H) with each sequence's c after its own last step,
    # gates (N, 4H) with the activated gates, and step t's c_t and tanh(c_t)
    # into the rows of c and tanh_c from c_at[t] and tanh_at[t] on: training
    # keeps every step (both are the offsets); inference passes two slots of
    # B rows for c, used in turn, and one for tanh(c_t).
    B, H = h0.shape
    _dot_bt(_operand(x, bf16), _operand(w_ih, bf16), gates)
    w_hh = _operand(w_hh, bf16)
    recurrent = np.empty((B, 4 * H), dtype=y.dtype)
    # Gates as (.., 4, H): every index below is provably non-negative, so no
    # wraparound selects get in the vectorizer's way.
    a4 = gates.reshape(x.shape[0], 4, H)
    r4 = recurrent.reshape(B, 4, H)
    b4 = b.reshape(4, H)
    for t in range(_num_steps(offsets)):
        row0, n_t = offsets[t], _step_batch(offsets, t)
        _dot_bt(_operand(_previous(h0, y, offsets, t, n_t), bf16), w_hh, recurrent[:n_t])
        c_prev = _previous(c0, c, c_at, t, n_t)
        ct, tct = c[c_at[t]:c_at[t] + n_t], tanh_c[tanh_at[t]:tanh_at[t] + n_t]
        # Short loops over few arrays each: with more pointers than this in one
        # loop, LLVM's runtime alias checks give up and it stays scalar (5x slower).
        for k in range(n_t):
            row = row0 + k
            ai, af, ag, ao = a4[row, 0], a4[row, 1], a4[row, 2], a4[row, 3]
            ri, rf, rg, ro = r4[k, 0], r4[k, 1], r4[k, 2], r4[k, 3]
            for j in range(H):
                ai[j] = _sigmoid(ai[j] + ri[j] + b4[0, j])
            for j in range(H):
                af[j] = _sigmoid(af[j] + rf[j] + b4[1, j])
            for j in range(H):
                ag[j] = _tanh(ag[j] + rg[j] + b4[2, j])
            for j in range(H):
                ao[j] = _sigmoid(ao[j] + ro[j] + b4[3, j])
            cp, cn, tn, yn = c_prev[k], ct[k], tct[k], y[row]
            for j in range(H):
                cell = af[j] * cp[j] + ai[j] * ag[j]
                cn[j] = cell
                tn[j] = _tanh(cell)
            for j in range(H):
                yn[j] = ao[j] * tn[j]
        # Sequences n_{t+1}..n_t - 1 end at this step.
        cT[_step_batch(offsets, t + 1):n_t] = ct[_step_batch(offsets, t + 1):]


@_jit
def _lstm_backward(c, tanh_c, gates, x, h0, c0, w_ih, w_hh, y, dy, has_dy, dhT, dcT,
                   need_dx, offsets, bf16):
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
    N = x.shape[0]
    H = h0.shape[1]
    da = np.empty((N, 4 * H), dtype=y.dtype)
    w_hh = _operand(w_hh, bf16)
    # Row k: dhT[k] and dcT[k] until BPTT reaches sequence k's last step.
    dh = dhT.copy()
    dc = dcT.copy()
    # Gates as (.., 4, H) and short loops over few arrays, as in _lstm_forward.
    s4 = gates.reshape(N, 4, H)
    d4 = da.reshape(N, 4, H)
    for t in range(_num_steps(offsets) - 1, -1, -1):
        row0, n_t = offsets[t], _step_batch(offsets, t)
        c_prev = _previous(c0, c, offsets, t, n_t)
        for k in range(n_t):
            row = row0 + k
            i, f, g, o = s4[row, 0], s4[row, 1], s4[row, 2], s4[row, 3]
            di, df, dg, do = d4[row, 0], d4[row, 1], d4[row, 2], d4[row, 3]
            dhk, dck, tc, cp = dh[k], dc[k], tanh_c[row], c_prev[k]
            if has_dy:                                              # (1)
                dyk = dy[row]
                for j in range(H):
                    dhk[j] += dyk[j]
            for j in range(H):                                      # (2), (7)
                do[j] = dhk[j] * tc[j] * o[j] * (_ONE - o[j])
            for j in range(H):                                      # (3)
                dck[j] += dhk[j] * o[j] * (_ONE - tc[j] * tc[j])
            for j in range(H):                                      # (4), (7)
                di[j] = dck[j] * g[j] * i[j] * (_ONE - i[j])
            for j in range(H):
                dg[j] = dck[j] * i[j] * (_ONE - g[j] * g[j])
            for j in range(H):                                      # (5), (7)
                df[j] = dck[j] * cp[j] * f[j] * (_ONE - f[j])
            for j in range(H):                                      # (6)
                dck[j] *= f[j]
        gemm(_operand(da[row0:row0 + n_t], bf16), False, w_hh, False, dh[:n_t], 0)  # (8)
    dw_ih, dw_hh, db = _weight_grads(da, x, h0, y, offsets, bf16)
    dx = _input_grad(da, w_ih, need_dx, bf16)
    return dx, dh, dc, dw_ih, dw_hh, db


# ----------------------------------------------------------------------- GRU
#   gx_t = x_t W_ih^T + b_ih,  gh_t = h_{t-1} W_hh^T + b_hh, split into gate order r, z, n
#   r = sigmoid(gx_r + gh_r),  z = sigmoid(gx_z + gh_z)
#   hn = gh_n                   (= h_{t-1} W_hn^T + b_hn)
#   n = tanh(gx_n + r * hn)
#   h_t = (1 - z) * n + z * h_{t-1},  computed as n + z * (h_{t-1} - n)
# saved = (gates, hn): the activated gates r, z, n (N, 3H) and hn (N, H).


@_jit
def _gru_forward(x, h0, w_ih, w_hh, b_ih, b_hh, offsets, y, gates, hn, hn_at, bf16):
    # x (N, I), h0 (B, H), w_ih (3H, I), w_hh (3H, H), b_ih b_hh (3H,), offsets
    # (T + 1,); fills y (N, H), gates (N, 3H) with the activated gates and
    # step t's hn_t into the rows of hn from hn_at[t] on: training keeps every
    # step (hn_at is the offsets), inference one slot of B rows.
    B, H = h0.shape
    _dot_bt(_operand(x, bf16), _operand(w_ih, bf16), gates)
    w_hh = _operand(w_hh, bf16)
    recurrent = np.empty((B, 3 * H), dtype=y.dtype)
    # r and z add both biases, summed once here; b_hn stays apart, inside r * hn.
    b3 = b_ih.reshape(3, H).copy()
    b3[:2] += b_hh.reshape(3, H)[:2]
    b_hn = b_hh[2 * H:]
    # Gates as (.., 3, H) and short loops over few arrays, as in _lstm_forward.
    a3 = gates.reshape(x.shape[0], 3, H)
    r3 = recurrent.reshape(B, 3, H)
    for t in range(_num_steps(offsets)):
        row0, n_t = offsets[t], _step_batch(offsets, t)
        h_prev = _previous(h0, y, offsets, t, n_t)
        _dot_bt(_operand(h_prev, bf16), w_hh, recurrent[:n_t])
        hnt = hn[hn_at[t]:hn_at[t] + n_t]
        for seq in range(n_t):
            row = row0 + seq
            ar, az, an = a3[row, 0], a3[row, 1], a3[row, 2]
            rr, rz, rn = r3[seq, 0], r3[seq, 1], r3[seq, 2]
            hns, hp, ys = hnt[seq], h_prev[seq], y[row]
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
def _gru_backward(gates, hn, x, h0, w_ih, w_hh, y, dy, has_dy, dhT, need_dx, offsets, bf16):
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
    N = x.shape[0]
    B, H = h0.shape
    # The input and the recurrent sums differ in the n gate only; each is kept
    # whole so that every weight gradient is one GEMM over contiguous rows.
    da_in = np.empty((N, 3 * H), dtype=y.dtype)
    da_rec = np.empty((N, 3 * H), dtype=y.dtype)
    dh = dhT.copy()        # row k: dhT[k] until BPTT reaches sequence k's last step
    w_hh = _operand(w_hh, bf16)
    s3 = gates.reshape(N, 3, H)
    di3 = da_in.reshape(N, 3, H)
    dr3 = da_rec.reshape(N, 3, H)
    for t in range(_num_steps(offsets) - 1, -1, -1):
        row0, n_t = offsets[t], _step_batch(offsets, t)
        h_prev = _previous(h0, y, offsets, t, n_t)
        for seq in range(n_t):
            row = row0 + seq
            r, z, n = s3[row, 0], s3[row, 1], s3[row, 2]
            dar, daz, dan = di3[row, 0], di3[row, 1], di3[row, 2]
            dhn = dr3[row, 2]
            dhs, hp, hns = dh[seq], h_prev[seq], hn[row]
            if has_dy:                                              # (1)
                dys = dy[row]
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
            din, drec = da_in[row], da_rec[row]
            for j in range(2 * H):                                  # r and z: the same sums
                drec[j] = din[j]
            for j in range(H):                                      # (8)
                dhs[j] *= z[j]
        gemm(_operand(da_rec[row0:row0 + n_t], bf16), False, w_hh, False, dh[:n_t],
             1)                                                     # (9), added to (8)
    dw_ih = _input_weight_grad(_operand(da_in, bf16), _operand(x, bf16))      # (10)
    dw_hh = _recurrent_weight_grad(_operand(da_rec, bf16), _operand(h0, bf16),
                                   _operand(y, bf16), offsets)                 # (11)
    db_ih, db_hh = _bias_grad(da_in), _bias_grad(da_rec)                      # (10), (11)
    dx = _input_grad(da_in, w_ih, need_dx, bf16)                              # (10)
    return dx, dh, dw_ih, dw_hh, db_ih, db_hh


# ------------------------------------------------------ the kernel contract


class Workspace(_reference.Workspace):
    """The reference's workspace (cell, batch_sizes, direction, x), holding this
    backend's arrays: rows, as its kernels use them."""

    __slots__ = ()


def _c_array(a, dtype):
    return np.ascontiguousarray(a, dtype=dtype)


def _rows(a, dtype):
    """A per-step array as the kernels take it: C-ordered rows, (T, B, n) -> (T*B, n)."""
    a = _c_array(a, dtype)
    return a.reshape(-1, a.shape[-1])


def _per_step(rows, x):
    """Rows (N, n) laid out as x's steps: (T, B, n), or (N, n) when x is packed."""
    return rows.reshape(np.shape(x)[:-1] + rows.shape[-1:])


def _forward_inputs(cell, G, x, h0, w_ih, w_hh, training, batch_sizes, reverse, **more):
    """(offsets, dtype, x in run order: a copy when training, kept by the workspace;
    its rows) of a forward call, checked."""
    offsets = checked_offsets(f"{cell}_forward", G, x, h0, w_ih, w_hh, batch_sizes,
                              reverse=reverse, **more)
    x = in_run_order(np.asarray(x), reverse)
    dt = x.dtype
    x = np.array(x, dtype=dt, order="C") if training else _c_array(x, dt)
    return offsets, dt, x, x.reshape(-1, x.shape[-1])


def _backward_inputs(cell, G, saved, h0, w_ih, w_hh, y, dy, batch_sizes, reverse, **more):
    """(offsets, dtype, saved, y rows, dy rows, has_dy) of a backward call, checked,
    in run order (the kernels take an unused empty array for dy=None)."""
    fn = f"{cell}_backward"
    saved = checked_workspace(fn, cell, Workspace, saved, h0, batch_sizes, reverse)
    offsets = checked_offsets(fn, G, saved.x, h0, w_ih, w_hh, batch_sizes, y=y, dy=dy, **more)
    dt = saved.x.dtype
    y_rows = _rows(in_run_order(y, reverse), dt)
    if dy is None:
        return offsets, dt, saved, y_rows, np.empty((0, 0), dtype=dt), False
    return offsets, dt, saved, y_rows, _rows(in_run_order(dy, reverse), dt), True


def _outputs(y_rows, x, out, reverse):
    """y as a forward returns it, from its rows in run order."""
    return output_y(in_run_order(_per_step(y_rows, x), reverse), out)


def _input_grad_out(dx, saved, need_dx, reverse):
    """dx in x's time order, or None."""
    return in_run_order(_per_step(dx, saved.x), reverse) if need_dx else None


def _elman_forward(cell, relu, x, h0, w_ih, w_hh, b_ih, b_hh, training, batch_sizes, reverse,
                   out, precision):
    offsets, dt, x, x_rows = _forward_inputs(cell, 1, x, h0, w_ih, w_hh, training,
                                             batch_sizes, reverse, b_ih=b_ih, b_hh=b_hh,
                                             out=out)
    bf16 = checked_precision(f"{cell}_forward", precision, dt)
    y = np.empty((x_rows.shape[0], np.shape(h0)[1]), dtype=dt)
    _rnn_forward(x_rows, _c_array(h0, dt), _c_array(w_ih, dt), _c_array(w_hh, dt),
                 _c_array(np.add(b_ih, b_hh, dtype=dt), dt), offsets, relu, y, bf16)
    saved = Workspace(cell, x, (), batch_sizes, reverse) if training else None
    return _outputs(y, x, out, reverse), saved


def _elman_backward(cell, relu, saved, h0, w_ih, w_hh, y, dy, dhT, need_dx, batch_sizes,
                    reverse, precision):
    offsets, dt, saved, y, dy, has_dy = _backward_inputs(
        cell, 1, saved, h0, w_ih, w_hh, y, dy, batch_sizes, reverse, dhT=dhT)
    bf16 = checked_precision(f"{cell}_backward", precision, dt)
    dx, dh0, dw_ih, dw_hh, db = _rnn_backward(
        _rows(saved.x, dt), _c_array(h0, dt), _c_array(w_ih, dt), _c_array(w_hh, dt), y, dy,
        has_dy, _c_array(dhT, dt), bool(need_dx), offsets, relu, bf16)
    return (_input_grad_out(dx, saved, need_dx, reverse), dh0, dw_ih, dw_hh, db, db.copy())


def rnn_forward(x, h0, w_ih, w_hh, b_ih, b_hh, training=True, *, batch_sizes=None,
                reverse=False, out=None, precision="fp32"):
    return _elman_forward("rnn", False, x, h0, w_ih, w_hh, b_ih, b_hh, training, batch_sizes,
                          reverse, out, precision)


def rnn_relu_forward(x, h0, w_ih, w_hh, b_ih, b_hh, training=True, *, batch_sizes=None,
                     reverse=False, out=None, precision="fp32"):
    return _elman_forward("rnn_relu", True, x, h0, w_ih, w_hh, b_ih, b_hh, training,
                          batch_sizes, reverse, out, precision)


def rnn_backward(saved, h0, w_ih, w_hh, y, dy, dhT, need_dx=True, *, batch_sizes=None,
                 reverse=False, precision="fp32"):
    return _elman_backward("rnn", False, saved, h0, w_ih, w_hh, y, dy, dhT, need_dx,
                           batch_sizes, reverse, precision)


def rnn_relu_backward(saved, h0, w_ih, w_hh, y, dy, dhT, need_dx=True, *, batch_sizes=None,
                      reverse=False, precision="fp32"):
    return _elman_backward("rnn_relu", True, saved, h0, w_ih, w_hh, y, dy, dhT, need_dx,
                           batch_sizes, reverse, precision)


def lstm_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, training=True, *, batch_sizes=None,
                 reverse=False, out=None, precision="fp32"):
    offsets, dt, x, x_rows = _forward_inputs("lstm", 4, x, h0, w_ih, w_hh, training,
                                             batch_sizes, reverse, b_ih=b_ih, b_hh=b_hh,
                                             c0=c0, out=out)
    bf16 = checked_precision("lstm_forward", precision, dt)
    N, (B, H) = x_rows.shape[0], np.shape(h0)
    y = np.empty((N, H), dtype=dt)
    cT = np.empty((B, H), dtype=dt)
    gates = np.empty((N, 4 * H), dtype=dt)
    if training:
        c, tanh_c = np.empty((N, H), dtype=dt), np.empty((N, H), dtype=dt)
        c_at = tanh_at = offsets
    else:  # c_{t-1} and c_t in two slots of B rows, used in turn; one for tanh(c_t)
        c, tanh_c = np.empty((2 * B, H), dtype=dt), np.empty((B, H), dtype=dt)
        c_at, tanh_at = B * (np.arange(len(offsets)) % 2), np.zeros_like(offsets)
    _lstm_forward(x_rows, _c_array(h0, dt), _c_array(c0, dt), _c_array(w_ih, dt),
                  _c_array(w_hh, dt), _c_array(np.add(b_ih, b_hh, dtype=dt), dt), offsets, y,
                  cT, gates, c, c_at, tanh_c, tanh_at, bf16)
    saved = (Workspace("lstm", x, (c, tanh_c, gates), batch_sizes, reverse)
             if training else None)
    return _outputs(y, x, out, reverse), cT, saved


def lstm_backward(saved, h0, c0, w_ih, w_hh, y, dy, dhT, dcT, need_dx=True, *,
                  batch_sizes=None, reverse=False, precision="fp32"):
    offsets, dt, saved, y, dy, has_dy = _backward_inputs(
        "lstm", 4, saved, h0, w_ih, w_hh, y, dy, batch_sizes, reverse, c0=c0, dhT=dhT, dcT=dcT)
    bf16 = checked_precision("lstm_backward", precision, dt)
    c, tanh_c, gates = saved.arrays
    dx, dh0, dc0, dw_ih, dw_hh, db = _lstm_backward(
        c, tanh_c, gates, _rows(saved.x, dt), _c_array(h0, dt), _c_array(c0, dt),
        _c_array(w_ih, dt), _c_array(w_hh, dt), y, dy, has_dy, _c_array(dhT, dt),
        _c_array(dcT, dt), bool(need_dx), offsets, bf16)
    return (_input_grad_out(dx, saved, need_dx, reverse), dh0, dc0, dw_ih, dw_hh, db,
            db.copy())


def gru_forward(x, h0, w_ih, w_hh, b_ih, b_hh, training=True, *, batch_sizes=None,
                reverse=False, out=None, precision="fp32"):
    offsets, dt, x, x_rows = _forward_inputs("gru", 3, x, h0, w_ih, w_hh, training,
                                             batch_sizes, reverse, b_ih=b_ih, b_hh=b_hh,
                                             out=out)
    bf16 = checked_precision("gru_forward", precision, dt)
    N, (B, H) = x_rows.shape[0], np.shape(h0)
    y = np.empty((N, H), dtype=dt)
    gates = np.empty((N, 3 * H), dtype=dt)
    if training:
        hn, hn_at = np.empty((N, H), dtype=dt), offsets
    else:  # one slot of B rows, reused every step
        hn, hn_at = np.empty((B, H), dtype=dt), np.zeros_like(offsets)
    _gru_forward(x_rows, _c_array(h0, dt), _c_array(w_ih, dt), _c_array(w_hh, dt),
                 _c_array(b_ih, dt), _c_array(b_hh, dt), offsets, y, gates, hn, hn_at, bf16)
    saved = Workspace("gru", x, (gates, hn), batch_sizes, reverse) if training else None
    return _outputs(y, x, out, reverse), saved


def gru_backward(saved, h0, w_ih, w_hh, y, dy, dhT, need_dx=True, *, batch_sizes=None,
                 reverse=False, precision="fp32"):
    offsets, dt, saved, y, dy, has_dy = _backward_inputs(
        "gru", 3, saved, h0, w_ih, w_hh, y, dy, batch_sizes, reverse, dhT=dhT)
    bf16 = checked_precision("gru_backward", precision, dt)
    gates, hn = saved.arrays
    dx, dh0, dw_ih, dw_hh, db_ih, db_hh = _gru_backward(
        gates, hn, _rows(saved.x, dt), _c_array(h0, dt), _c_array(w_ih, dt),
        _c_array(w_hh, dt), y, dy, has_dy, _c_array(dhT, dt), bool(need_dx), offsets, bf16)
    return (_input_grad_out(dx, saved, need_dx, reverse), dh0, dw_ih, dw_hh, db_ih, db_hh)


def set_num_threads(n):
    """The BLAS's thread count.

    The kernels have no parallel regions of their own: their threads are the
    BLAS library's, which their matrix products call, so Numba's own count is left
    alone (its OpenMP threading layer shares the OpenMP runtime with torch).
    """
    _blas.limit_threads(n)
