"""The streaming step API gives what a whole-sequence forward gives, and leaves the
forward's record for backward alone."""

import numpy as np
import pytest

from helpers import BACKENDS, assert_close, flat_state, make_layer, make_problem


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("B", [1, 3])
def test_step_by_step_equals_forward_in_every_state(cell, backend, B):
    T, I, H = 6, 5, 9
    layer = make_layer(cell, I, H, backend=backend)
    x, state, _, _ = make_problem(cell, T, B, I, H)
    y, final = layer.forward(x, state)
    s = state
    for t in range(T):
        s = layer.step(x[:, t], s)
        assert_close(flat_state(s)[0][0], y[:, t], "output", np.float32, f"h_{t + 1}")
        # every state of the cell (the LSTM's c too) is that of a forward over x[:, :t+1]
        _, upto_t = make_layer(cell, I, H, backend=backend).forward(x[:, :t + 1], state,
                                                                    training=False)
        for k, (got, want) in enumerate(zip(flat_state(s), flat_state(upto_t))):
            assert_close(got, want, "output", np.float32, f"state {k} after step {t + 1}")
    for got, want in zip(flat_state(s), flat_state(final)):
        assert_close(got, want, "output", np.float32, "final state")


@pytest.mark.parametrize("backend", BACKENDS)
def test_steps_between_forward_and_backward_change_no_gradient(cell, backend):
    T, B, I, H = 5, 3, 4, 7
    x, state, dy, dstate = make_problem(cell, T, B, I, H, seed=1)

    def forward_and_backward(steps_between):
        layer = make_layer(cell, I, H, backend=backend)
        layer.forward(x, state)
        s = None
        for t in range(steps_between):
            s = layer.step(x[:, t] * 2.0, s)   # other inputs, other states
        dx, dstate0 = layer.backward(dy, dstate)
        return [dx, *flat_state(dstate0), *layer.grads.values()]

    for got, want in zip(forward_and_backward(T), forward_and_backward(0)):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("backend", BACKENDS)
def test_step_rejects_bad_input(backend):
    layer = make_layer("lstm", 5, 9, backend=backend)
    with pytest.raises(ValueError, match=r"x_t must have shape \(B, 5\)"):
        layer.step(np.zeros((2, 1, 5), np.float32))
    with pytest.raises(ValueError, match=r"x_t must have shape"):
        layer.step(np.zeros((0, 5), np.float32))
    with pytest.raises(ValueError, match=r"h0 must have shape .* = \(1, 2, 9\)"):
        layer.step(np.zeros((2, 5), np.float32), (np.zeros((1, 9)), np.zeros((2, 9))))
