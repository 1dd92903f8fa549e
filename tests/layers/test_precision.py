"""precision="bf16" through the layers, the classifier and checkpoints.

The kernels' bf16 semantics and their tolerances are tested in
tests/kernels/test_bf16.py, the command line's --precision in tests/cli/test_precision_cli.py;
here: that the layer API carries the choice to every kernel call of a stack, records it,
and refuses what cannot run.
"""

import numpy as np
import pytest

import fastrnn
from fastrnn._config import check_model_config
from helpers import BACKENDS, CELL_VARIANTS, TOLERANCES, make_stack, relative_error, stack_problem

FP32 = TOLERANCES[np.dtype(np.float32)]


def layer_results(variant, backend, precision, x, state, dy, dstate, lengths=None):
    layer = make_stack(variant, 5, 9, 2, True, backend=backend, dtype=np.float32,
                       precision=precision, seed=1)
    y, final = layer.forward(x, state, lengths=lengths)
    dx, _ = layer.backward(dy, dstate)
    return [y, dx, *layer.grads.values()]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("variant", list(CELL_VARIANTS))
def test_a_bf16_stack_matches_the_reference_stack_on_every_backend(variant, backend):
    # A 2-layer bidirectional stack with lengths: every kernel call of it takes bf16
    # operands. Within 3 times the reference's own bf16 distance from float32, as the
    # kernel tests derive (tests/kernels/test_bf16.py).
    x, state, dy, dstate = stack_problem(variant, 6, 4, 5, 9, 2, True, dtype=np.float32)
    lengths = [6, 2, 5, 1]
    got = layer_results(variant, backend, "bf16", x, state, dy, dstate, lengths)
    want = layer_results(variant, "numpy", "bf16", x, state, dy, dstate, lengths)
    fp32 = layer_results(variant, "numpy", "fp32", x, state, dy, dstate, lengths)
    for g, w, f in zip(got, want, fp32):
        assert g.dtype == np.float32
        bf16_effect = relative_error(w, f)
        assert bf16_effect > 1e-5   # the products were rounded
        assert relative_error(g, w) <= 3 * bf16_effect + FP32["grad"]


def test_layers_refuse_unknown_precisions_and_bf16_with_float64():
    with pytest.raises(ValueError, match="precision must be 'fp32' or 'bf16', got 'int8'"):
        fastrnn.LSTM(3, 4, precision="int8")
    with pytest.raises(ValueError, match="precision='bf16' needs dtype float32.*float64"):
        fastrnn.RNN(3, 4, dtype=np.float64, precision="bf16")
    with pytest.raises(ValueError, match="precision must be 'fp32' or 'bf16'"):
        fastrnn.SequenceClassifier(3, 4, 2, precision="bfloat16")


def test_a_layers_precision_shows_in_its_repr_and_its_sublayers():
    layer = fastrnn.GRU(3, 4, 2, precision="bf16")
    assert "precision='bf16'" in repr(layer)
    assert layer.sublayer(range(1, 2)).precision == "bf16"
    assert "precision" not in repr(fastrnn.GRU(3, 4))


def test_checkpoints_record_the_precision_and_old_configs_mean_fp32(tmp_path):
    model = fastrnn.SequenceClassifier(6, 8, 3, cell="gru", precision="bf16", seed=0)
    model.save(tmp_path / "m.npz")
    loaded = fastrnn.load(tmp_path / "m.npz")
    assert loaded.config()["precision"] == "bf16"
    x = np.random.default_rng(0).standard_normal((4, 5, 6)).astype(np.float32)
    assert np.array_equal(loaded.logits(x), model.logits(x))
    old = {k: v for k, v in model.config().items() if k != "precision"}
    assert check_model_config(old)["precision"] == "fp32"
