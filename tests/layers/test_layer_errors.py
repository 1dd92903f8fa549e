"""Bad input to the layers of every cell raises ValueError or TypeError naming the problem."""

import numpy as np
import pytest

import fastrnn
from fastrnn.cells import CELLS
from helpers import BACKENDS, make_layer


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


def layer_of(cell, backend, **kw):
    return getattr(fastrnn, CELLS[cell].layer)(3, 4, backend=backend, **kw)


def x_ok(B=2, T=5, I=3):
    return np.zeros((B, T, I), np.float32)


def pair_if_two(cell, h, c):
    """The state argument of `cell` from its h (and c, for a cell that carries one)."""
    return (h, c) if len(CELLS[cell].states) == 2 else h


@pytest.mark.parametrize("x, match", [
    (np.zeros((5, 3), np.float32), "3-D"),
    (np.zeros((1, 2, 5, 3), np.float32), "3-D"),
    (np.zeros((2, 5, 4), np.float32), "input_size=3"),
    (np.zeros((0, 5, 3), np.float32), "at least one"),
    (np.zeros((2, 0, 3), np.float32), "at least one"),
], ids=["2-D", "4-D", "wrong_I", "B0", "T0"])
def test_forward_rejects_bad_x(cell, backend, x, match):
    with pytest.raises(ValueError, match=match):
        layer_of(cell, backend).forward(x)


@pytest.mark.parametrize("x", [np.array([["a"]]), np.zeros((2, 5, 3), bool),
                               np.zeros((2, 5, 3), complex), object()],
                         ids=["strings", "bool", "complex", "object"])
def test_forward_rejects_non_real_x(cell, backend, x):
    with pytest.raises(TypeError, match="x must"):
        layer_of(cell, backend).forward(x)


def test_forward_rejects_bad_state(cell, backend):
    layer = layer_of(cell, backend)
    h = np.zeros((2, 4), np.float32)
    with pytest.raises(ValueError, match=r"h0 must have shape .* = \(1, 2, 4\)"):
        layer.forward(x_ok(), pair_if_two(cell, np.zeros((3, 4)), h))
    with pytest.raises(ValueError, match=r"h0 must have shape .* = \(1, 2, 4\)"):
        layer.forward(x_ok(), pair_if_two(cell, np.zeros((2, 4, 1)), h))
    if len(CELLS[cell].states) == 2:
        with pytest.raises(ValueError, match=r"c0 must have shape .* = \(1, 2, 4\)"):
            layer.forward(x_ok(), (h, np.zeros((2, 5))))
        with pytest.raises(TypeError, match=r"pair \(h, c\)"):
            layer.forward(x_ok(), h)
    else:   # no cell state: a pair is one array of the wrong shape
        with pytest.raises(ValueError, match=r"h0 must have shape .* = \(1, 2, 4\)"):
            layer.forward(x_ok(), (h, h))


def test_backward_before_forward(cell, backend):
    with pytest.raises(ValueError, match="forward"):
        layer_of(cell, backend).backward()


def test_backward_after_inference_forward(cell, backend):
    layer = layer_of(cell, backend)
    layer.forward(x_ok(), training=False)
    with pytest.raises(ValueError, match="training=True"):
        layer.backward()


def test_backward_rejects_bad_dy_and_dstate(cell, backend):
    layer = layer_of(cell, backend)
    layer.forward(x_ok())
    with pytest.raises(ValueError, match=r"dy must have shape \(2, 5, 4\)"):
        layer.backward(np.zeros((5, 2, 4), np.float32))
    with pytest.raises(TypeError, match="dy must hold real numbers"):
        layer.backward(np.full((2, 5, 4), "x"))
    with pytest.raises(ValueError, match=r"dh_T"):
        layer.backward(None, pair_if_two(cell, np.zeros((2, 3)), None))
    if len(CELLS[cell].states) == 2:
        with pytest.raises(TypeError, match="dstate"):
            layer.backward(None, np.zeros((2, 4)))


