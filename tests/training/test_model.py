"""SequenceClassifier: gradients against torch (recurrent layer + Linear + cross_entropy)."""

import numpy as np
import pytest

import fastrnn
from helpers import BACKENDS, assert_close, torch_classifier, torch_loss_and_grads

torch = pytest.importorskip("torch")


def batch(B, T, I, C, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((B, T, I), dtype=np.float32), rng.integers(0, C, B)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("B,T,I,H,C", [(1, 1, 1, 1, 2), (5, 7, 3, 9, 4), (16, 28, 28, 32, 10)],
                         ids=lambda v: str(v))
def test_loss_and_grads_match_torch(cell, backend, B, T, I, H, C):
    model = fastrnn.SequenceClassifier(I, H, C, cell=cell, backend=backend, seed=1)
    x, y = batch(B, T, I, C)
    loss, grads = model.loss_and_grads(x, y)
    expected_loss, expected = torch_loss_and_grads(*torch_classifier(model), x, y)
    assert loss == pytest.approx(expected_loss, rel=1e-5, abs=1e-6)
    assert sorted(grads) == sorted(model.parameters()) == sorted(expected)
    for key in expected:
        assert_close(grads[key], expected[key], "grad", np.float32, key)


@pytest.mark.parametrize("backend", BACKENDS)
def test_predict_matches_torch_and_any_batch_size(cell, backend, monkeypatch):
    monkeypatch.setattr("fastrnn.model.EVAL_CHUNK", 4)   # exercise the chunking
    model = fastrnn.SequenceClassifier(6, 8, 5, cell=cell, backend=backend, seed=2)
    x, y = batch(11, 9, 6, 5, seed=3)
    rnn, fc = torch_classifier(model)
    with torch.no_grad():
        logits = fc(rnn(torch.tensor(x))[0][:, -1]).numpy()
    np.testing.assert_array_equal(model.predict(x), logits.argmax(axis=1))
    np.testing.assert_array_equal(model.predict(x[3:4]), logits[3:4].argmax(axis=1))
    loss, acc = model.evaluate(x, y)
    expected_loss = float(torch.nn.functional.cross_entropy(torch.tensor(logits), torch.tensor(y)))
    assert loss == pytest.approx(expected_loss, rel=1e-5)
    assert acc == pytest.approx(np.mean(logits.argmax(axis=1) == y))


def test_parameters_are_live_and_layer_matches_seeded_layer():
    model = fastrnn.SequenceClassifier(3, 4, 2, seed=7, backend="numpy")
    params = model.parameters()
    assert sorted(params) == ["bias_hh_l0", "bias_ih_l0", "fc.bias", "fc.weight",
                              "weight_hh_l0", "weight_ih_l0"]
    assert params["fc.weight"].shape == (2, 4) and params["fc.bias"].shape == (2,)
    layer = fastrnn.LSTM(3, 4, seed=7, backend="numpy")
    for k, v in layer.state_dict().items():
        np.testing.assert_array_equal(params[k], v)
    params["fc.bias"][:] = 5.0
    assert np.all(model.fc_bias == 5.0)
    again = fastrnn.SequenceClassifier(3, 4, 2, seed=7, backend="numpy")
    np.testing.assert_array_equal(again.fc_weight, model.fc_weight)


@pytest.mark.parametrize("backend", BACKENDS)
def test_training_steps_reduce_the_loss(cell, backend):
    model = fastrnn.SequenceClassifier(4, 16, 3, cell=cell, seed=0, backend=backend)
    assert model.layer.cell == cell and model.config()["cell"] == cell
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 32)
    x = rng.normal(0, 0.1, (32, 6, 4)).astype(np.float32)
    x[np.arange(32), 0, y] += 1.0   # the class is written in the first step: needs memory
    opt = fastrnn.optim.Adam(model.parameters(), lr=0.02)
    first, _ = model.loss_and_grads(x, y)
    for _ in range(60):
        loss, grads = model.loss_and_grads(x, y)
        opt.step(grads)
    assert loss < 0.2 * first
    assert np.mean(model.predict(x) == y) == 1.0


@pytest.mark.parametrize("init", ["orthogonal", "identity"])
def test_recurrent_init_options(cell, init):
    model = fastrnn.SequenceClassifier(3, 5, 2, cell=cell, recurrent_init=init, seed=0,
                                       backend="numpy")
    w = model.parameters()["weight_hh_l0"]
    for gate in range(w.shape[0] // 5):
        block = w[gate * 5:(gate + 1) * 5].astype(np.float64)
        np.testing.assert_allclose(block @ block.T, np.eye(5), atol=1e-6)


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="cell"):
        fastrnn.SequenceClassifier(3, 4, 2, cell="transformer")
    with pytest.raises(ValueError, match="num_classes"):
        fastrnn.SequenceClassifier(3, 4, 1)
    with pytest.raises(ValueError, match="recurrent_init"):
        fastrnn.SequenceClassifier(3, 4, 2, recurrent_init="zeros")
    model = fastrnn.SequenceClassifier(3, 4, 2, backend="numpy")
    x = np.zeros((2, 5, 3), np.float32)
    with pytest.raises(ValueError, match="labels"):
        model.loss_and_grads(x, np.array([0, 2]))
    with pytest.raises(ValueError, match="shape"):
        model.loss_and_grads(x, np.array([0]))
    with pytest.raises(TypeError, match="integers"):
        model.loss_and_grads(x, np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="features"):
        model.predict(np.zeros((2, 5, 4)))
    with pytest.raises(ValueError, match="keys"):
        model.load_state_dict({"fc.bias": np.zeros(2)})
