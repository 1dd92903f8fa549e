"""gru_forward / gru_backward: the reference against finite differences and
torch.nn.GRU, every backend against torch, bits, argument checks.

Every fast backend against the reference, the GRU with the other cells, is
test_kernels.py. The kernels are called directly (time-major arrays, both
biases), so a mismatch points at one kernel and one output. "every_step" puts
a loss on every y_t and on h_T; "h_T_only" passes dy=None, the classifier's case.
"""

import numpy as np
import pytest

from helpers import (BACKENDS, FAST_BACKENDS, GRAD_NAMES, assert_close, relative_error,
                     needs_torch, torch)
from fastrnn import _backends, _reference as reference


# T, B, I, H: one step, one sequence, H = 1, H off every SIMD width (7, 33, 129).
TORCH_SHAPES = [
    (1, 1, 1, 1),
    (1, 3, 5, 7),
    (6, 1, 4, 33),
    (5, 4, 3, 1),
    (4, 3, 5, 129),
    (28, 5, 28, 33),
]


def shape_id(shape):
    T, B, I, H = shape
    return f"B{B}-T{T}-H{H}"


def shapes(cases):
    return pytest.mark.parametrize("T,B,I,H", cases, ids=[shape_id(s) for s in cases])


losses = pytest.mark.parametrize("loss_on", ["every_step", "h_T_only"])


def make_args(T, B, I, H, dtype, *, seed=0, scale=1.0):
    """Time-major inputs, torch-like weights, a nonzero initial state, output grads."""
    rng = np.random.default_rng(seed)
    k = 1.0 / np.sqrt(H)

    def uniform(shape, bound):
        return rng.uniform(-bound, bound, shape).astype(dtype)

    return {
        "x": (scale * rng.standard_normal((T, B, I))).astype(dtype),
        "h0": uniform((B, H), 0.5),
        "w_ih": uniform((3 * H, I), k),
        "w_hh": uniform((3 * H, H), k),
        "b_ih": uniform((3 * H,), 2 * k),
        "b_hh": uniform((3 * H,), 2 * k),
        "dy": rng.standard_normal((T, B, H)).astype(dtype),
        "dhT": rng.standard_normal((B, H)).astype(dtype),
    }


def forward_args(a):
    return a["x"], a["h0"], a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"]


def run(kernels, a, loss_on="every_step", need_dx=True):
    """(y, grads) of one training forward and its backward on `kernels`."""
    y, saved = kernels.gru_forward(*forward_args(a), True)
    dy = a["dy"] if loss_on == "every_step" else None
    grads = kernels.gru_backward(saved, a["x"], a["h0"], a["w_ih"], a["w_hh"], y, dy,
                                 a["dhT"], need_dx)
    return y, grads


def check_all(actual, expected, kind, dtype, names):
    for got, want, what in zip(actual, expected, names):
        assert_close(got, want, kind, dtype, what)
        assert got.dtype == np.dtype(dtype), f"{what}: dtype {got.dtype}, expected {dtype}"


# ------------------------------------------ the reference against finite differences

EPS = 1e-6


def reference_loss(a, loss_on):
    y, _ = reference.gru_forward(*forward_args(a), False)
    total = float(np.sum(y[-1] * a["dhT"]))
    if loss_on == "every_step":
        total += float(np.sum(y * a["dy"]))
    return total


def numeric_grad(a, name, loss_on):
    array = a[name]
    grad = np.zeros_like(array)
    flat, out = array.reshape(-1), grad.reshape(-1)
    for k in range(flat.size):
        orig = flat[k]
        flat[k] = orig + EPS
        up = reference_loss(a, loss_on)
        flat[k] = orig - EPS
        down = reference_loss(a, loss_on)
        flat[k] = orig
        out[k] = (up - down) / (2 * EPS)
    return grad


@losses
@pytest.mark.parametrize("scale", [1.0, 4.0], ids=["x1", "x4"])
@shapes([(1, 1, 1, 1), (3, 2, 3, 4), (4, 3, 2, 5), (2, 2, 3, 33)])
def test_gru_reference_backward_matches_finite_differences(T, B, I, H, scale, loss_on):
    a = make_args(T, B, I, H, np.float64, seed=T + H, scale=scale)
    _, grads = run(reference, a, loss_on)
    for name, analytic in zip(GRAD_NAMES["gru"], grads):
        err = relative_error(analytic, numeric_grad(a, name[1:], loss_on))
        assert err <= 1e-6, f"{name}: {err:.3g}"


def test_gru_bias_gradients_differ_in_the_n_gate_only():
    a = make_args(4, 3, 2, 5, np.float64, seed=1)
    _, (_, _, _, _, db_ih, db_hh) = run(reference, a)
    H = 5
    np.testing.assert_allclose(db_ih[:2 * H], db_hh[:2 * H], rtol=1e-12)
    # r scales b_hn: the n gate's recurrent bias gets dhn = da_n * r, not da_n.
    assert np.all(np.abs(db_ih[2 * H:] - db_hh[2 * H:]) > 1e-3 * np.abs(db_ih[2 * H:]))


# ------------------------------------------ every backend against torch.nn.GRU


