"""fastrnn.GRU: torch's parameters and results, the layer API, and clear errors."""

import numpy as np
import pytest

import fastrnn
from helpers import BACKENDS, assert_close, needs_torch, torch



KEYS = ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


def problem(B, T, I, H, *, batch_first=True, seed=0):
    """x in the layer's layout, a nonzero h0, dL/dy on every step and dL/dh_T."""
    rng = np.random.default_rng(seed)
    shape = (B, T) if batch_first else (T, B)
    x = rng.standard_normal(shape + (I,)).astype(np.float32)
    h0 = rng.uniform(-0.5, 0.5, (B, H)).astype(np.float32)
    dy = rng.standard_normal(shape + (H,)).astype(np.float32)
    dh_T = rng.standard_normal((B, H)).astype(np.float32)
    return x, h0, dy, dh_T


# -- torch's parameters and results ----------------------------------------------


@needs_torch
@pytest.mark.parametrize("batch_first", [True, False], ids=["batch_first", "time_major"])
@pytest.mark.parametrize("B,T,I,H", [(1, 1, 1, 1), (3, 7, 5, 33), (4, 28, 28, 129)],
                         ids=lambda v: str(v))
def test_a_torch_state_dict_loads_unchanged_and_gives_torchs_results(backend, B, T, I, H,
                                                                     batch_first):
    torch.manual_seed(H)
    module = torch.nn.GRU(I, H, batch_first=batch_first)
    layer = fastrnn.GRU(I, H, batch_first=batch_first, backend=backend)
    layer.load_state_dict({k: v.numpy() for k, v in module.state_dict().items()})
    x, h0, dy, dh_T = problem(B, T, I, H, batch_first=batch_first, seed=T)

    x_t = torch.tensor(x, requires_grad=True)
    h0_t = torch.tensor(h0[None], requires_grad=True)
    y_t, h_T_t = module(x_t, h0_t)
    ((y_t * torch.tensor(dy)).sum() + (h_T_t[0] * torch.tensor(dh_T)).sum()).backward()

    y, h_T = layer.forward(x, h0)
    dx, dh0 = layer.backward(dy, dh_T)
    f32 = np.float32
    assert_close(y, y_t.detach().numpy(), "output", f32, "y")
    assert_close(h_T, h_T_t.detach().numpy(), "output", f32, "h_T")   # (1, B, H), torch's
    assert_close(dx, x_t.grad.numpy(), "grad", f32, "dx")
    assert_close(dh0, h0_t.grad.numpy(), "grad", f32, "dh0")
    assert sorted(layer.grads) == sorted(KEYS)
    for key, param in module.named_parameters():
        assert_close(layer.grads[key], param.grad.numpy(), "grad", f32, key)


