"""The NumPy reference against central finite differences, in float64."""

import numpy as np
import pytest

from helpers import flat_state, make_layer, make_problem, numeric_gradient, relative_error

def loss(layer, x, state, dy, dstate):
    """A scalar that depends on every y_t and on the final state."""
    y, final = layer.forward(x, state)
    total = float(np.sum(y * dy))
    for s, ds in zip(flat_state(final), flat_state(dstate)):
        total += float(np.sum(s * ds))
    return total


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("T,B,I,H", [(1, 1, 1, 1), (3, 2, 3, 4), (4, 3, 2, 5)])
def test_reference_backward_matches_finite_differences(cell, T, B, I, H, batch_first):
    layer = make_layer(cell, I, H, backend="numpy", dtype=np.float64, batch_first=batch_first)
    x, state, dy, dstate = make_problem(cell, T, B, I, H, dtype=np.float64,
                                        batch_first=batch_first, seed=T + H)
    f = lambda: loss(layer, x, state, dy, dstate)  # noqa: E731

    layer.forward(x, state)
    dx, dstate0 = layer.backward(dy, dstate)
    analytic = {"x": dx, **{f"state{k}": d for k, d in enumerate(flat_state(dstate0))},
                **layer.grads}
    inputs = {"x": x, **{f"state{k}": s for k, s in enumerate(flat_state(state))}}

    worst = 0.0
    for name, array in inputs.items():
        err = relative_error(analytic[name], numeric_gradient(f, array))
        assert err <= 1e-6, f"{name}: {err:.3g}"
        worst = max(worst, err)
    for name, array in layer.parameters().items():
        if name == "bias_hh_l0":
            continue  # checked on its own below
        err = relative_error(layer.grads[name], numeric_gradient(f, array))
        assert err <= 1e-6, f"{name}: {err:.3g}"
        worst = max(worst, err)
    hh = layer.parameters()["bias_hh_l0"]
    err = relative_error(layer.grads["bias_hh_l0"], numeric_gradient(f, hh))
    assert err <= 1e-6, f"bias_hh_l0: {err:.3g}"
    print(f"max relative error against finite differences: {max(worst, err):.2e}")
