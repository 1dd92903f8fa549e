"""Each fast backend's raw kernels against the NumPy reference, argument for argument.

The layer tests reach the kernels through fastrnn.RNN / fastrnn.LSTM; these call
the kernel contract directly (time-major arrays, b = b_ih + b_hh), so a
mismatch points at one kernel and one output.
"""

import numpy as np
import pytest

from conftest import FAST_BACKENDS, assert_close
from fastrnn import _backends, _reference as reference

DTYPES = [np.float32, np.float64]

# T, B, I, H: single step, single sequence, H=1, odd H on both sides of a SIMD
# width, and the origin shape (28 rows of 28 pixels, 128 units, batch 100).
SHAPES = [
    (1, 1, 1, 1),
    (1, 3, 5, 7),
    (6, 1, 4, 7),
    (5, 4, 3, 1),
    (4, 3, 5, 129),
    (28, 1, 28, 129),
    (28, 100, 28, 128),
]


def shape_id(shape):
    T, B, I, H = shape
    return f"B{B}-T{T}-H{H}"


def backend_params():
    return pytest.mark.parametrize("backend", FAST_BACKENDS)


shapes = pytest.mark.parametrize("T,B,I,H", SHAPES, ids=[shape_id(s) for s in SHAPES])
dtypes = pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)


def make_kernel_args(G, T, B, I, H, dtype, *, seed=0, scale=1.0):
    """Time-major inputs, torch-like weights, nonzero initial states and output grads.

    The seed is fixed on purpose: in about 1% of random draws with H=1 a bias
    gradient cancels to a few float32 ulps of its terms, and then the float32
    reference itself misses the float64 answer by more than the tolerance.
    """
    rng = np.random.default_rng(seed)
    k = 1.0 / np.sqrt(H)

    def uniform(shape, bound):
        return rng.uniform(-bound, bound, shape).astype(dtype)

    return {
        "x": (scale * rng.standard_normal((T, B, I))).astype(dtype),
        "h0": uniform((B, H), 0.5),
        "c0": uniform((B, H), 1.0),
        "w_ih": uniform((G * H, I), k),
        "w_hh": uniform((G * H, H), k),
        "b": uniform((G * H,), 2 * k),
        "dy": rng.standard_normal((T, B, H)).astype(dtype),
        "dhT": rng.standard_normal((B, H)).astype(dtype),
        "dcT": rng.standard_normal((B, H)).astype(dtype),
    }


def check_all(actual, expected, kind, dtype, names):
    for a, e, what in zip(actual, expected, names):
        assert_close(a, e, kind, dtype, what)
        assert a.dtype == np.dtype(dtype), f"{what}: dtype {a.dtype}, expected {dtype}"


# ---------------------------------------------------------------- RNN (tanh)


@dtypes
@shapes
@backend_params()
def test_rnn_forward(backend, T, B, I, H, dtype):
    kernels = _backends.get_backend(backend)
    a = make_kernel_args(1, T, B, I, H, dtype)
    args = (a["x"], a["h0"], a["w_ih"], a["w_hh"], a["b"])
    y_ref, _ = reference.rnn_forward(*args, True)
    for training in (True, False):
        y, _ = kernels.rnn_forward(*args, training)
        check_all([y], [y_ref], "output", dtype, [f"y (training={training})"])


@pytest.mark.parametrize("with_dy", [True, False], ids=["dy", "dy_None"])
@dtypes
@shapes
@backend_params()
def test_rnn_backward(backend, T, B, I, H, dtype, with_dy):
    kernels = _backends.get_backend(backend)
    a = make_kernel_args(1, T, B, I, H, dtype)
    fwd_args = (a["x"], a["h0"], a["w_ih"], a["w_hh"], a["b"])
    dy = a["dy"] if with_dy else None
    y_ref, saved_ref = reference.rnn_forward(*fwd_args, True)
    y, saved = kernels.rnn_forward(*fwd_args, True)
    names = ["dx", "dh0", "dw_ih", "dw_hh", "db"]
    expected = reference.rnn_backward(saved_ref, a["x"], a["h0"], a["w_ih"], a["w_hh"],
                                      y_ref, dy, a["dhT"], True)
    for need_dx in (True, False):
        grads = kernels.rnn_backward(saved, a["x"], a["h0"], a["w_ih"], a["w_hh"], y, dy,
                                     a["dhT"], need_dx)
        if need_dx:
            check_all(grads, expected, "grad", dtype, names)
        else:
            assert grads[0] is None
            check_all(grads[1:], expected[1:], "grad", dtype, names[1:])


# ---------------------------------------------------------------------- LSTM


@dtypes
@shapes
@backend_params()
def test_lstm_forward(backend, T, B, I, H, dtype):
    kernels = _backends.get_backend(backend)
    a = make_kernel_args(4, T, B, I, H, dtype)
    args = (a["x"], a["h0"], a["c0"], a["w_ih"], a["w_hh"], a["b"])
    y_ref, cT_ref, _ = reference.lstm_forward(*args, True)
    for training in (True, False):
        y, cT, saved = kernels.lstm_forward(*args, training)
        check_all([y, cT], [y_ref, cT_ref], "output", dtype,
                  [f"y (training={training})", f"cT (training={training})"])
        if not training:
            assert saved is None


