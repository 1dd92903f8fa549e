"""dL/dh_t from the BPTT kernels against torch's h_t.retain_grad(); saturation."""

import numpy as np
import pytest

import fastrnn
from fastrnn.cells import CELLS
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
    assert (dc is not None) == (len(CELLS[cell].states) == 2)
    for t in range(T):
        assert_close(dh[t], expected_dh[t], "grad", np.float32, f"dL/dh_{t + 1}")
        if dc is not None:   # a cell state (the LSTM's c)
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


def test_saturation_is_recorded_as_the_table_of_cells_says(cell):
    saturation = CELLS[cell].saturation
    model = fastrnn.SequenceClassifier(2, 6, 3, cell=cell, backend="numpy", seed=0)
    x = np.ones((4, 5, 2), np.float32)
    y = np.zeros(4, np.int64)
    calm = diagnose(model, 0.01 * x, y, step=3)
    assert calm["step"] == 3 and len(calm["saturated"]) == len(calm["h_saturated"]) == 5
    assert max(calm["saturated"]) == 0.0 and max(calm["h_saturated"]) == 0.0
    assert ("cell_grad_norm" in calm) == (len(CELLS[cell].states) == 2)
    if saturation.mean_gate:   # at torch's init every pre-activation is small: gates near 1/2
        assert all(0.3 < g < 0.7 for g in calm[saturation.mean_gate[1]])
    for value in model.layer.parameters().values():
        value[...] = 5.0   # every pre-activation large and positive
    hot = diagnose(model, x, y)
    assert len(hot["saturated"]) == 5
    if saturation.mean_gate:
        # The GRU's update gate is 1: it holds h at h0 = 0, so h itself never saturates,
        # while its candidate does at every step.
        assert min(hot["saturated"]) == 1.0 and min(hot[saturation.mean_gate[1]]) > 0.999
    else:
        # The LSTM's cell grows by about one per step, so tanh(c_t) saturates from t = 3.
        assert hot["saturated"][-1] == 1.0 and hot["h_saturated"][-1] == 1.0
    if saturation.of == "h":   # no path around the saturated tanh: no gradient gets back
        assert hot["grad_norm"][0] < 1e-6 * hot["grad_norm"][-1]


@pytest.mark.parametrize("cell", [name for name, cell in CELLS.items()
                                  if cell.saturation.mean_gate])
def test_a_gate_around_the_saturated_tanh_carries_the_gradient_while_open(cell):
    gate, key = CELLS[cell].saturation.mean_gate
    model = fastrnn.SequenceClassifier(2, 6, 3, cell=cell, backend="numpy", seed=0)
    x = np.ones((4, 12, 2), np.float32)
    y = np.zeros(4, np.int64)
    for value in model.layer.parameters().values():
        value[...] = 5.0
    carried = diagnose(model, x, y)
    # The GRU's z near 1: dL/dh_{t-1} = z dL/dh_t, however saturated n is.
    assert min(carried["saturated"]) == 1.0
    assert carried["grad_norm"][0] > 0.99 * carried["grad_norm"][-1]
    # The gate near 0 as well: nothing passes, as in a saturated vanilla RNN.
    H, g = model.hidden_size, CELLS[cell].gates.index(gate)
    model.layer.bias_ih[g * H:(g + 1) * H] = -100.0
    blocked = diagnose(model, x, y)
    assert min(blocked["saturated"]) == 1.0 and max(blocked[key]) < 1e-6
    assert blocked["grad_norm"][0] < 1e-6 * blocked["grad_norm"][-1]
