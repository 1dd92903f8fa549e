"""Every backend against torch.nn.RNN / LSTM / GRU with copied weights: the layers, and
the raw kernels of every cell."""

import numpy as np
import pytest

from fastrnn import _backends
from helpers import (BACKENDS, CELL_VARIANTS, GRAD_NAMES, KERNEL_CELLS, assert_close,
                     flat_state, kernel_backward, kernel_forward, make_kernel_args, make_layer,
                     make_problem, torch_kernel_results)

torch = pytest.importorskip("torch")

SHAPES = [  # T, B, I, H
    (1, 1, 1, 1),
    (1, 3, 5, 7),
    (6, 1, 4, 7),
    (5, 4, 3, 1),
    (4, 3, 5, 129),
    (28, 5, 28, 16),
]


def torch_run(cell, module, x, state, dy, dstate, batch_first):
    x_t = torch.tensor(x, requires_grad=True)
    states = [torch.tensor(s, requires_grad=True) for s in flat_state(state)]
    y, final = module(x_t, tuple(states) if cell == "lstm" else states[0])
    finals = flat_state(final) if cell == "lstm" else [final]
    loss = (y * torch.tensor(dy)).sum()
    for s, ds in zip(finals, flat_state(dstate)):
        loss = loss + (s * torch.tensor(ds)).sum()
    loss.backward()
    grads = {k: p.grad.numpy() for k, p in module.named_parameters()}
    return (y.detach().numpy(), [s.detach().numpy() for s in finals], x_t.grad.numpy(),
            [s.grad.numpy() for s in states], grads)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch_first", [True, False], ids=["batch_first", "time_major"])
@pytest.mark.parametrize("T,B,I,H", SHAPES, ids=lambda v: str(v))
def test_matches_torch(cell, backend, T, B, I, H, batch_first):
    torch.manual_seed(T * 1000 + H)
    module = getattr(torch.nn, CELL_VARIANTS[cell][0])(I, H, batch_first=batch_first)
    layer = make_layer(cell, I, H, backend=backend, batch_first=batch_first)
    layer.load_state_dict({k: v.detach().numpy() for k, v in module.state_dict().items()})
    x, state, dy, dstate = make_problem(cell, T, B, I, H, batch_first=batch_first, seed=B + H)

    y_ref, finals_ref, dx_ref, dstates_ref, grads_ref = torch_run(
        cell, module, x, state, dy, dstate, batch_first)
    y, final = layer.forward(x, state)
    dx, dstate0 = layer.backward(dy, dstate)

    f32 = np.float32
    assert_close(y, y_ref, "output", f32, "y")
    for k, (s, s_ref) in enumerate(zip(flat_state(final), finals_ref)):
        assert_close(s, s_ref, "output", f32, f"final state {k}")
    assert_close(dx, dx_ref, "grad", f32, "dx")
    for k, (d, d_ref) in enumerate(zip(flat_state(dstate0), dstates_ref)):
        assert_close(d, d_ref, "grad", f32, f"dstate0[{k}]")
    for key, g_ref in grads_ref.items():
        assert_close(layer.grads[key], g_ref, "grad", f32, key)


# T, B, I, H: one step, one sequence, H = 1, H off every SIMD width (7, 33, 129).
KERNEL_SHAPES = [(1, 1, 1, 1), (1, 3, 5, 7), (6, 1, 4, 33), (5, 4, 3, 1), (4, 3, 5, 129),
                 (28, 5, 28, 33)]

# Saturating inputs against torch in float64 only: in float32 a gate of
# 1 - 1e-8 rounds to 1, so 1 - z and 1 - n^2 lose every digit in torch and in
# fastrnn alike, and the two miss the float64 gradient by ~1e-4 in different
# places. In float32 the saturating cases are checked against the reference,
# which rounds the same formulas the same way (test_kernels.py).
KERNEL_CASES = [(1.0, np.float32), (1.0, np.float64), (30.0, np.float64)]


@pytest.mark.parametrize("loss_on", ["every_step", "h_T_only"])
@pytest.mark.parametrize("scale,dtype", KERNEL_CASES,
                         ids=[f"x{s:g}-{np.dtype(d).name}" for s, d in KERNEL_CASES])
@pytest.mark.parametrize("T,B,I,H", KERNEL_SHAPES,
                         ids=[f"B{B}-T{T}-H{H}" for T, B, I, H in KERNEL_SHAPES])
@pytest.mark.parametrize("cell", KERNEL_CELLS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_kernels_match_torch(backend, cell, T, B, I, H, scale, dtype, loss_on):
    """A loss on every y_t and on the final states ("every_step"), or on the final
    states alone (dy=None, the classifier's case)."""
    a = make_kernel_args(cell, T, B, I, H, dtype, seed=B + H, scale=scale)
    with_dy = loss_on == "every_step"
    want = torch_kernel_results(cell, a, with_dy=with_dy)
    kernels = _backends.get_backend(backend)
    outputs, saved = kernel_forward(kernels, cell, a)
    grads = kernel_backward(kernels, cell, saved, a, outputs, with_dy=with_dy)
    got = {"y": outputs[0], "hT": outputs[0][-1], **dict(zip(["cT"], outputs[1:])),
           **dict(zip(GRAD_NAMES[cell], grads))}
    for name, value in got.items():
        kind = "output" if name in ("y", "hT", "cT") else "grad"
        assert value.dtype == np.dtype(dtype), f"{name}: dtype {value.dtype}"
        assert_close(value, want[name], kind, dtype, name)


@pytest.mark.parametrize("backend", BACKENDS)
def test_torch_init_distribution_and_forget_bias(backend):
    import fastrnn
    H = 64
    lstm = fastrnn.LSTM(8, H, backend=backend, seed=3)
    k = 1 / np.sqrt(H)
    for name, p in lstm.parameters().items():
        assert p.dtype == np.float32
        values = p.copy()
        if name == "bias_ih_l0":
            values[H:2 * H] -= 1.0  # forget_bias=1.0 is added to the f slice
        assert np.abs(values).max() <= k
        assert np.abs(values).max() > 0.9 * k
    same = fastrnn.LSTM(8, H, backend=backend, seed=3).state_dict()
    for key, value in lstm.state_dict().items():
        np.testing.assert_array_equal(value, same[key])
    plain = fastrnn.LSTM(8, H, backend=backend, seed=3, forget_bias=0.0).state_dict()
    np.testing.assert_allclose(lstm.bias_ih[H:2 * H] - plain["bias_ih_l0"][H:2 * H], 1.0)
