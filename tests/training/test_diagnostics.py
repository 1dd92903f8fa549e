"""dL/dh_t from the BPTT kernels against torch's h_t.retain_grad(); saturation."""

import numpy as np
import pytest

import fastrnn
from fastrnn.diagnostics import diagnose, hidden_state_gradients
from helpers import BACKENDS, assert_close, torch_classifier

torch = pytest.importorskip("torch")


def torch_state_gradients(model, x, y):
    """dL/dh_t (and dL/dc_t) for t = 1..T, unrolling torch's module one step at a time."""
    rnn, fc = torch_classifier(model)
    xt = torch.tensor(x)
    state, hs, cs = None, [], []
    for t in range(x.shape[1]):
        _, state = rnn(xt[:, t:t + 1], state)
        for s in state if isinstance(state, tuple) else (state,):
            s.retain_grad()
        if isinstance(state, tuple):
            hs.append(state[0])
            cs.append(state[1])
        else:
            hs.append(state)
    loss = torch.nn.functional.cross_entropy(fc(hs[-1][0]), torch.tensor(y))
    loss.backward()
    dh = [h.grad[0].numpy() for h in hs]
    # c_T does not reach the loss: torch leaves its grad unset.
    dc = [c.grad[0].numpy() if c.grad is not None else np.zeros_like(dh[0]) for c in cs]
    return loss.item(), dh, dc or None


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("B,T,I,H", [(1, 1, 2, 3), (3, 6, 4, 5), (8, 28, 28, 16)],
                         ids=lambda v: str(v))
def test_state_gradients_match_torch(cell, backend, B, T, I, H):
    model = fastrnn.SequenceClassifier(I, H, 4, cell=cell, backend=backend, seed=3)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    y = rng.integers(0, 4, B)
    loss, dh, dc, states = hidden_state_gradients(model, x, y)
    expected_loss, expected_dh, expected_dc = torch_state_gradients(model, x, y)
    assert loss == pytest.approx(expected_loss, rel=1e-5)
    assert len(dh) == T and len(states) == T
    for t in range(T):
        assert_close(dh[t], expected_dh[t], "grad", np.float32, f"dL/dh_{t + 1}")
        if cell == "lstm":
            assert_close(dc[t], expected_dc[t], "grad", np.float32, f"dL/dc_{t + 1}")
    record = diagnose(model, x, y, step=7)
    expected_norms = [np.linalg.norm(g.astype(np.float64)) for g in expected_dh]
    np.testing.assert_allclose(record["grad_norm"], expected_norms, rtol=1e-4)
    assert record["step"] == 7


def test_diagnostics_do_not_disturb_training():
    model = fastrnn.SequenceClassifier(3, 4, 2, backend="numpy", seed=0)
    x = np.random.default_rng(1).random((5, 6, 3), dtype=np.float32)
    y = np.array([0, 1, 1, 0, 1])
    before = model.state_dict()
    loss, grads = model.loss_and_grads(x, y)
    diagnose(model, x, y)
    for key, value in before.items():
        np.testing.assert_array_equal(model.parameters()[key], value)
    again, grads_again = model.loss_and_grads(x, y)
    assert again == loss
    for key in grads:
        np.testing.assert_array_equal(grads_again[key], grads[key])


def test_saturation(cell):
    if cell == "gru":
        pytest.skip("with every weight 5 the GRU's update gate is 1 and holds h at h0 = 0, so h "
                    "never saturates: test_gru_training.py checks the GRU's record")
    model = fastrnn.SequenceClassifier(2, 6, 3, cell=cell, backend="numpy", seed=0)
    x = np.ones((4, 5, 2), np.float32)
    y = np.zeros(4, np.int64)
    calm = diagnose(model, 0.01 * x, y)
    assert max(calm["saturated"]) == 0.0 and max(calm["h_saturated"]) == 0.0
    for value in model.layer.parameters().values():
        value[...] = 5.0   # every pre-activation large and positive
    hot = diagnose(model, x, y)
    # The LSTM's cell grows by about one per step, so tanh(c_t) saturates from t = 3.
    assert hot["saturated"][-1] == 1.0 and hot["h_saturated"][-1] == 1.0
    assert len(hot["saturated"]) == 5
    assert ("cell_grad_norm" in hot) == (cell == "lstm")
    # Saturated units pass almost no gradient back through time.
    if cell == "rnn":
        assert hot["grad_norm"][0] < 1e-6 * hot["grad_norm"][-1]
