"""The NumPy reference against central finite differences, in float64: through a layer,
and its raw kernels."""

import numpy as np
import pytest

from fastrnn import _reference
from helpers import (GRAD_NAMES, KERNEL_CELLS, final_state_grads, flat_state, kernel_forward,
                     make_kernel_args, make_layer, make_problem, numeric_gradient,
                     relative_error, run_kernels)


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


# The raw kernels: every argument's gradient, the two biases apart (the GRU's differ
# in the n gate), with a loss on every y_t and on the final states, or on the final
# states alone (dy=None), at inputs that saturate some gates (x4).

def kernel_loss(cell, a, with_dy):
    """A scalar of every y_t (with_dy) and the final states of the reference forward."""
    outputs, _ = kernel_forward(_reference, cell, a, False)
    finals = [outputs[0][-1]] + outputs[1:]
    total = sum(float(np.sum(s * ds)) for s, ds in zip(finals, final_state_grads(cell, a)))
    if with_dy:
        total += float(np.sum(outputs[0] * a["dy"]))
    return total


@pytest.mark.parametrize("loss_on", ["every_step", "h_T_only"])
@pytest.mark.parametrize("scale", [1.0, 4.0], ids=["x1", "x4"])
@pytest.mark.parametrize("T,B,I,H", [(1, 1, 1, 1), (3, 2, 3, 4), (4, 3, 2, 5), (2, 2, 3, 33)])
@pytest.mark.parametrize("cell", KERNEL_CELLS)
def test_reference_kernels_match_finite_differences(cell, T, B, I, H, scale, loss_on):
    a = make_kernel_args(cell, T, B, I, H, np.float64, seed=T + H, scale=scale)
    with_dy = loss_on == "every_step"
    _, grads = run_kernels(_reference, cell, a, with_dy=with_dy)
    for name, analytic in zip(GRAD_NAMES[cell], grads):
        numeric = numeric_gradient(lambda: kernel_loss(cell, a, with_dy), a[name[1:]])
        err = relative_error(analytic, numeric)
        assert err <= 1e-6, f"{name}: {err:.3g}"
