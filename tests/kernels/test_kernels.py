"""Each fast backend's raw kernels against the NumPy reference, on every kernel path.

The layer tests reach the kernels through fastrnn.RNN / LSTM / GRU; these call
the kernel contract directly (time-major arrays, b = b_ih + b_hh, the GRU's b_ih
and b_hh apart), so awkward shapes, saturation, float64, dy=None, need_dx=False
and threads are hit on the Numba backend and on each ISA path of the compiled
one, and a mismatch points at one kernel and one output.
"""

import numpy as np
import pytest

from fastrnn import _backends, _reference as reference
from helpers import (FAST_BACKENDS, GRAD_NAMES, assert_close, kernel_backward, kernel_forward,
                     make_kernel_args, run_kernels)

DTYPES = [np.float32, np.float64]

SHAPES = [  # T, B, I, H
    (1, 1, 1, 1),      # one of everything
    (1, 3, 5, 7),
    (6, 1, 4, 7),      # a single sequence
    (5, 4, 3, 1),
    (4, 3, 5, 129),    # H on both sides of a SIMD width
    (3, 7, 5, 129),
    (4, 13, 6, 130),   # edge rows
    (28, 5, 28, 16),
    (28, 1, 28, 129),
    (28, 100, 28, 128),  # the origin shape: 28 rows of 28 pixels, 128 units, batch 100
    (2, 50, 300, 33),  # T*B and I beyond one cache block of the GEMM
    (3, 9, 40, 650),   # I + H in three K blocks of the recurrent forward
]

shapes = pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "T{}-B{}-I{}-H{}".format(*s))
dtypes = pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)


def check_outputs(got, want, dtype, what=""):
    for name, g, w in zip(["y", "cT"], got, want):
        assert g.dtype == np.dtype(dtype) and g.flags.c_contiguous, f"{name}{what}"
        assert_close(g, w, "output", dtype, f"{name}{what}")


def check_grads(cell, got, want, dtype, what=""):
    for name, g, w in zip(GRAD_NAMES[cell], got, want):
        if w is None:
            assert g is None, f"{name}{what}"
            continue
        assert g.dtype == np.dtype(dtype), f"{name}{what}: dtype {g.dtype}, expected {dtype}"
        assert_close(g, w, "grad", dtype, f"{name}{what}")


@dtypes
@shapes
def test_forward_matches_the_reference(fast_kernels, threads, cell, shape, dtype):
    a = make_kernel_args(cell, *shape, dtype, seed=sum(shape))
    want, _ = kernel_forward(reference, cell, a, True)
    for training in (True, False):
        got, saved = kernel_forward(fast_kernels, cell, a, training)
        check_outputs(got, want, dtype, f" (training={training})")
        if not training:
            assert saved is None, "an inference forward keeps nothing"
        elif cell != "rnn":  # the RNN's backward reads only x and y (saved may be None)
            assert saved is not None, "a training forward keeps the gates for BPTT"


@pytest.mark.parametrize("with_dy", [True, False], ids=["dy", "dy_None"])
@dtypes
@shapes
def test_backward_matches_the_reference(fast_kernels, threads, cell, shape, dtype, with_dy):
    a = make_kernel_args(cell, *shape, dtype, seed=sum(shape))
    want_outputs, saved_ref = kernel_forward(reference, cell, a, True)
    want = kernel_backward(reference, cell, saved_ref, a, want_outputs, with_dy=with_dy)
    outputs, saved = kernel_forward(fast_kernels, cell, a, True)
    check_outputs(outputs, want_outputs, dtype)
    # need_dx=False second: the first backward must leave `saved` as it found it.
    for need_dx in (True, False):
        got = kernel_backward(fast_kernels, cell, saved, a, outputs, with_dy=with_dy,
                              need_dx=need_dx)
        check_grads(cell, got, want if need_dx else [None, *want[1:]], dtype,
                    f" (need_dx={need_dx})")


def test_lstm_wide_hidden(fast_kernels):
    """4H = 4120 columns: more than one column block of the GEMM."""
    a = make_kernel_args("lstm", 2, 3, 4, 1030, np.float32, seed=5)
    outputs, grads = run_kernels(fast_kernels, "lstm", a)
    want_outputs, want = run_kernels(reference, "lstm", a)
    check_outputs(outputs, want_outputs, np.float32)
    check_grads("lstm", grads, want, np.float32)


# ------------------------------------------------------- saturating inputs


@pytest.mark.parametrize("scale", [1e2, 1e4, 1e6, 1e30])
def test_saturating_inputs_stay_finite(fast_kernels, cell, scale):
    """Huge pre-activations saturate the gates cleanly: no inf/inf, no NaN.

    One input feature (I=1) keeps the outputs well-conditioned: a sum of
    several huge terms that cancel would differ in any two summation orders.
    Beyond 1e4 nearly every gate is saturated, the few gradients left come
    from 1 - h^2 of an h one ulp below 1, and two correct float32 codes
    disagree there; so only the outputs are compared.
    """
    a = make_kernel_args(cell, 6, 4, 1, 23, np.float32, seed=11, scale=scale)
    outputs, grads = run_kernels(fast_kernels, cell, a)
    for array in outputs + grads:
        assert np.all(np.isfinite(array))
    assert np.abs(outputs[0]).max() <= 1.0
    want_outputs, want = run_kernels(reference, cell, a)
    check_outputs(outputs, want_outputs, np.float32)
    if scale <= 1e4:
        check_grads(cell, grads, want, np.float32)


@dtypes
@pytest.mark.parametrize("scale", [30.0, 1e4, 1e30], ids=lambda s: f"x{s:g}")
@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_saturating_inputs_match_the_reference(backend, cell, scale, dtype):
    """|x| far beyond where every gate saturates, four inputs: the reference's gradients too.

    Four inputs of 1e4 that cancel leave float32 pre-activations whose rounding
    depends on how the products are summed: this runs on each backend's
    default kernel path, which agrees with the reference here (the compiled
    backend's generic path, without FMA, misses y by 2e-4 at 1e4).
    """
    kernels = _backends.get_backend(backend)
    a = make_kernel_args(cell, 6, 3, 4, 9, dtype, seed=2, scale=scale)
    outputs, grads = run_kernels(kernels, cell, a)
    want_outputs, want = run_kernels(reference, cell, a)
    for array in outputs + grads:
        assert np.all(np.isfinite(array))
    assert np.abs(outputs[0]).max() <= 1.0
    check_outputs(outputs, want_outputs, dtype)
    check_grads(cell, grads, want, dtype)


# ------------------------------------------------------------------ threads


def test_set_num_threads_beyond_the_cores_is_fine(fast_kernels, keep_thread_settings):
    a = make_kernel_args("lstm", 3, 2, 4, 5, np.float32)
    want, _ = kernel_forward(reference, "lstm", a, False)
    for n in (1, 64):  # more than the machine has is fine, not an error
        fast_kernels.set_num_threads(n)
        got, _ = kernel_forward(fast_kernels, "lstm", a, False)
        check_outputs(got, want, np.float32, f" ({n} threads)")
