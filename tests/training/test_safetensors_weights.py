"""Torch weights without torch: a state_dict that torch saved with safetensors loads into
fastrnn through safetensors.numpy and load_state_dict (docs/deployment.md).

The files here are written by the safetensors library from NumPy arrays laid out as torch lays
them, so these tests need no torch; the last one saves a real torch module with
safetensors.torch where torch is installed.
"""

import numpy as np
import pytest

import fastrnn
from fastrnn.model import CELLS
from classifier_twins import fastrnn_keys, torch_classifier, torch_layout_shapes, with_stack

safetensors_numpy = pytest.importorskip("safetensors.numpy")

I, H, C = 7, 11, 5
STACKS = [(L, bidirectional) for L in (1, 2, 3) for bidirectional in (False, True)]


def stack_id(stack):
    return f"L{stack[0]}-{'bi' if stack[1] else 'uni'}"


def layer_class(cell):
    return getattr(fastrnn, cell.upper())


def torch_like_arrays(shapes, seed, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return {key: rng.uniform(-0.5, 0.5, shape).astype(dtype) for key, shape in shapes.items()}


def saved_and_loaded(arrays, path):
    """What a fastrnn machine reads back from the file torch's safetensors.save_file wrote."""
    safetensors_numpy.save_file(arrays, str(path))
    return safetensors_numpy.load_file(str(path))


def assert_holds(parameters, arrays):
    assert sorted(parameters) == sorted(arrays)
    for key, value in arrays.items():
        assert parameters[key].dtype == np.float32, key
        np.testing.assert_array_equal(parameters[key], value.astype(np.float32), err_msg=key)


@pytest.mark.parametrize("stack", STACKS, ids=stack_id)
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_a_torch_layer_state_dict_saved_with_safetensors_loads_without_torch(cell, stack,
                                                                             tmp_path):
    arrays = torch_like_arrays(torch_layout_shapes(cell, I, H, *stack), seed=1)
    layer = with_stack(layer_class(cell), stack, I, H, seed=0)
    layer.load_state_dict(saved_and_loaded(arrays, tmp_path / "rnn.safetensors"))
    assert_holds(layer.state_dict(), arrays)


@pytest.mark.parametrize("stack", STACKS, ids=stack_id)
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_a_torch_classifier_saved_with_safetensors_loads_into_a_sequence_classifier(
        cell, stack, tmp_path):
    # torch keys a module holding `rnn` and `fc` as rnn.weight_ih_l0, ..., fc.weight, fc.bias.
    shapes = {f"rnn.{key}": shape for key, shape in torch_layout_shapes(cell, I, H, *stack).items()}
    shapes.update({"fc.weight": (C, (2 if stack[1] else 1) * H), "fc.bias": (C,)})
    arrays = torch_like_arrays(shapes, seed=2)
    model = with_stack(fastrnn.SequenceClassifier, stack, I, H, C, cell=cell, seed=0)
    model.load_state_dict(fastrnn_keys(saved_and_loaded(arrays, tmp_path / "model.safetensors")))
    assert_holds(model.parameters(), fastrnn_keys(arrays))


def test_half_precision_weights_load_as_their_float32_values(tmp_path):
    arrays = torch_like_arrays(torch_layout_shapes("lstm", I, H), seed=3, dtype=np.float16)
    layer = fastrnn.LSTM(I, H, seed=0)
    layer.load_state_dict(saved_and_loaded(arrays, tmp_path / "half.safetensors"))
    assert_holds(layer.state_dict(), arrays)


def test_keys_still_carrying_the_module_prefix_are_refused_by_name(tmp_path):
    arrays = torch_like_arrays({f"rnn.{key}": shape for key, shape in
                                torch_layout_shapes("rnn", I, H).items()}, seed=4)
    layer = fastrnn.RNN(I, H, seed=0)
    before = layer.state_dict()
    with pytest.raises(ValueError, match=r"missing \['bias_hh_l0'.*unexpected \['rnn.bias_hh_l0'"):
        layer.load_state_dict(saved_and_loaded(arrays, tmp_path / "prefixed.safetensors"))
    assert_holds(layer.state_dict(), before)


@pytest.mark.parametrize("stack", STACKS, ids=stack_id)
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_a_torch_module_saved_by_safetensors_torch_runs_the_same_in_fastrnn(cell, stack,
                                                                           tmp_path):
    torch, module = torch_classifier(cell, I, H, C, stack, seed=5)
    safetensors_torch = pytest.importorskip("safetensors.torch")
    path = str(tmp_path / "model.safetensors")
    safetensors_torch.save_file(module.state_dict(), path)
    weights = fastrnn_keys(safetensors_numpy.load_file(path))

    model = with_stack(fastrnn.SequenceClassifier, stack, I, H, C, cell=cell, seed=0)
    model.load_state_dict(weights)
    layer = with_stack(layer_class(cell), stack, I, H, seed=0)
    layer.load_state_dict({k: v for k, v in weights.items() if not k.startswith("fc.")})

    x = np.random.default_rng(6).standard_normal((4, 9, I)).astype(np.float32)
    with torch.no_grad():
        expected_logits = module(torch.from_numpy(x)).numpy()
        expected_y, _ = module.rnn(torch.from_numpy(x))
    np.testing.assert_allclose(model.logits(x), expected_logits, rtol=0, atol=1e-5)
    np.testing.assert_allclose(layer.forward(x)[0], expected_y.numpy(),
                               rtol=0, atol=1e-5)
