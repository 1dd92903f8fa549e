"""Each fast backend's raw kernels against the NumPy reference, on every kernel path.

The layer tests reach the kernels through fastrnn.RNN / LSTM / GRU; these call
the kernel contract directly (time-major arrays, b_ih and b_hh apart), so
awkward shapes, saturation, float64, dy=None, need_dx=False, reverse=, out=
and threads are hit on the Numba backend and on each ISA path of the compiled
one, for every cell, and a mismatch points at one kernel and one output.
"""

import numpy as np
import pytest

from fastrnn import _backends, _reference as reference
from helpers import (BACKENDS, FAST_BACKENDS, GATES, GRAD_NAMES, KERNEL_CELLS, assert_close,
                     kernel_backward, kernel_forward, make_kernel_args, run_kernels)

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
    (3, 9, 40, 650),   # I + H = 690 values a row: a long K for the one-pass recurrent tile
]

shapes = pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "T{}-B{}-I{}-H{}".format(*s))
dtypes = pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
cells = pytest.mark.parametrize("cell", KERNEL_CELLS)


def result_names(cell):
    """The names of run_kernels' outputs and gradients, in order."""
    return ["y", "cT"][:2 if cell == "lstm" else 1] + GRAD_NAMES[cell]


def check_outputs(got, want, dtype, what=""):
    for name, g, w in zip(["y", "cT"], got, want):
        assert g.dtype == np.dtype(dtype), f"{name}{what}"
        assert_close(g, w, "output", dtype, f"{name}{what}")


def check_grads(cell, got, want, dtype, what=""):
    for name, g, w in zip(GRAD_NAMES[cell], got, want):
        if w is None:
            assert g is None, f"{name}{what}"
            continue
        assert g.dtype == np.dtype(dtype), f"{name}{what}: dtype {g.dtype}, expected {dtype}"
        assert_close(g, w, "grad", dtype, f"{name}{what}")


# The shape matrix and the saturating inputs run the conftest's cells (rnn, lstm, gru):
# the ReLU RNN is the tanh RNN's driver and cell with another activation, one that
# does not saturate; it takes every other test here.


@dtypes
@shapes
def test_forward_matches_the_reference(fast_kernels, threads, cell, shape, dtype):
    a = make_kernel_args(cell, *shape, dtype, seed=sum(shape))
    want, _ = kernel_forward(reference, cell, a, True)
    for training in (True, False):
        got, saved = kernel_forward(fast_kernels, cell, a, training)
        assert got[0].flags.c_contiguous, "a y of its own is C-contiguous"
        check_outputs(got, want, dtype, f" (training={training})")
        if training:
            assert saved is not None, "a training forward keeps x and the cell's state"
        else:
            assert saved is None, "an inference forward keeps nothing"


@pytest.mark.parametrize("with_dy", [True, False], ids=["dy", "dy_None"])
@dtypes
@shapes
def test_backward_matches_the_reference(fast_kernels, threads, cell, shape, dtype, with_dy):
    a = make_kernel_args(cell, *shape, dtype, seed=sum(shape))
    want_outputs, want = run_kernels(reference, cell, a, with_dy=with_dy)
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


@pytest.mark.parametrize("backend", BACKENDS)
@cells
def test_bias_gradients_are_two_arrays_that_differ_only_in_the_gru_n_gate(backend, cell):
    a = make_kernel_args(cell, 4, 3, 2, 5, np.float64, seed=1)
    _, grads = run_kernels(_backends.get_backend(backend), cell, a)
    db_ih, db_hh = grads[-2:]
    assert db_ih is not db_hh and not np.shares_memory(db_ih, db_hh)
    H = 5
    apart = slice(2 * H, 3 * H) if cell == "gru" else slice(0, 0)
    summed = np.ones(GATES[cell] * H, bool)
    summed[apart] = False
    np.testing.assert_allclose(db_ih[summed], db_hh[summed], rtol=1e-12)
    # r scales b_hn: the n gate's recurrent bias gets dhn = da_n * r, not da_n.
    assert np.all(np.abs(db_ih[apart] - db_hh[apart]) > 1e-3 * np.abs(db_ih[apart]))


# ------------------------------------------------------------- reverse= and out=

# T, B, I, H: one step, one sequence, odd sizes on both sides of a SIMD width.
DIRECTION_SHAPES = [(1, 1, 1, 1), (1, 3, 5, 7), (6, 1, 4, 9), (5, 4, 3, 1), (7, 5, 6, 33),
                    (4, 13, 9, 130)]
direction_shapes = pytest.mark.parametrize("shape", DIRECTION_SHAPES,
                                           ids=lambda s: "T{}-B{}-I{}-H{}".format(*s))


def joined_halves(T, B, H, dtype):
    """A (T, B, 2H) array, filled with a marker, and its two (T, B, H) halves."""
    joined = np.full((T, B, 2 * H), 7.0, dtype)
    return joined, joined[..., :H], joined[..., H:]


@dtypes
@direction_shapes
@cells
def test_a_reverse_run_matches_the_reference(fast_kernels, cell, shape, dtype):
    a = make_kernel_args(cell, *shape, dtype, seed=sum(shape) + 1)
    for with_dy in (True, False):
        want_outputs, want = run_kernels(reference, cell, a, with_dy=with_dy, reverse=True)
        outputs, grads = run_kernels(fast_kernels, cell, a, with_dy=with_dy, reverse=True)
        check_outputs(outputs, want_outputs, dtype, " (reverse)")
        check_grads(cell, grads, want, dtype, " (reverse)")