def test_state_dict_keys_and_shapes_are_checked(backend, cell):
    layer = make_layer(cell, 3, 4, backend=backend)
    good = layer.state_dict()
    missing = dict(good)
    del missing["weight_hh_l0"]
    with pytest.raises(ValueError, match="missing.*weight_hh_l0"):
        layer.load_state_dict(missing)
    extra = dict(good, weight_ih_l1=good["weight_ih_l0"])
    with pytest.raises(ValueError, match="unexpected.*weight_ih_l1"):
        layer.load_state_dict(extra)
    wrong = dict(good, bias_hh_l0=np.zeros(5))
    with pytest.raises(ValueError, match="bias_hh_l0.*shape"):
        layer.load_state_dict(wrong)
    # another cell's weights: G*H rows where this cell has others
    other_G = next(c.G for c in CELLS.values() if c.G != CELLS[cell].G)
    with pytest.raises(ValueError, match="weight_ih_l0.*shape"):
        layer.load_state_dict(dict(good, weight_ih_l0=np.zeros((other_G * 4, 3))))
    with pytest.raises(TypeError, match="mapping"):
        layer.load_state_dict([1, 2])
    # a failed load leaves the parameters as they were
    for key, value in layer.state_dict().items():
        np.testing.assert_array_equal(value, good[key])


@pytest.mark.parametrize("kwargs, match", [
    (dict(input_size=0, hidden_size=4), "input_size"),
    (dict(input_size=3, hidden_size=-1), "hidden_size"),
    (dict(input_size=3.5, hidden_size=4), "input_size"),
    (dict(input_size=3, hidden_size=4, dtype=np.int32), "dtype"),
    (dict(input_size=3, hidden_size=4, backend="gpu"), "unknown backend 'gpu'"),
])
def test_constructor_rejects_bad_arguments(cell, kwargs, match):
    with pytest.raises(ValueError, match=match):
        getattr(fastrnn, CELLS[cell].layer)(**kwargs)


def test_constructor_refuses_the_other_cells_options(cell):
    others = {option for other in CELLS.values() for option in other.layer_options}
    for option in sorted(others - set(CELLS[cell].layer_options)):
        with pytest.raises(TypeError, match=option):
            layer_of(cell, "numpy", **{option: 1.0})


def test_rnn_nonlinearity_is_tanh_or_relu():
    with pytest.raises(ValueError, match="'tanh' or 'relu'"):
        fastrnn.RNN(3, 4, nonlinearity="sigmoid")


def test_unknown_backend_from_environment(monkeypatch):
    monkeypatch.setenv("FASTRNN_BACKEND", "nope")
    with pytest.raises(ValueError, match="unknown backend 'nope'"):
        fastrnn.LSTM(3, 4)


def test_set_num_threads_validates():
    n = fastrnn.get_num_threads()
    with pytest.raises(ValueError):
        fastrnn.set_num_threads(0)
    with pytest.raises(ValueError):
        fastrnn.set_num_threads(1.5)
    fastrnn.set_num_threads(1)
    assert fastrnn.get_num_threads() == 1
    fastrnn.set_num_threads(n)


def test_returned_y_is_protected_and_grads_not_accumulated(cell, backend):
    layer = layer_of(cell, backend)
    y, _ = layer.forward(x_ok() + 0.5)
    with pytest.raises(ValueError):
        y[0, 0, 0] = 1.0  # y is kept for BPTT
    dy = np.ones(y.shape, np.float32)
    layer.backward(dy)
    first = {k: v.copy() for k, v in layer.grads.items()}
    layer.backward(dy)
    for key, value in layer.grads.items():
        np.testing.assert_array_equal(value, first[key])


def test_float64_and_integer_inputs_are_converted(cell, backend):
    layer = layer_of(cell, backend)
    y32, _ = layer.forward(x_ok().astype(np.float64))
    y_int, _ = layer.forward(np.zeros((2, 5, 3), np.int64))
    assert y32.dtype == np.float32 and y_int.dtype == np.float32
    np.testing.assert_array_equal(y32, y_int)


# -- weights changed between forward and backward ------------------------------------


def change_by_load_state_dict(layer, grads):
    layer.load_state_dict(type(layer)(3, 4, 2, seed=9).state_dict())


def change_by_an_adam_step(layer, grads):
    fastrnn.optim.Adam(layer.parameters(), lr=0.01).step(grads)


