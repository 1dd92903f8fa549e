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
  weight and input gradients are one GEMM each per chunk of BPTT steps
  (below), so only the recurrent product h_{t-1} W_hh^T (or da_t W_hh) is
  left inside the loop, on the n_t rows of the sequences still running: the
  cost follows the tokens. The forward multiplies by a transposed copy of
  W_hh, so each step's product is a plain GEMM (faster than a transposed
  one), added into the rows that hold x_t W_ih^T.
- BPTT keeps the pre-activation gradients of one chunk of steps at a time
  and takes the gradients from its rows while they are in cache: no
  (N, G*H) array, whose pages malloc gave back after every call.
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
import threading

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
def _recurrent_operand(w_hh, bf16):
    """W_hh^T (H, G*H), C-ordered, for the forward's h_{t-1} W_hh^T: one copy a
    call, and every step's product is a plain one, which OpenBLAS runs 14-18%
    faster than the transposed (h_{t-1} (B, H) by (H, G*H), H 128 to 512)."""
    return np.ascontiguousarray(_operand(w_hh, bf16).T)


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
    H = h0.shape[1]
    _dot_bt(_operand(x, bf16), _operand(w_ih, bf16), y)   # every step's x_t W_ih^T at once
    w_hh_t = _recurrent_operand(w_hh, bf16)
    for t in range(_num_steps(offsets)):
        row0, n_t = offsets[t], _step_batch(offsets, t)
        a = y[row0:row0 + n_t]
        # a_t - b = x_t W_ih^T + h_{t-1} W_hh^T: the product added where a_t is made.
        gemm(_operand(_previous(h0, y, offsets, t, n_t), bf16), False, w_hh_t, False, a, 1)
        for k in range(n_t):
            ak = a[k]
            if relu:
                for j in range(H):
                    ak[j] = _relu(ak[j] + b[j])
            else:
                for j in range(H):
                    ak[j] = _tanh(ak[j] + b[j])


@_jit
def _rnn_backward(x, h0, w_ih, w_hh, y, dy, has_dy, dhT, need_dx, offsets, relu, bf16,
                  chunk_numbers):
    # BPTT, for t = T..1, over the sequences still running at t:
    #   dh_t   = dy_t + dh_t(from t+1)                      (1)
    #   da_t   = dh_t * (1 - h_t^2)      (tanh)             (2)
    #   da_t   = dh_t * [h_t > 0]        (relu)             (2)
    #   dh_{t-1} (from t) = da_t W_hh                       (3)
    # after each chunk of steps (below), over its rows:
    #   dW_ih += da^T x,  db += sum da,  dx = da W_ih,  dW_hh += da^T h_{t-1}   (4)
    H = h0.shape[1]
    bounds, rows = _chunks(offsets, H, chunk_numbers)
    da = np.empty((rows, H), dtype=y.dtype)
    dx, dw_ih, db = _input_grad_arrays(x, H, need_dx)
    dw_hh = np.empty((H, H), dtype=y.dtype)
    x_operand, w_ih, w_hh = _operand(x, bf16), _operand(w_ih, bf16), _operand(w_hh, bf16)
    dh = dhT.copy()        # row k: dhT[k] until BPTT reaches sequence k's last step
    for chunk in range(len(bounds) - 1):
        start, end = bounds[chunk + 1], bounds[chunk]
        base = offsets[start]
        for t in range(end - 1, start - 1, -1):
            row0, n_t = offsets[t], _step_batch(offsets, t)
            for k in range(n_t):
                dhk, dak, yk = dh[k], da[row0 - base + k], y[row0 + k]
                if has_dy:                                          # (1)
                    dyk = dy[row0 + k]
                    for j in range(H):
                        dhk[j] += dyk[j]
                if relu:                                            # (2)
                    for j in range(H):
                        dak[j] = dhk[j] if yk[j] > 0 else _ZERO
                else:
                    for j in range(H):
                        dak[j] = dhk[j] * (_ONE - yk[j] * yk[j])
            gemm(_operand(da[row0 - base:row0 - base + n_t], bf16), False, w_hh, False,
                 dh[:n_t], 0)                                       # (3)
        da_chunk = da[:offsets[end] - base]
        operand = _operand(da_chunk, bf16)
        _add_input_grads(operand, da_chunk, x_operand, w_ih, offsets, start, end, chunk == 0,
                         dx, dw_ih, db)                             # (4)
        _add_recurrent_weight_grad(operand, h0, y, offsets, start, end, chunk == 0, dw_hh, bf16)
    return dx, dh, dw_ih, dw_hh, db