@pytest.mark.parametrize("backend", BACKENDS)
@direction_shapes
@cells
def test_a_reverse_run_is_a_forward_run_on_x_reversed_in_time(backend, cell, shape):
    """y, dy and dx in x's time order: reversed, they are those of the forward run on
    x[::-1]; the states and weight gradients are the same. The same bits on the
    compiled backend, which reads x backwards through its strides."""
    kernels = _backends.get_backend(backend)
    a = make_kernel_args(cell, *shape, np.float32, seed=sum(shape) + 2)
    flipped = dict(a, x=np.ascontiguousarray(a["x"][::-1]),
                   dy=np.ascontiguousarray(a["dy"][::-1]))
    outputs, grads = run_kernels(kernels, cell, a, reverse=True)
    want_outputs, want = run_kernels(kernels, cell, flipped)
    got = [outputs[0][::-1], *outputs[1:], grads[0][::-1], *grads[1:]]
    for name, g, w in zip(result_names(cell), got, [*want_outputs, *want]):
        if backend == "cpp":
            np.testing.assert_array_equal(g, w, err_msg=name)
        else:
            assert_close(g, w, "output" if name in ("y", "cT") else "grad", np.float32, name)


@dtypes
@direction_shapes
@cells
def test_out_takes_y_in_one_half_of_a_joined_array(fast_kernels, cell, shape, dtype):
    """Forward writes y into out= (here one half of a (T, B, 2H) array, forward and
    reverse as a bidirectional layer runs them) and returns it; backward reads y and dy
    through the same strides."""
    a = make_kernel_args(cell, *shape, dtype, seed=sum(shape) + 3)
    T, B, _, H = shape
    joined, first, second = joined_halves(T, B, H, dtype)
    dy_joined, dy_first, dy_second = joined_halves(T, B, H, dtype)
    dy_first[...], dy_second[...] = a["dy"], 0.5 * a["dy"]
    for reverse, out, dy in ((False, first, dy_first), (True, second, dy_second)):
        want_outputs, want = run_kernels(reference, cell, dict(a, dy=np.array(dy)),
                                         reverse=reverse)
        outputs, saved = kernel_forward(fast_kernels, cell, a, reverse=reverse, out=out)
        assert outputs[0] is out
        check_outputs(outputs, want_outputs, dtype, f" (reverse={reverse})")
        grads = kernel_backward(fast_kernels, cell, saved, dict(a, dy=dy), outputs,
                                reverse=reverse)
        check_grads(cell, grads, want, dtype, f" (reverse={reverse})")
    assert not np.any(joined == 7.0), "out= writes every value of its half"
    np.testing.assert_array_equal(dy_joined[..., :H], a["dy"], "backward leaves dy alone")


@cells
def test_out_of_a_packed_batch_takes_rows_with_gaps(fast_kernels, cell):
    """A packed y (N, H) may be one half of an (N, 2H) array too."""
    a = make_kernel_args(cell, 3, 3, 2, 5, np.float32, seed=4)
    batch_sizes = np.array([3, 2, 1])
    packed = dict(a, x=np.concatenate([a["x"][t, :n] for t, n in enumerate(batch_sizes)]),
                  dy=np.concatenate([a["dy"][t, :n] for t, n in enumerate(batch_sizes)]))
    want_outputs, want = run_kernels(reference, cell, packed, batch_sizes=batch_sizes)
    joined, dy_joined = np.zeros((6, 10), np.float32), np.zeros((6, 10), np.float32)
    dy_joined[:, 5:] = packed["dy"]
    outputs, saved = kernel_forward(fast_kernels, cell, packed, batch_sizes=batch_sizes,
                                    out=joined[:, 5:])
    check_outputs(outputs, want_outputs, np.float32)
    grads = kernel_backward(fast_kernels, cell, saved, dict(packed, dy=dy_joined[:, 5:]),
                            outputs, batch_sizes=batch_sizes)
    check_grads(cell, grads, want, np.float32)


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
    backend's generic path, without FMA, misses y by 2e-4 at 1e4). (The ReLU
    does not saturate: its outputs grow with x.)
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


# ------------------------------------------------------ bits and threads


@pytest.mark.parametrize("layout", ["full", "reverse", "packed"])
@cells
@pytest.mark.parametrize("backend", BACKENDS)
def test_kernels_give_the_same_bits_twice(backend, cell, layout):
    kernels = _backends.get_backend(backend)
    options = {"reverse": layout == "reverse"}
    runs = []
    for _ in range(2):
        a = make_kernel_args(cell, 12, 17, 11, 70, np.float32, seed=5)  # fresh arrays each time
        if layout == "packed":  # 17 lengths from 12 down to 3
            lengths = np.sort(np.random.default_rng(1).integers(3, 13, 17))[::-1]
            lengths[0] = 12
            batch_sizes = np.array([np.sum(lengths > t) for t in range(12)])
            for name in ("x", "dy"):
                a[name] = np.concatenate([a[name][t, :n] for t, n in enumerate(batch_sizes)])
            options = {"batch_sizes": batch_sizes}
        outputs, grads = run_kernels(kernels, cell, a, **options)
        runs.append(outputs + grads)
    for name, first, second in zip(result_names(cell), *runs):
        np.testing.assert_array_equal(first, second, err_msg=name)


def test_set_num_threads_beyond_the_cores_is_fine(fast_kernels, keep_thread_settings):
    a = make_kernel_args("lstm", 3, 2, 4, 5, np.float32)
    want, _ = kernel_forward(reference, "lstm", a, False)
    for n in (1, 64):  # more than the machine has is fine, not an error
        fast_kernels.set_num_threads(n)
        got, _ = kernel_forward(fast_kernels, "lstm", a, False)
        check_outputs(got, want, np.float32, f" ({n} threads)")