@needs_torch
def test_the_state_dict_loads_into_torch_unchanged(backend):
    layer = fastrnn.GRU(6, 10, backend=backend, seed=4)
    module = torch.nn.GRU(6, 10, batch_first=True)
    module.load_state_dict({k: torch.tensor(v) for k, v in layer.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((2, 5, 6)).astype(np.float32)
    y, h_T = layer.forward(x, training=False)
    with torch.no_grad():
        y_t, h_T_t = module(torch.tensor(x))
    assert_close(y, y_t.numpy(), "output", np.float32, "y")
    assert_close(h_T, h_T_t.numpy(), "output", np.float32, "h_T")


# -- the layer API -------------------------------------------------------------------


def test_shapes_keys_and_dtypes(backend):
    B, T, I, H = 3, 4, 5, 7
    for dtype in (np.float32, np.float64):
        layer = fastrnn.GRU(I, H, backend=backend, dtype=dtype, seed=0)
        assert layer.cell == "gru" and layer.gates == 3 and layer.backend == backend
        assert {k: v.shape for k, v in layer.state_dict().items()} == {
            "weight_ih_l0": (3 * H, I), "weight_hh_l0": (3 * H, H),
            "bias_ih_l0": (3 * H,), "bias_hh_l0": (3 * H,)}
        y, h_T = layer.forward(np.ones((B, T, I)))
        assert y.shape == (B, T, H) and h_T.shape == (1, B, H)
        assert y.dtype == dtype and h_T.dtype == dtype
        np.testing.assert_array_equal(h_T[0], y[:, -1])
        dx, dh0 = layer.backward(np.ones_like(y))
        assert dx.shape == (B, T, I) and dh0.shape == (1, B, H)
        assert {k: g.shape for k, g in layer.grads.items()} == \
            {k: v.shape for k, v in layer.state_dict().items()}
        assert all(g.dtype == dtype for g in layer.grads.values())
    assert repr(layer).startswith("GRU(5, 7, batch_first=True")


def test_init_is_torchs_and_the_same_seed_gives_the_same_weights_everywhere():
    H = 64
    k = 1 / np.sqrt(H)
    weights = [fastrnn.GRU(8, H, backend=name, seed=3).state_dict() for name in BACKENDS]
    for value in weights[0].values():
        assert value.dtype == np.float32
        assert k * 0.9 < np.abs(value).max() <= k   # U(-1/sqrt(H), 1/sqrt(H)), no forget bias
    for other in weights[1:]:
        for key, value in weights[0].items():
            np.testing.assert_array_equal(other[key], value)


def test_y_is_read_only_and_grads_are_not_accumulated(backend):
    layer = fastrnn.GRU(3, 4, backend=backend)
    x, h0, dy, dh_T = problem(2, 5, 3, 4)
    y, _ = layer.forward(x, h0)
    with pytest.raises(ValueError):
        y[0, 0, 0] = 1.0   # y is kept for BPTT
    layer.backward(dy, dh_T)
    first = {k: v.copy() for k, v in layer.grads.items()}
    layer.backward(dy, dh_T)
    for key, value in layer.grads.items():
        np.testing.assert_array_equal(value, first[key])


def test_nan_in_the_input_propagates_without_crashing(backend):
    layer = fastrnn.GRU(3, 4, backend=backend)
    x = np.zeros((2, 5, 3), np.float32)
    x[1, 2, 0] = np.nan
    y, _ = layer.forward(x)
    assert np.all(np.isfinite(y[0])) and np.isnan(y[1, 2:]).all()
    layer.backward(np.ones_like(y))   # documented: NaN flows through, nothing raises


# -- errors ------------------------------------------------------------------------


@pytest.mark.parametrize("x, error, match", [
    (np.zeros((5, 3), np.float32), ValueError, "3-D"),
    (np.zeros((2, 5, 4), np.float32), ValueError, "input_size=3"),
    (np.zeros((0, 5, 3), np.float32), ValueError, "at least one"),
    (np.zeros((2, 0, 3), np.float32), ValueError, "at least one"),
    (np.zeros((2, 5, 3), bool), TypeError, "x must"),
    (np.zeros((2, 5, 3), complex), TypeError, "x must"),
    (np.array([["a"]]), TypeError, "x must"),
], ids=["2-D", "wrong_I", "B0", "T0", "bool", "complex", "strings"])
def test_forward_refuses_bad_x(backend, x, error, match):
    with pytest.raises(error, match=match):
        fastrnn.GRU(3, 4, backend=backend).forward(x)


def test_forward_and_backward_refuse_bad_states_and_gradients(backend):
    layer = fastrnn.GRU(3, 4, backend=backend)
    x = np.zeros((2, 5, 3), np.float32)
    h = np.zeros((2, 4), np.float32)
    with pytest.raises(ValueError, match=r"h0 must have shape .* = \(1, 2, 4\)"):
        layer.forward(x, np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"h0 must have shape .* = \(1, 2, 4\)"):
        layer.forward(x, (h, h))   # a GRU has no cell state
    with pytest.raises(ValueError, match="forward"):
        layer.backward()
    layer.forward(x, training=False)
    with pytest.raises(ValueError, match="training=True"):
        layer.backward()
    layer.forward(x, h)
    with pytest.raises(ValueError, match=r"dy must have shape \(2, 5, 4\)"):
        layer.backward(np.zeros((5, 2, 4), np.float32))
    with pytest.raises(TypeError, match="dy must hold real numbers"):
        layer.backward(np.full((2, 5, 4), "x"))
    with pytest.raises(ValueError, match=r"dh_T"):
        layer.backward(None, np.zeros((2, 3)))


def test_load_state_dict_checks_keys_and_shapes_and_changes_nothing_on_failure(backend):
    layer = fastrnn.GRU(3, 4, backend=backend)
    good = layer.state_dict()
    missing = {k: v for k, v in good.items() if k != "bias_hh_l0"}
    with pytest.raises(ValueError, match="missing.*bias_hh_l0"):
        layer.load_state_dict(missing)
    with pytest.raises(ValueError, match="unexpected.*weight_ih_l1"):
        layer.load_state_dict(dict(good, weight_ih_l1=good["weight_ih_l0"]))
    # An LSTM's (4H, I) weights are not a GRU's (3H, I).
    with pytest.raises(ValueError, match="weight_ih_l0.*shape"):
        layer.load_state_dict(dict(good, weight_ih_l0=np.zeros((16, 3))))
    with pytest.raises(TypeError, match="mapping"):
        layer.load_state_dict([1, 2])
    for key, value in layer.state_dict().items():
        np.testing.assert_array_equal(value, good[key])


def test_constructor_refuses_bad_sizes_and_the_other_cells_options():
    with pytest.raises(ValueError, match="hidden_size"):
        fastrnn.GRU(3, 0)
    with pytest.raises(ValueError, match="input_size"):
        fastrnn.GRU(3.5, 4)
    with pytest.raises(ValueError, match="dtype"):
        fastrnn.GRU(3, 4, dtype=np.int32)
    with pytest.raises(ValueError, match="unknown backend 'gpu'"):
        fastrnn.GRU(3, 4, backend="gpu")
    for option in ("forget_bias", "nonlinearity"):   # the LSTM's and the RNN's
        with pytest.raises(TypeError, match=option):
            fastrnn.GRU(3, 4, **{option: 1.0})