# ------------------------------------------------- gradients, chunk by chunk
# BPTT keeps the pre-activation gradients of one chunk of steps at a time,
# about _CHUNK_NUMBERS numbers (at least one step's). After each chunk the
# weight and input gradients take its rows in one GEMM each, while they are
# still in cache. A whole (N, G*H) array instead went back to the system
# after every call and its pages faulted in anew at the next (0.7 ms of a
# 4.6 ms RNN training step at the origin shape). From 2^13 to 2^17 numbers
# the backwards ran alike; 2^19 and more, 5-40% slower. The kernels take it
# as an argument (chunk_numbers), so tests can make chunks of one step.
_CHUNK_NUMBERS = 1 << 17


@_jit
def _chunks(offsets, GH, numbers):
    """(bounds, rows): BPTT's chunks of steps, last first, e_0 = T > e_1 > ... >
    e_m = 0 (chunk c is steps e_{c+1}..e_c - 1), and the most rows one holds,
    for gradients of GH columns: about `numbers` numbers, at least one step."""
    rows = max(numbers // GH, _step_batch(offsets, 0))
    bounds = np.empty(len(offsets), dtype=np.int64)
    end, m = _num_steps(offsets), 0
    bounds[0] = end
    while end > 0:
        start = end - 1
        while start > 0 and offsets[end] - offsets[start - 1] <= rows:
            start -= 1
        m += 1
        bounds[m] = end = start
    return bounds[:m + 1], rows


@_jit
def _input_grad_arrays(x, GH, need_dx):
    """(dx, dW_ih, db) for _add_input_grads to fill: dx (N, I), or empty when
    not wanted; db zeros."""
    N, I = x.shape
    dx = np.empty((N, I) if need_dx else (0, 0), dtype=x.dtype)
    return dx, np.empty((GH, I), dtype=x.dtype), np.zeros(GH, dtype=x.dtype)


@_jit
def _add_input_grads(da, da_exact, x, w_ih, offsets, start, end, first, dx, dw_ih, db):
    """Steps start..end-1's share of the input-side gradients, from their rows of
    pre-activation gradients: da as the products take it (rounded to bfloat16
    for bf16), da_exact as summed. dW_ih = da^T x on the first chunk (+= after),
    db += sum da, dx = da W_ih unless dx is empty; x, w_ih as the products take them."""
    rows = slice(offsets[start], offsets[end])
    gemm(da, True, x[rows], False, dw_ih, 0 if first else 1)
    _add_bias_grad(da_exact, db)
    if dx.size:
        gemm(da, False, w_ih, False, dx[rows], 0)


@_jit
def _add_bias_grad(da, db):
    """db += sum of da's rows."""
    for r in range(da.shape[0]):
        for k in range(da.shape[1]):
            db[k] += da[r, k]


@_jit
def _add_recurrent_weight_grad(da, h0, y, offsets, start, end, first, dw_hh, bf16):
    """Steps start..end-1's share of dW_hh = sum_t da_t^T h_{t-1} (= on the first
    chunk, += after), from their rows da as the product takes them."""
    beta = 0 if first else 1
    if start == 0:   # h_{t-1} is h0 for t = 1: a GEMM of its own
        B = _step_batch(offsets, 0)
        gemm(da[:B], True, _operand(h0, bf16), False, dw_hh, beta)
        if end == 1:
            return
        da, start, beta = da[B:], 1, 1
    gemm(da, True, _operand(_rows_before(y, offsets, start, end), bf16), False, dw_hh, beta)


@_jit
def _rows_before(y, offsets, start, end):
    """h_{t-1} of the rows of steps start..end-1 (start >= 1), from y: the rows
    before them when each of these steps runs all B sequences (no copy), else
    gathered step by step."""
    B, base = _step_batch(offsets, 0), offsets[start]
    if offsets[end] - base == (end - start) * B:
        return y[base - B:offsets[end] - B]
    before = np.empty((offsets[end] - base, y.shape[1]), dtype=y.dtype)
    for t in range(start, end):
        n_t = _step_batch(offsets, t)
        before[offsets[t] - base:offsets[t] - base + n_t] = y[offsets[t - 1]:offsets[t - 1] + n_t]
    return before


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
    H = h0.shape[1]
    _dot_bt(_operand(x, bf16), _operand(w_ih, bf16), gates)
    w_hh_t = _recurrent_operand(w_hh, bf16)
    # Gates as (.., 4, H): every index below is provably non-negative, so no
    # wraparound selects get in the vectorizer's way.
    a4 = gates.reshape(x.shape[0], 4, H)
    b4 = b.reshape(4, H)
    for t in range(_num_steps(offsets)):
        row0, n_t = offsets[t], _step_batch(offsets, t)
        # a_t - b = x_t W_ih^T + h_{t-1} W_hh^T: the product added where a_t is made.
        gemm(_operand(_previous(h0, y, offsets, t, n_t), bf16), False, w_hh_t, False,
             gates[row0:row0 + n_t], 1)
        c_prev = _previous(c0, c, c_at, t, n_t)
        ct, tct = c[c_at[t]:c_at[t] + n_t], tanh_c[tanh_at[t]:tanh_at[t] + n_t]
        # Short loops over few arrays each: with more pointers than this in one
        # loop, LLVM's runtime alias checks give up and it stays scalar (5x slower).
        for k in range(n_t):
            row = row0 + k
            ai, af, ag, ao = a4[row, 0], a4[row, 1], a4[row, 2], a4[row, 3]
            for j in range(H):
                ai[j] = _sigmoid(ai[j] + b4[0, j])
            for j in range(H):
                af[j] = _sigmoid(af[j] + b4[1, j])
            for j in range(H):
                ag[j] = _tanh(ag[j] + b4[2, j])
            for j in range(H):
                ao[j] = _sigmoid(ao[j] + b4[3, j])
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
                   need_dx, offsets, bf16, chunk_numbers):
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
    # after each chunk of steps, the weight and input gradients, as in _rnn_backward.
    H = h0.shape[1]
    bounds, rows = _chunks(offsets, 4 * H, chunk_numbers)
    da = np.empty((rows, 4 * H), dtype=y.dtype)
    dx, dw_ih, db = _input_grad_arrays(x, 4 * H, need_dx)
    dw_hh = np.empty((4 * H, H), dtype=y.dtype)
    x_operand, w_ih, w_hh = _operand(x, bf16), _operand(w_ih, bf16), _operand(w_hh, bf16)
    # Row k: dhT[k] and dcT[k] until BPTT reaches sequence k's last step.
    dh = dhT.copy()
    dc = dcT.copy()
    # Gates as (.., 4, H) and short loops over few arrays, as in _lstm_forward.
    s4 = gates.reshape(x.shape[0], 4, H)
    d4 = da.reshape(rows, 4, H)
    for chunk in range(len(bounds) - 1):
        start, end = bounds[chunk + 1], bounds[chunk]
        base = offsets[start]
        for t in range(end - 1, start - 1, -1):
            row0, n_t = offsets[t], _step_batch(offsets, t)
            c_prev = _previous(c0, c, offsets, t, n_t)
            for k in range(n_t):
                row, at = row0 + k, row0 - base + k   # at: the row in the chunk's buffer
                i, f, g, o = s4[row, 0], s4[row, 1], s4[row, 2], s4[row, 3]
                di, df, dg, do = d4[at, 0], d4[at, 1], d4[at, 2], d4[at, 3]
                dhk, dck, tc, cp = dh[k], dc[k], tanh_c[row], c_prev[k]
                if has_dy:                                          # (1)
                    dyk = dy[row]
                    for j in range(H):
                        dhk[j] += dyk[j]
                for j in range(H):                                  # (2), (7)
                    do[j] = dhk[j] * tc[j] * o[j] * (_ONE - o[j])
                for j in range(H):                                  # (3)
                    dck[j] += dhk[j] * o[j] * (_ONE - tc[j] * tc[j])
                for j in range(H):                                  # (4), (7)
                    di[j] = dck[j] * g[j] * i[j] * (_ONE - i[j])
                for j in range(H):
                    dg[j] = dck[j] * i[j] * (_ONE - g[j] * g[j])
                for j in range(H):                                  # (5), (7)
                    df[j] = dck[j] * cp[j] * f[j] * (_ONE - f[j])
                for j in range(H):                                  # (6)
                    dck[j] *= f[j]
            gemm(_operand(da[row0 - base:row0 - base + n_t], bf16), False, w_hh, False,
                 dh[:n_t], 0)                                       # (8)
        da_chunk = da[:offsets[end] - base]
        operand = _operand(da_chunk, bf16)
        _add_input_grads(operand, da_chunk, x_operand, w_ih, offsets, start, end, chunk == 0,
                         dx, dw_ih, db)
        _add_recurrent_weight_grad(operand, h0, y, offsets, start, end, chunk == 0, dw_hh, bf16)
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
    w_hh_t = _recurrent_operand(w_hh, bf16)
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
        gemm(_operand(h_prev, bf16), False, w_hh_t, False, recurrent[:n_t], 0)
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
def _gru_backward(gates, hn, x, h0, w_ih, w_hh, y, dy, has_dy, dhT, need_dx, offsets, bf16,
                  chunk_numbers):
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
    # after each chunk of steps, over its rows, with da_in = [da_r, da_z, da_n] and
    # da_rec = [da_r, da_z, dhn]:
    #   dW_ih += da_in^T x,  db_ih += sum da_in,  dx = da_in W_ih             (10)
    #   dW_hh += da_rec^T h_{t-1},  db_hh += sum da_rec                       (11)
    H = h0.shape[1]
    bounds, rows = _chunks(offsets, 3 * H, chunk_numbers)
    # The input and the recurrent sums differ in the n gate only; each is kept
    # whole so that every weight gradient is one GEMM over contiguous rows.
    da_in = np.empty((rows, 3 * H), dtype=y.dtype)
    da_rec = np.empty((rows, 3 * H), dtype=y.dtype)
    dx, dw_ih, db_ih = _input_grad_arrays(x, 3 * H, need_dx)
    dw_hh, db_hh = np.empty((3 * H, H), dtype=y.dtype), np.zeros(3 * H, dtype=y.dtype)
    x_operand, w_ih, w_hh = _operand(x, bf16), _operand(w_ih, bf16), _operand(w_hh, bf16)
    dh = dhT.copy()        # row k: dhT[k] until BPTT reaches sequence k's last step
    s3 = gates.reshape(x.shape[0], 3, H)
    di3 = da_in.reshape(rows, 3, H)
    dr3 = da_rec.reshape(rows, 3, H)
    for chunk in range(len(bounds) - 1):
        start, end = bounds[chunk + 1], bounds[chunk]
        base = offsets[start]
        for t in range(end - 1, start - 1, -1):
            row0, n_t = offsets[t], _step_batch(offsets, t)
            h_prev = _previous(h0, y, offsets, t, n_t)
            for seq in range(n_t):
                row, at = row0 + seq, row0 - base + seq
                r, z, n = s3[row, 0], s3[row, 1], s3[row, 2]
                dar, daz, dan = di3[at, 0], di3[at, 1], di3[at, 2]
                dhn = dr3[at, 2]
                dhs, hp, hns = dh[seq], h_prev[seq], hn[row]
                if has_dy:                                          # (1)
                    dys = dy[row]
                    for j in range(H):
                        dhs[j] += dys[j]
                for j in range(H):                                  # (2), (4)
                    dan[j] = dhs[j] * (_ONE - z[j]) * (_ONE - n[j] * n[j])
                for j in range(H):                                  # (3), (7)
                    daz[j] = dhs[j] * (hp[j] - n[j]) * z[j] * (_ONE - z[j])
                for j in range(H):                                  # (6), (7)
                    dar[j] = dan[j] * hns[j] * r[j] * (_ONE - r[j])
                for j in range(H):                                  # (5)
                    dhn[j] = dan[j] * r[j]
                din, drec = da_in[at], da_rec[at]
                for j in range(2 * H):                              # r and z: the same sums
                    drec[j] = din[j]
                for j in range(H):                                  # (8)
                    dhs[j] *= z[j]
            gemm(_operand(da_rec[row0 - base:row0 - base + n_t], bf16), False, w_hh, False,
                 dh[:n_t], 1)                                       # (9), added to (8)
        da_in_chunk, da_rec_chunk = da_in[:offsets[end] - base], da_rec[:offsets[end] - base]
        _add_input_grads(_operand(da_in_chunk, bf16), da_in_chunk, x_operand, w_ih, offsets,
                         start, end, chunk == 0, dx, dw_ih, db_ih)  # (10)
        _add_recurrent_weight_grad(_operand(da_rec_chunk, bf16), h0, y, offsets, start, end,
                                   chunk == 0, dw_hh, bf16)         # (11)
        _add_bias_grad(da_rec_chunk, db_hh)
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


