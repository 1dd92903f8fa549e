"""SequenceClassifier(cell="gru"): training, checkpoints, and what the gradient-flow
diagnostics record for a GRU (the loss and gradients against torch are tested for
every cell in test_model.py, their dL/dh_t against torch in test_diagnostics.py)."""

import json

import numpy as np
import pytest

import fastrnn
from helpers import BACKENDS
from fastrnn.checkpoint import read_checkpoint, save_checkpoint
from fastrnn.diagnostics import diagnose
from fastrnn.optim import Adam


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


def batch(B, T, I, C, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((B, T, I), dtype=np.float32), rng.integers(0, C, B)


# -- the model -----------------------------------------------------------------------


def trained(backend, steps, seed=0):
    """A small GRU classifier after `steps` Adam steps on one fixed batch, with its
    optimizer and the losses along the way."""
    model = fastrnn.SequenceClassifier(5, 12, 3, cell="gru", backend=backend, seed=seed)
    optimizer = Adam(model.parameters(), lr=0.05)
    x, y = batch(24, 9, 5, 3, seed=seed)
    losses = []
    for _ in range(steps):
        loss, grads = model.loss_and_grads(x, y)
        optimizer.step(grads)
        losses.append(loss)
    return model, optimizer, losses, (x, y)


def test_a_gru_classifier_learns_a_batch(backend):
    model, _, losses, (x, y) = trained(backend, steps=40)
    assert model.layer.cell == "gru" and model.config()["cell"] == "gru"
    assert losses[-1] < 0.2 * losses[0]   # 24 random labels, memorised
    assert np.mean(model.predict(x) == y) > 0.9


def test_checkpoint_round_trips_and_training_continues_where_it_stopped(backend, tmp_path):
    model, optimizer, _, (x, y) = trained(backend, steps=3)
    path = tmp_path / "gru.npz"
    save_checkpoint(path, model, optimizer, {"step": 3})

    loaded = fastrnn.load(path, backend=backend)
    assert loaded.config() == model.config() and loaded.cell == "gru"
    for key, value in model.parameters().items():
        np.testing.assert_array_equal(loaded.parameters()[key], value)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))

    # One more step from the file gives the bits one more step in memory gives.
    saved = read_checkpoint(path)
    resumed = fastrnn.SequenceClassifier.from_checkpoint(saved, backend=backend)
    resumed_optimizer = Adam(resumed.parameters())
    resumed_optimizer.load_state_dict(saved.optimizer_state)
    for m, opt in ((model, optimizer), (resumed, resumed_optimizer)):
        opt.step(m.loss_and_grads(x, y)[1])
    for key, value in model.parameters().items():
        np.testing.assert_array_equal(resumed.parameters()[key], value)


def test_a_gru_checkpoint_is_not_read_as_another_cell(tmp_path):
    model, _, _, _ = trained("numpy", steps=1)
    path = tmp_path / "gru.npz"
    model.save(path)
    arrays = dict(np.load(path))
    # The same arrays under an LSTM's config: the (3H, I) weights must be refused.
    config = model.config()
    config["cell"] = "lstm"
    arrays["config"] = np.frombuffer(json.dumps(config).encode(), np.uint8)
    np.savez(tmp_path / "relabelled.npz", **arrays)
    with pytest.raises(ValueError, match="weight_ih_l0"):
        fastrnn.load(tmp_path / "relabelled.npz")


# -- diagnostics ------------------------------------------------------------------------


def gate_slice(model, gate):
    H = model.hidden_size
    index = "rzn".index(gate)
    return slice(index * H, (index + 1) * H)


def test_the_record_holds_candidate_saturation_and_the_update_gate():
    model = fastrnn.SequenceClassifier(2, 6, 3, cell="gru", backend="numpy", seed=0)
    x = np.ones((4, 5, 2), np.float32)
    y = np.zeros(4, np.int64)
    calm = diagnose(model, 0.01 * x, y, step=3)
    assert calm["step"] == 3 and len(calm["saturated"]) == len(calm["update_gate"]) == 5
    assert max(calm["saturated"]) == 0.0 and max(calm["h_saturated"]) == 0.0
    assert "cell_grad_norm" not in calm
    # At torch's init every pre-activation is small: z is near 1/2.
    assert all(0.3 < z < 0.7 for z in calm["update_gate"])
    for value in model.layer.parameters().values():
        value[...] = 5.0   # every pre-activation large and positive: n and z saturate
    hot = diagnose(model, x, y)
    assert min(hot["saturated"]) == 1.0 and min(hot["update_gate"]) > 0.999


def test_the_update_gate_carries_the_gradient_past_a_saturated_candidate():
    model = fastrnn.SequenceClassifier(2, 6, 3, cell="gru", backend="numpy", seed=0)
    x = np.ones((4, 12, 2), np.float32)
    y = np.zeros(4, np.int64)
    for value in model.layer.parameters().values():
        value[...] = 5.0
    carried = diagnose(model, x, y)
    # z near 1: dL/dh_{t-1} = z dL/dh_t, however saturated n is.
    assert min(carried["saturated"]) == 1.0
    assert carried["grad_norm"][0] > 0.99 * carried["grad_norm"][-1]
    # z near 0 as well: nothing passes, as in a saturated vanilla RNN.
    model.layer.bias_ih[gate_slice(model, "z")] = -100.0
    blocked = diagnose(model, x, y)
    assert min(blocked["saturated"]) == 1.0 and max(blocked["update_gate"]) < 1e-6
    assert blocked["grad_norm"][0] < 1e-6 * blocked["grad_norm"][-1]
