"""The streaming step API gives what a whole-sequence forward gives."""

import numpy as np
import pytest

from helpers import BACKENDS, assert_close, flat_state, make_layer, make_problem


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("B", [1, 3])
def test_step_by_step_equals_forward(cell, backend, B):
    T, I, H = 6, 5, 9
    layer = make_layer(cell, I, H, backend=backend)
    x, state, _, _ = make_problem(cell, T, B, I, H)
    y, final = layer.forward(x, state)
    s = state
    for t in range(T):
        s = layer.step(x[:, t], s)
        assert_close(flat_state(s)[0][0], y[:, t], "output", np.float32, f"h_{t + 1}")
    for got, want in zip(flat_state(s), flat_state(final)):
        assert_close(got, want, "output", np.float32, "final state")
    layer.backward(np.ones_like(y))  # stepping left the forward's record alone


@pytest.mark.parametrize("backend", BACKENDS)
def test_step_rejects_bad_input(backend):
    layer = make_layer("lstm", 5, 9, backend=backend)
    with pytest.raises(ValueError, match=r"x_t must have shape \(B, 5\)"):
        layer.step(np.zeros((2, 1, 5), np.float32))
    with pytest.raises(ValueError, match=r"x_t must have shape"):
        layer.step(np.zeros((0, 5), np.float32))
    with pytest.raises(ValueError, match=r"h0 must have shape .* = \(1, 2, 9\)"):
        layer.step(np.zeros((2, 5), np.float32), (np.zeros((1, 9)), np.zeros((2, 9))))
