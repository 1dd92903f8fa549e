"""SequenceClassifier over stacked, bidirectional and variable-length layers: loss, gradients
and logits against torch, dropout, configuration and checkpoints (0.1's too), diagnostics of
the last layer in both directions."""

import json

import numpy as np
import pytest

import fastrnn
from fastrnn.checkpoint import CheckpointError
from fastrnn.diagnostics import diagnose, hidden_state_gradients
from helpers import BACKENDS, assert_close
from classifier_twins import fastrnn_keys, torch_classifier

torch = pytest.importorskip("torch")

STACKS = [(1, False), (2, True), (3, False)]
I, C = 4, 3


def stack_id(stack):
    return f"L{stack[0]}-{'bi' if stack[1] else 'uni'}"


def batch(B, T, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((B, T, I)).astype(np.float32), rng.integers(0, C, B)


def torch_twin(model):
    """torch's classifier (classifier_twins) holding `model`'s weights."""
    stack = (model.layer.num_layers, model.layer.bidirectional)
    _, twin = torch_classifier(model.cell, I, model.hidden_size, C, stack)
    twin.load_state_dict({("rnn." + k if not k.startswith("fc.") else k): torch.tensor(v)
                          for k, v in model.parameters().items()})
    return twin


def torch_logits(twin, x, lengths=None):
    """The twin's logits; with lengths through a PackedSequence."""
    x = torch.tensor(x)
    if lengths is None:
        return twin(x)
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, torch.tensor(lengths),
                                                     batch_first=True, enforce_sorted=False)
    _, state = twin.rnn(packed)
    h_n = state[0] if isinstance(state, tuple) else state
    D = 2 if twin.rnn.bidirectional else 1
    return twin.fc(torch.cat(list(h_n[-D:]), dim=1))


@pytest.mark.parametrize("lengths", [None, [7, 1, 4, 7, 2]], ids=["padded", "lengths"])
@pytest.mark.parametrize("stack", STACKS, ids=stack_id)
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_loss_grads_and_logits_match_torch(backend, cell, stack, lengths):
    model = fastrnn.SequenceClassifier(I, 9, C, cell=cell, num_layers=stack[0],
                                       bidirectional=stack[1], backend=backend, seed=1)
    D = 2 if stack[1] else 1
    assert model.parameters()["fc.weight"].shape == (C, D * 9)
    twin = torch_twin(model)
    x, y = batch(5, 7)
    loss, grads = model.loss_and_grads(x, y, lengths=lengths)
    logits_t = torch_logits(twin, x, lengths)
    loss_t = torch.nn.functional.cross_entropy(logits_t, torch.tensor(y))
    loss_t.backward()
    assert loss == pytest.approx(loss_t.item(), rel=1e-5)
    expected = fastrnn_keys({k: p.grad.numpy() for k, p in twin.named_parameters()})
    assert sorted(grads) == sorted(expected) == sorted(model.parameters())
    for key, value in expected.items():
        assert_close(grads[key], value, "grad", np.float32, key)
    assert_close(model.logits(x, lengths=lengths), logits_t.detach().numpy(), "output",
                 np.float32, "logits")
    np.testing.assert_array_equal(model.predict(x, lengths=lengths),
                                  logits_t.detach().numpy().argmax(axis=1))


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


def test_predict_and_evaluate_take_lengths_across_chunks(backend, monkeypatch):
    monkeypatch.setattr("fastrnn.model.EVAL_CHUNK", 2)
    model = fastrnn.SequenceClassifier(I, 6, C, cell="gru", num_layers=2, bidirectional=True,
                                       backend=backend, seed=3)
    x, y = batch(5, 6, seed=2)
    lengths = np.array([6, 2, 1, 5, 3])
    whole = model.logits(x, lengths=lengths)
    np.testing.assert_array_equal(model.predict(x, lengths=lengths), whole.argmax(axis=1))
    for b in range(5):   # chunked or alone, each sequence gets its own logits
        alone = model.logits(x[b:b + 1, :lengths[b]])
        assert_close(alone[0], whole[b], "output", np.float32, f"logits[{b}]")
    loss, accuracy = model.evaluate(x, y, lengths=lengths)
    log_probs = whole - np.log(np.exp(whole - whole.max(1, keepdims=True)).sum(1,
                                                                            keepdims=True)) \
        - whole.max(1, keepdims=True)
    assert loss == pytest.approx(-log_probs[np.arange(5), y].mean(), rel=1e-5)
    assert accuracy == np.mean(whole.argmax(axis=1) == y)