def torch_gru(a, dtype, loss_on):
    """y, h_T and every gradient from torch.nn.GRU holding the same weights."""
    T, B, I = a["x"].shape
    H = a["h0"].shape[1]
    module = torch.nn.GRU(I, H).to(torch.float64 if dtype == np.float64 else torch.float32)
    with torch.no_grad():
        for key, name in [("weight_ih_l0", "w_ih"), ("weight_hh_l0", "w_hh"),
                          ("bias_ih_l0", "b_ih"), ("bias_hh_l0", "b_hh")]:
            getattr(module, key).copy_(torch.from_numpy(a[name]))
    x = torch.tensor(a["x"], requires_grad=True)
    h0 = torch.tensor(a["h0"][None], requires_grad=True)
    y, h_T = module(x, h0)
    loss = (h_T[0] * torch.from_numpy(a["dhT"])).sum()
    if loss_on == "every_step":
        loss = loss + (y * torch.from_numpy(a["dy"])).sum()
    loss.backward()
    params = dict(module.named_parameters())
    grads = [x.grad, h0.grad[0]] + [params[k].grad for k in
                                    ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")]
    return y.detach().numpy(), h_T[0].detach().numpy(), [g.numpy() for g in grads]


# Saturating inputs against torch in float64 only: in float32 a gate of
# 1 - 1e-8 rounds to 1, so 1 - z and 1 - n^2 lose every digit in torch and in
# fastrnn alike, and the two miss the float64 gradient by ~1e-4 in different
# places. In float32 the saturating cases are checked against the reference,
# which rounds the same formulas the same way (test_gru_saturating).
TORCH_CASES = [(1.0, np.float32), (1.0, np.float64), (30.0, np.float64)]


@needs_torch
@losses
@pytest.mark.parametrize("scale,dtype", TORCH_CASES,
                         ids=[f"x{s:g}-{np.dtype(d).name}" for s, d in TORCH_CASES])
@shapes(TORCH_SHAPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_gru_matches_torch(backend, T, B, I, H, scale, dtype, loss_on):
    a = make_args(T, B, I, H, dtype, seed=B + H, scale=scale)
    y_ref, h_T_ref, grads_ref = torch_gru(a, dtype, loss_on)
    y, grads = run(_backends.get_backend(backend), a, loss_on)
    check_all([y, y[-1]], [y_ref, h_T_ref], "output", dtype, ["y", "h_T"])
    check_all(grads, grads_ref, "grad", dtype, GRAD_NAMES["gru"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_gru_kernels_give_the_same_bits_twice(backend):
    kernels = _backends.get_backend(backend)
    runs = []
    for _ in range(2):
        a = make_args(9, 17, 11, 70, np.float32, seed=5)   # fresh arrays each time
        y, grads = run(kernels, a)
        runs.append([y, *grads])
    for first, second in zip(*runs):
        np.testing.assert_array_equal(first, second)


# ------------------------------------------ argument checks


@pytest.mark.parametrize("backend", BACKENDS)
def test_gru_backward_without_saved_state_is_an_error(backend):
    kernels = _backends.get_backend(backend)
    a = make_args(3, 2, 4, 5, np.float32)
    y, saved = kernels.gru_forward(*forward_args(a), False)
    with pytest.raises(ValueError, match="training forward"):
        kernels.gru_backward(saved, a["x"], a["h0"], a["w_ih"], a["w_hh"], y, None,
                             a["dhT"], True)


# A GRU of T=2, B=3, I=2, H=1 with one argument of the wrong shape.
BROKEN = {"w_ih": np.zeros((3, 3), np.float32), "w_hh": np.zeros((4, 1), np.float32),
          "b_ih": np.zeros(0, np.float32), "b_hh": np.zeros(4, np.float32),
          "h0": np.zeros((2, 1), np.float32)}


@pytest.mark.parametrize("broken", sorted(BROKEN))
@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_gru_kernels_refuse_mismatched_shapes(backend, broken):
    kernels = _backends.get_backend(backend)
    a = make_args(2, 3, 2, 1, np.float32)
    a[broken] = BROKEN[broken]
    with pytest.raises(ValueError, match=broken):
        kernels.gru_forward(*forward_args(a), True)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_gru_backward_refuses_a_workspace_of_other_sizes(backend):
    kernels = _backends.get_backend(backend)
    a = make_args(2, 3, 2, 1, np.float32)
    _, saved = kernels.gru_forward(*forward_args(a), True)
    other = make_args(2, 5, 2, 1, np.float32)   # batch 5, not 3
    y, _ = kernels.gru_forward(*forward_args(other), False)
    with pytest.raises(ValueError, match="other sizes"):
        kernels.gru_backward(saved, other["x"], other["h0"], other["w_ih"], other["w_hh"], y,
                             None, other["dhT"], True)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_gru_backward_refuses_mismatched_gradients(backend):
    kernels = _backends.get_backend(backend)
    a = make_args(2, 3, 2, 4, np.float32)
    y, saved = kernels.gru_forward(*forward_args(a), True)
    bwd = (saved, a["x"], a["h0"], a["w_ih"], a["w_hh"], y)
    with pytest.raises(ValueError, match="dy"):
        kernels.gru_backward(*bwd, a["dy"][:1], a["dhT"], True)
    with pytest.raises(ValueError, match="dhT"):
        kernels.gru_backward(*bwd, None, a["dhT"][:, :2], True)
