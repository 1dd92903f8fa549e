"""The first step from a zero initial state multiplies x_t alone (recurrence.h):
the same bits as the full product, and NaN weights still reach the outputs."""

import numpy as np
import pytest

import fastrnn

from helpers import BACKENDS, FAST_BACKENDS

CELLS = list(fastrnn.cells.CELLS)
PRECISIONS = ["fp32", "bf16"]


def layer_of(cell, backend, precision, I=7, H=37):
    return getattr(fastrnn, fastrnn.cells.CELLS[cell].layer)(
        I, H, backend=backend, precision=precision, batch_first=False, seed=2)


def negative_zero_state(cell, B, H):
    """A zero state that is not all +0.0 bits: the kernels take the full product."""
    h0 = np.full((1, B, H), -0.0, np.float32)
    return (h0, np.zeros_like(h0)) if cell == "lstm" else h0


def flat(state):
    return np.concatenate([np.ravel(s) for s in state]) if isinstance(state, tuple) \
        else np.ravel(state)


# B = 20: at least 8 rows a thread on two threads, where the kernels skip.
@pytest.mark.parametrize("backend", FAST_BACKENDS or ["numpy"])
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("cell", CELLS)
def test_a_zero_initial_state_gives_the_bits_of_the_full_first_product(cell, precision,
                                                                       backend, threads):
    T, B, I, H = 3, 20, 7, 37
    x = np.random.default_rng(5).uniform(-2, 2, (T, B, I)).astype(np.float32)
    dy = np.random.default_rng(6).standard_normal((T, B, H)).astype(np.float32)
    skipped, full = layer_of(cell, backend, precision), layer_of(cell, backend, precision)
    for training in (False, True):
        y_skip, state_skip = skipped.forward(x, training=training)
        y_full, state_full = full.forward(x, negative_zero_state(cell, B, H), training=training)
        assert np.array_equal(y_skip, y_full)
        assert np.array_equal(flat(state_skip), flat(state_full))
    dx_skip, _ = skipped.backward(dy)
    dx_full, _ = full.backward(dy)
    assert np.array_equal(dx_skip, dx_full)
    for name, grad in skipped.grads.items():
        assert np.array_equal(grad, full.grads[name]), name


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("cell", CELLS)
def test_an_infinite_recurrent_weight_makes_the_first_step_nan_from_a_zero_state(
        cell, precision, backend, threads):
    T, B, I, H = 2, 20, 7, 37
    x = np.random.default_rng(7).uniform(-2, 2, (T, B, I)).astype(np.float32)
    layer, reference = layer_of(cell, backend, precision), layer_of(cell, "numpy", precision)
    weights = layer.state_dict()
    key = next(k for k in weights if k.startswith("weight_hh"))
    weights[key] = weights[key].copy()
    weights[key][1, 3] = np.inf  # 0 * inf is NaN: unit 1 of the first gate, every row
    layer.load_state_dict(weights)
    reference.load_state_dict(weights)
    with np.errstate(invalid="ignore"):  # numpy's matmul warns of its NaN
        y, _ = layer.forward(x, training=False)
        y_ref, _ = reference.forward(x, training=False)
    assert np.isnan(y_ref[0]).any()
    assert np.array_equal(np.isnan(y[0]), np.isnan(y_ref[0]))