@pytest.mark.parametrize("with_dy", [True, False], ids=["dy", "dy_None"])
@dtypes
@shapes
@backend_params()
def test_lstm_backward(backend, T, B, I, H, dtype, with_dy):
    kernels = _backends.get_backend(backend)
    a = make_kernel_args(4, T, B, I, H, dtype)
    fwd_args = (a["x"], a["h0"], a["c0"], a["w_ih"], a["w_hh"], a["b"])
    bwd_args = (a["x"], a["h0"], a["c0"], a["w_ih"], a["w_hh"])
    dy = a["dy"] if with_dy else None
    y_ref, _, saved_ref = reference.lstm_forward(*fwd_args, True)
    y, _, saved = kernels.lstm_forward(*fwd_args, True)
    names = ["dx", "dh0", "dc0", "dw_ih", "dw_hh", "db"]
    expected = reference.lstm_backward(saved_ref, *bwd_args, y_ref, dy, a["dhT"], a["dcT"],
                                       True)
    # need_dx=False second: the first backward must leave `saved` as it found it.
    for need_dx in (True, False):
        grads = kernels.lstm_backward(saved, *bwd_args, y, dy, a["dhT"], a["dcT"], need_dx)
        if need_dx:
            check_all(grads, expected, "grad", dtype, names)
        else:
            assert grads[0] is None
            check_all(grads[1:], expected[1:], "grad", dtype, names[1:])


@backend_params()
def test_lstm_backward_without_saved_state_is_an_error(backend):
    kernels = _backends.get_backend(backend)
    a = make_kernel_args(4, 3, 2, 4, 5, np.float32)
    fwd_args = (a["x"], a["h0"], a["c0"], a["w_ih"], a["w_hh"], a["b"])
    y, _, saved = kernels.lstm_forward(*fwd_args, False)
    with pytest.raises(ValueError, match="training forward"):
        kernels.lstm_backward(saved, *fwd_args[:5], y, None, a["dhT"], a["dcT"], True)


# ------------------------------------------------------- saturating inputs

# |x| far beyond where every gate saturates, up to 1e30: no overflow, finite
# results, the same as the reference.
SCALES = [30.0, 1e4, 1e30]


@dtypes
@pytest.mark.parametrize("scale", SCALES, ids=lambda s: f"x{s:g}")
@backend_params()
def test_rnn_saturating(backend, scale, dtype):
    kernels = _backends.get_backend(backend)
    a = make_kernel_args(1, 6, 3, 4, 9, dtype, seed=2, scale=scale)
    fwd_args = (a["x"], a["h0"], a["w_ih"], a["w_hh"], a["b"])
    y_ref, saved_ref = reference.rnn_forward(*fwd_args, True)
    y, saved = kernels.rnn_forward(*fwd_args, True)
    check_all([y], [y_ref], "output", dtype, ["y"])
    grads = kernels.rnn_backward(saved, *fwd_args[:4], y, a["dy"], a["dhT"], True)
    expected = reference.rnn_backward(saved_ref, *fwd_args[:4], y_ref, a["dy"], a["dhT"], True)
    for g in grads:
        assert np.all(np.isfinite(g))
    check_all(grads, expected, "grad", dtype, ["dx", "dh0", "dw_ih", "dw_hh", "db"])


@dtypes
@pytest.mark.parametrize("scale", SCALES, ids=lambda s: f"x{s:g}")
@backend_params()
def test_lstm_saturating(backend, scale, dtype):
    kernels = _backends.get_backend(backend)
    a = make_kernel_args(4, 6, 3, 4, 9, dtype, seed=2, scale=scale)
    fwd_args = (a["x"], a["h0"], a["c0"], a["w_ih"], a["w_hh"], a["b"])
    y_ref, cT_ref, saved_ref = reference.lstm_forward(*fwd_args, True)
    y, cT, saved = kernels.lstm_forward(*fwd_args, True)
    check_all([y, cT], [y_ref, cT_ref], "output", dtype, ["y", "cT"])
    bwd = (*fwd_args[:5], y, a["dy"], a["dhT"], a["dcT"], True)
    grads = kernels.lstm_backward(saved, *bwd)
    expected = reference.lstm_backward(saved_ref, *fwd_args[:5], y_ref, *bwd[6:])
    for g in grads:
        assert np.all(np.isfinite(g))
    check_all(grads, expected, "grad", dtype, ["dx", "dh0", "dc0", "dw_ih", "dw_hh", "db"])


# ------------------------------------------------------------------ threads


@backend_params()
def test_set_num_threads_takes_any_positive_count(backend):
    kernels = _backends.get_backend(backend)
    a = make_kernel_args(4, 3, 2, 4, 5, np.float32)
    args = (a["x"], a["h0"], a["c0"], a["w_ih"], a["w_hh"], a["b"])
    y_ref, _, _ = reference.lstm_forward(*args, False)
    try:
        for n in (1, 10_000):  # more than the machine has is clamped, not an error
            kernels.set_num_threads(n)
            y, _, _ = kernels.lstm_forward(*args, False)
            check_all([y], [y_ref], "output", np.float32, [f"y ({n} threads)"])
    finally:
        kernels.set_num_threads(_backends.get_num_threads())
