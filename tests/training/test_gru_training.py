"""SequenceClassifier(cell="gru"): gradients against torch, training, checkpoints,
and the gradient-flow diagnostics of a GRU."""

import json

import numpy as np
import pytest

import fastrnn
from conftest import BACKENDS, assert_close
from fastrnn.checkpoint import read_checkpoint, save_checkpoint
from fastrnn.diagnostics import diagnose, hidden_state_gradients
from fastrnn.optim import Adam

try:
    import torch
except ImportError:
    torch = None

needs_torch = pytest.mark.skipif(
    torch is None, reason="torch is not installed (pip install torch==2.13.0 to compare)")


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


def batch(B, T, I, C, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((B, T, I), dtype=np.float32), rng.integers(0, C, B)


def torch_classifier(model):
    """torch.nn.GRU and Linear holding the model's weights."""
    gru = torch.nn.GRU(model.input_size, model.hidden_size, batch_first=True)
    fc = torch.nn.Linear(model.hidden_size, model.num_classes)
    with torch.no_grad():
        for key, param in gru.named_parameters():
            param.copy_(torch.tensor(model.parameters()[key]))
        fc.weight.copy_(torch.tensor(model.fc_weight))
        fc.bias.copy_(torch.tensor(model.fc_bias))
    return gru, fc


# -- the model -----------------------------------------------------------------------


@needs_torch
@pytest.mark.parametrize("B,T,I,H,C", [(1, 1, 1, 1, 2), (5, 7, 3, 33, 4), (16, 28, 28, 32, 10)],
                         ids=lambda v: str(v))
def test_loss_and_grads_match_torch(backend, B, T, I, H, C):
    model = fastrnn.SequenceClassifier(I, H, C, cell="gru", backend=backend, seed=1)
    x, y = batch(B, T, I, C)
    loss, grads = model.loss_and_grads(x, y)
    gru, fc = torch_classifier(model)
    out, _ = gru(torch.tensor(x))
    expected_loss = torch.nn.functional.cross_entropy(fc(out[:, -1]), torch.tensor(y))
    expected_loss.backward()
    expected = {k: p.grad.numpy() for k, p in gru.named_parameters()}
    expected.update({"fc.weight": fc.weight.grad.numpy(), "fc.bias": fc.bias.grad.numpy()})
    assert loss == pytest.approx(expected_loss.item(), rel=1e-5, abs=1e-6)
    assert sorted(grads) == sorted(model.parameters()) == sorted(expected)
    for key, value in expected.items():
        assert_close(grads[key], value, "grad", np.float32, key)


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
    resumed = saved.build_model(backend=backend)
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


def torch_state_gradients(model, x, y):
    """dL/dh_t for t = 1..T from torch, one step at a time with retain_grad."""
    gru, fc = torch_classifier(model)
    state, hs = None, []
    for t in range(x.shape[1]):
        _, state = gru(torch.tensor(x[:, t:t + 1]), state)
        state.retain_grad()
        hs.append(state)
    loss = torch.nn.functional.cross_entropy(fc(hs[-1][0]), torch.tensor(y))
    loss.backward()
    return loss.item(), [h.grad[0].numpy() for h in hs]


@needs_torch
@pytest.mark.parametrize("B,T,I,H", [(1, 1, 2, 3), (3, 6, 4, 5), (8, 28, 28, 16)],
                         ids=lambda v: str(v))
def test_state_gradients_match_torch(backend, B, T, I, H):
    model = fastrnn.SequenceClassifier(I, H, 4, cell="gru", backend=backend, seed=3)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    y = rng.integers(0, 4, B)
    loss, dh, dc, states = hidden_state_gradients(model, x, y)
    expected_loss, expected_dh = torch_state_gradients(model, x, y)
    assert loss == pytest.approx(expected_loss, rel=1e-5)
    assert dc is None and len(dh) == len(states) == T
    for t in range(T):
        assert_close(dh[t], expected_dh[t], "grad", np.float32, f"dL/dh_{t + 1}")


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