_thread_scratch = threading.local()


def _scratch_rows(a, dtype, slot):
    """_rows of `a` for a backward's own use: where a copy is needed (y and dy in run
    order for a reverse direction, dy a strided half of a bidirectional layer's),
    into this thread's buffer `slot`, which its next backward reuses. A fresh array's
    pages went back to the system after each call and were faulted in anew at the
    next (a 2-layer bidirectional RNN's step at the origin shape: up to 2900 faults,
    about 3 µs each on a Sapphire Rapids VM)."""
    a = np.asarray(a)
    if a.flags.c_contiguous and a.dtype == dtype:
        return _rows(a, dtype)
    buffers = getattr(_thread_scratch, "buffers", None)
    if buffers is None:
        buffers = _thread_scratch.buffers = {}
    buffer = buffers.get(slot)
    if buffer is None or buffer.dtype != dtype or buffer.size < a.size:
        buffer = buffers[slot] = np.empty(a.size, dtype=dtype)
    rows = buffer[:a.size].reshape(-1, a.shape[-1])
    np.copyto(rows.reshape(a.shape), a)
    return rows


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
    y_rows = _scratch_rows(in_run_order(y, reverse), dt, "y")
    if dy is None:
        return offsets, dt, saved, y_rows, np.empty((0, 0), dtype=dt), False
    return offsets, dt, saved, y_rows, _scratch_rows(in_run_order(dy, reverse), dt, "dy"), True


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
        has_dy, _c_array(dhT, dt), bool(need_dx), offsets, relu, bf16, _CHUNK_NUMBERS)
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
        _c_array(dcT, dt), bool(need_dx), offsets, bf16, _CHUNK_NUMBERS)
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
        _c_array(w_hh, dt), y, dy, has_dy, _c_array(dhT, dt), bool(need_dx), offsets, bf16,
        _CHUNK_NUMBERS)
    return (_input_grad_out(dx, saved, need_dx, reverse), dh0, dw_ih, dw_hh, db_ih, db_hh)


def set_num_threads(n):
    """The BLAS's thread count.

    The kernels have no parallel regions of their own: their threads are the
    BLAS library's, which their matrix products call, so Numba's own count is left
    alone (its OpenMP threading layer shares the OpenMP runtime with torch).
    """
    _blas.limit_threads(n)