def test_dropout_acts_in_training_steps_only_and_a_seed_repeats_them(backend):
    x, y = batch(6, 5, seed=4)

    def model(dropout, seed=0):
        return fastrnn.SequenceClassifier(I, 16, C, num_layers=3, dropout=dropout,
                                          backend=backend, seed=seed)

    plain, dropped, again = model(0.0), model(0.5), model(0.5)
    np.testing.assert_array_equal(dropped.logits(x), plain.logits(x))
    loss_plain, _ = plain.loss_and_grads(x, y)
    loss, grads = dropped.loss_and_grads(x, y)
    loss_again, grads_again = again.loss_and_grads(x, y)
    assert loss != loss_plain and loss == loss_again
    for key in grads:
        np.testing.assert_array_equal(grads[key], grads_again[key])


# -- configuration and checkpoints -------------------------------------------------------


def test_config_and_checkpoints_carry_the_whole_stack(tmp_path, backend):
    model = fastrnn.SequenceClassifier(I, 5, C, cell="lstm", num_layers=2, bidirectional=True,
                                       dropout=0.25, forget_bias=0.5, backend=backend, seed=2)
    config = model.config()
    assert (config["num_layers"], config["bidirectional"], config["dropout"]) == (2, True, 0.25)
    path = tmp_path / "stack.npz"
    model.save(path)
    loaded = fastrnn.load(path, backend=backend)
    assert loaded.config() == config
    assert loaded.layer.num_layers == 2 and loaded.layer.bidirectional and \
        loaded.layer.dropout == 0.25
    x, _ = batch(3, 6)
    lengths = [6, 3, 1]
    np.testing.assert_array_equal(loaded.logits(x, lengths=lengths),
                                  model.logits(x, lengths=lengths))
    # a stack's rebuilt from its config alone: one more layer in the config does not fit
    with np.load(path) as npz:
        arrays = dict(npz)
    arrays["config"] = np.frombuffer(json.dumps(dict(config, num_layers=3)).encode(), np.uint8)
    np.savez(tmp_path / "wrong.npz", **arrays)
    with pytest.raises(CheckpointError, match="claims 3 layer.s., bidirectional, 24 "
                                              "recurrent parameter arrays, and the file "
                                              "holds 18"):
        fastrnn.load(tmp_path / "wrong.npz")


def test_a_checkpoint_of_fastrnn_0_1_still_loads(tmp_path):
    # 0.1 wrote exactly these config keys: one layer, one direction, no dropout
    model = fastrnn.SequenceClassifier(I, 5, C, cell="gru", backend="numpy", seed=8)
    config = {key: model.config()[key] for key in ("input_size", "hidden_size", "num_classes",
                                                   "cell", "forget_bias", "recurrent_init")}
    arrays = {"format_version": np.array(1, np.int64),
              "config": np.frombuffer(json.dumps(config).encode(), np.uint8),
              **{f"param/{k}": v for k, v in model.parameters().items()}}
    np.savez(tmp_path / "old.npz", **arrays)
    loaded = fastrnn.load(tmp_path / "old.npz", backend="numpy")
    assert loaded.config() == dict(config, num_layers=1, bidirectional=False, dropout=0.0,
                                   precision="fp32")
    x, _ = batch(4, 3)
    np.testing.assert_array_equal(loaded.logits(x), model.logits(x))