def change_by_an_in_place_write(layer, grads):
    layer.parameters()["weight_ih_l1"][2, 1] += 1e-3   # one element, a little


def gradients_of_a_fresh_layer(layer, state_dict, x, dy):
    """(dx, grads) of a new layer of `layer`'s kind holding `state_dict`."""
    fresh = type(layer)(3, 4, 2, backend=layer.backend)
    fresh.load_state_dict(state_dict)
    fresh.forward(x)
    dx, _ = fresh.backward(dy)
    return dx, fresh.grads


@pytest.mark.parametrize("change", [change_by_load_state_dict, change_by_an_adam_step,
                                    change_by_an_in_place_write])
def test_backward_differentiates_its_forward_with_the_weights_that_forward_read(
        backend, cell, change):
    x = np.random.default_rng(0).standard_normal((2, 5, 3)).astype(np.float32)
    dy = np.ones((2, 5, 4), np.float32)
    layer = {"rnn": fastrnn.RNN, "lstm": fastrnn.LSTM, "gru": fastrnn.GRU}[cell](
        3, 4, 2, backend=backend, seed=1)
    layer.forward(x)
    layer.backward(dy)
    before = {key: value.copy() for key, value in layer.state_dict().items()}
    layer.forward(x)
    change(layer, dict(layer.grads))
    assert any(not np.array_equal(before[key], value)
               for key, value in layer.state_dict().items() if key.startswith("weight_"))
    dx, _ = layer.backward(dy)
    # The gradients of the forward that ran, with the weights it read (0.2 mixed its
    # activations with the new weights: off by 0.15 to 1.6 relative).
    expected_dx, expected = gradients_of_a_fresh_layer(layer, before, x, dy)
    np.testing.assert_array_equal(dx, expected_dx)
    for key, value in expected.items():
        np.testing.assert_array_equal(layer.grads[key], value)
    # A new forward reads the new weights.
    layer.forward(x)
    dx, _ = layer.backward(dy)
    expected_dx, expected = gradients_of_a_fresh_layer(layer, layer.state_dict(), x, dy)
    np.testing.assert_array_equal(dx, expected_dx)
    for key, value in expected.items():
        np.testing.assert_array_equal(layer.grads[key], value)


def test_a_bias_changed_before_backward_leaves_its_gradients_alone(backend, cell):
    # backward reads the weight matrices (its forward's copy), and the activations
    # the forward kept already hold what the biases did.
    x = np.random.default_rng(0).standard_normal((2, 5, 3)).astype(np.float32)
    layer = {"rnn": fastrnn.RNN, "lstm": fastrnn.LSTM, "gru": fastrnn.GRU}[cell](
        3, 4, backend=backend, seed=1)
    layer.forward(x)
    layer.backward(np.ones((2, 5, 4), np.float32))
    expected = dict(layer.grads)
    layer.forward(x)
    layer.parameters()["bias_hh_l0"][...] += 1.0
    layer.backward(np.ones((2, 5, 4), np.float32))
    for key, value in expected.items():
        np.testing.assert_array_equal(layer.grads[key], value)


def test_a_training_loop_of_forward_backward_and_step_learns(backend, cell):
    x = np.random.default_rng(0).standard_normal((4, 6, 3)).astype(np.float32)
    y = np.array([0, 1, 2, 1])
    model = fastrnn.SequenceClassifier(3, 5, 3, cell=cell, num_layers=2, dropout=0.2,
                                       backend=backend, seed=0)
    optimizer = fastrnn.optim.Adam(model.parameters(), lr=0.05)
    losses = []
    for _ in range(4):
        loss, grads = model.loss_and_grads(x, y)   # forward and backward
        optimizer.step(grads)                      # then the weights change
        losses.append(loss)
    layer = model.layer
    for _ in range(2):   # and the layer alone, a backward after each forward
        layer.forward(x)
        layer.backward(np.ones((4, 6, 5), np.float32))
        layer.backward(np.ones((4, 6, 5), np.float32))   # twice: the same weights
        optimizer.step({**layer.grads, "fc.weight": np.zeros_like(model.fc_weight),
                        "fc.bias": np.zeros_like(model.fc_bias)})
    assert losses[-1] < losses[0]
