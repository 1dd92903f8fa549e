"""The Numba backend's gate activations against float64 libm, value by value.

The kernel tests compare whole outputs at 1e-5 (float32), which a tanh a
hundred ulp off would still pass; these pin the activations themselves: float32
within 3 ulp over every magnitude, float64 within 5e-14 relative.
"""

import numpy as np
import pytest

numba = pytest.importorskip("numba")
_numba = pytest.importorskip("fastrnn._numba")
expit = pytest.importorskip("scipy.special").expit


@numba.njit(error_model="numpy")
def _apply_tanh(x, out):
    for i in range(x.size):
        out[i] = _numba._tanh(x[i])


@numba.njit(error_model="numpy")
def _apply_sigmoid(x, out):
    for i in range(x.size):
        out[i] = _numba._sigmoid(x[i])


ACTIVATIONS = {"tanh": (_apply_tanh, np.tanh), "sigmoid": (_apply_sigmoid, expit)}
SMALLEST_NORMAL32 = float(np.finfo(np.float32).tiny)


def sweep(dtype):
    """Both signs of float32 values from 1e-13 to 1e38, a few hundred thousand of
    them spread evenly over the bit patterns (so over every binade), and 0."""
    bits = np.arange(0x2B000000, 0x7E000000, 5003, dtype=np.uint32)
    magnitudes = bits.view(np.float32)
    return np.concatenate([[0.0], magnitudes, -magnitudes]).astype(dtype)


def run(apply, x):
    out = np.empty_like(x)
    apply(x, out)
    return out


def ulps32(got, want):
    """|got - want| in units of the float32 spacing at want (subnormal spacing below)."""
    spacing = np.spacing(np.abs(want).astype(np.float32)).astype(np.float64)
    return np.abs(got.astype(np.float64) - want) / np.maximum(spacing, 2.0 ** -149)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_float32_activation_is_within_3_ulp_everywhere(name):
    apply, exact = ACTIVATIONS[name]
    x = sweep(np.float32)
    got = run(apply, x)
    want = exact(x.astype(np.float64))
    assert got.dtype == np.float32
    normal = np.abs(want) >= SMALLEST_NORMAL32
    worst = ulps32(got[normal], want[normal])
    assert worst.max() <= 3, f"{name}({x[normal][worst.argmax()]}) is {worst.max():.2f} ulp off"
    # Results below the least normal float32 (sigmoid far below 0) may be flushed to 0.
    assert np.all(np.abs(got[~normal] - want[~normal]) < SMALLEST_NORMAL32)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_float64_activation_is_within_5e_14_relative_everywhere(name):
    apply, exact = ACTIVATIONS[name]
    x = sweep(np.float64)
    got = run(apply, x)
    want = exact(x)
    assert got.dtype == np.float64
    meaningful = np.abs(want) >= 1e-40   # the float64 sigmoid clamps its argument at -110
    relative = np.abs(got - want)[meaningful] / np.abs(want)[meaningful]
    assert relative.max() <= 5e-14
    assert np.all(np.abs(got - want)[~meaningful] < 1e-40)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activations_saturate_and_pass_nan_through(dtype):
    x = np.array([np.inf, -np.inf, 1e30, -1e30, np.nan], dtype=dtype)
    np.testing.assert_array_equal(run(_apply_tanh, x), [1, -1, 1, -1, np.nan])
    # float64's sigmoid ends at sigmoid(-110), 2e-48, where its argument is clamped.
    np.testing.assert_allclose(run(_apply_sigmoid, x), [1, 0, 1, 0, np.nan], rtol=0, atol=1e-47)