@pytest.mark.parametrize("options, error, match", [
    ({"num_layers": 0}, ValueError, "num_layers must be a positive integer"),
    ({"bidirectional": "yes"}, ValueError, "bidirectional must be True or False"),
    ({"dropout": 1.0}, ValueError, r"dropout must lie in \[0, 1\)"),
    ({"dropout": "0.1"}, ValueError, r"dropout must be a number in \[0, 1\)"),
])
def test_bad_stack_options_are_clear_errors(options, error, match):
    with pytest.raises(error, match=match):
        fastrnn.SequenceClassifier(I, 5, C, backend="numpy", **options)


# -- diagnostics of the last layer, both directions ------------------------------------


def torch_last_layer_state_gradients(model, x, y):
    """dL/dh_t (and dL/dc_t) of the last layer's directions, t = 1..T in time order:
    torch's earlier layers, then each direction of the last one unrolled step by step."""
    layer = model.layer
    L, D, H = layer.num_layers, layer.num_directions, layer.hidden_size
    params = {k: torch.tensor(v) for k, v in model.parameters().items()}
    inputs = torch.tensor(x)
    if L > 1:
        prefix = getattr(torch.nn, model.cell.upper())(I, H, L - 1, batch_first=True,
                                                       bidirectional=layer.bidirectional)
        prefix.load_state_dict({k: v for k, v in params.items()
                                if not k.startswith("fc.") and f"_l{L - 1}" not in k})
        inputs = prefix(inputs)[0].detach()
    finals, per_direction = [], []
    for d in range(D):
        suffix = "_reverse" if d else ""
        one = getattr(torch.nn, model.cell.upper())(inputs.shape[2], H, batch_first=True)
        one.load_state_dict({f"{name}_l0": params[f"{name}_l{L - 1}{suffix}"]
                             for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")})
        steps = range(x.shape[1] - 1, -1, -1) if d else range(x.shape[1])
        state, states = None, {}
        for t in steps:
            _, state = one(inputs[:, t:t + 1], state)
            for s in state if isinstance(state, tuple) else (state,):
                s.retain_grad()
            states[t] = state if isinstance(state, tuple) else (state,)
        finals.append(states[steps[-1]][0][0])
        per_direction.append(states)
    logits = torch.cat(finals, dim=1) @ params["fc.weight"].T + params["fc.bias"]
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor(y))
    loss.backward()
    out = []
    for states in per_direction:
        dh = [states[t][0].grad[0].numpy() for t in range(x.shape[1])]
        dc = None
        if model.cell == "lstm":
            dc = [states[t][1].grad[0].numpy() if states[t][1].grad is not None
                  else np.zeros_like(dh[0]) for t in range(x.shape[1])]
        out.append((dh, dc))
    return loss.item(), out


@pytest.mark.parametrize("stack", [(1, True), (2, True), (2, False)], ids=stack_id)
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_diagnostics_cover_the_last_layer_in_both_directions(backend, cell, stack):
    model = fastrnn.SequenceClassifier(I, 6, C, cell=cell, num_layers=stack[0],
                                       bidirectional=stack[1], backend=backend, seed=5)
    x, y = batch(3, 5, seed=6)
    expected_loss, expected = torch_last_layer_state_gradients(model, x, y)
    record = diagnose(model, x, y, step=2)
    assert record["layer"] == stack[0] - 1
    assert ("reverse" in record) == stack[1]
    for d, direction in enumerate(("forward", "reverse")[:len(expected)]):
        loss, dh, dc, states = hidden_state_gradients(model, x, y, direction)
        assert loss == pytest.approx(expected_loss, rel=1e-5)
        want_dh, want_dc = expected[d]
        for t in range(5):
            assert_close(dh[t], want_dh[t], "grad", np.float32, f"{direction} dL/dh_{t + 1}")
            if cell == "lstm":
                assert_close(dc[t], want_dc[t], "grad", np.float32,
                             f"{direction} dL/dc_{t + 1}")
        norms = record["reverse" if d else "grad_norm"]
        norms = norms["grad_norm"] if d else norms
        np.testing.assert_allclose(norms, [np.linalg.norm(g.astype(np.float64))
                                           for g in want_dh], rtol=1e-4)
