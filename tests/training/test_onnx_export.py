"""ONNX export: the graphs run in ONNX Runtime with fastrnn's logits and torch's, and refuse
what they cannot hold.

Every cell fastrnn has (GRU included once it exists) is compared with fastrnn's own logits;
layer stacks and both directions are compared with torch.nn.LSTM / GRU / RNN through the same
exporter wherever this fastrnn cannot build them yet, and with fastrnn's as soon as it can.
"""

import inspect
import os
import sys

import numpy as np
import pytest

import fastrnn
from fastrnn import onnx as fastrnn_onnx
from fastrnn.model import CELLS
from fastrnn.onnx import OPSET, classifier_graph, export_onnx
from classifier_twins import (GATES, fastrnn_keys, torch_classifier, torch_layout_shapes,
                              with_stack)

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

I, H, C = 5, 13, 4            # H not a multiple of 8 or 16
SHAPES = [(1, 1), (6, 11)]    # (B, T): two batch sizes and lengths through one file
# (num_layers, bidirectional): 1 to 3 layers, both directions
STACKS = [(L, bidirectional) for L in (1, 2, 3) for bidirectional in (False, True)]
TORCH_CELLS = [("lstm", "tanh"), ("gru", "tanh"), ("rnn", "tanh"), ("rnn", "relu")]


def stack_id(stack):
    return f"L{stack[0]}-{'bi' if stack[1] else 'uni'}"


def inputs(B, T, seed=0, scale=3.0):
    """x (B, T, I) float32 large enough to saturate many gates."""
    return (scale * np.random.default_rng(seed).standard_normal((B, T, I))).astype(np.float32)


def run_onnx(graph, x, lengths=None):
    """Logits of ONNX Runtime's CPU kernels for a graph given as a path or ModelProto."""
    source = os.fspath(graph) if isinstance(graph, (str, os.PathLike)) \
        else graph.SerializeToString()
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    feeds = {"x": x}
    if lengths is not None:
        feeds["lengths"] = np.asarray(lengths, dtype=np.int64)
    (logits,) = session.run(None, feeds)
    return logits


def fastrnn_classifier(cell, stack, seed=0):
    return with_stack(fastrnn.SequenceClassifier, stack, I, H, C, cell=cell, seed=seed)


def random_parameters(cell, stack, seed=0):
    """A classifier's parameters in torch's layout, built from SPEC's key rule alone."""
    rng = np.random.default_rng(seed)
    shapes = torch_layout_shapes(cell, I, H, *stack)
    shapes.update({"fc.weight": (C, (2 if stack[1] else 1) * H), "fc.bias": (C,)})
    return {key: rng.uniform(-0.4, 0.4, shape).astype(np.float32)
            for key, shape in shapes.items()}


# -- against fastrnn --------------------------------------------------------------------------


@pytest.mark.parametrize("stack", STACKS, ids=stack_id)
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_exported_classifier_gives_fastrnn_logits_in_onnx_runtime(cell, stack, tmp_path):
    model = fastrnn_classifier(cell, stack)
    path = tmp_path / "model.onnx"
    export_onnx(model, path)
    onnx.checker.check_model(os.fspath(path), full_check=True)
    for seed, (B, T) in enumerate(SHAPES):
        x = inputs(B, T, seed)
        logits = run_onnx(path, x)
        assert logits.shape == (B, C)
        np.testing.assert_allclose(logits, model.logits(x), rtol=0, atol=1e-4)
        np.testing.assert_array_equal(np.argmax(logits, axis=1), model.predict(x))


@pytest.mark.parametrize("stack", [(1, False), (2, True)], ids=stack_id)
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_lengths_input_gives_fastrnn_logits_of_variable_length_batches(cell, stack):
    model = fastrnn_classifier(cell, stack)
    if "lengths" not in inspect.signature(model.logits).parameters:
        pytest.skip("this fastrnn's logits() takes no lengths yet; "
                    "test_lengths_input_matches_torch_packed_sequences checks the graph")
    x, lengths = inputs(5, 8), np.array([8, 1, 3, 8, 5])
    logits = run_onnx(fastrnn_onnx.to_onnx(model, lengths_input=True), x, lengths)
    np.testing.assert_allclose(logits, model.logits(x, lengths=lengths), rtol=0, atol=1e-4)


def test_the_lengths_input_takes_numpys_int64_and_refuses_int32_naming_int64():
    model = fastrnn_classifier("lstm", (2, True))
    graph = fastrnn_onnx.to_onnx(model, lengths_input=True)
    session = ort.InferenceSession(graph.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    assert [(i.name, i.type) for i in session.get_inputs()][1] == ("lengths", "tensor(int64)")
    x, lengths = inputs(3, 6), np.array([6, 1, 4])   # numpy's default integers
    (logits,) = session.run(None, {"x": x, "lengths": lengths.astype(np.int64)})
    np.testing.assert_allclose(logits, model.logits(x, lengths=lengths), rtol=0, atol=1e-4)
    with pytest.raises(Exception, match=r"tensor\(int32\).*expected.*tensor\(int64\)"):
        session.run(None, {"x": x, "lengths": lengths.astype(np.int32)})


# -- the graph itself ------------------------------------------------------------------------


@pytest.mark.parametrize("stack", STACKS, ids=stack_id)
@pytest.mark.parametrize("cell", sorted(GATES))
def test_graph_is_one_standard_recurrent_node_per_layer_on_time_major_input(cell, stack):
    graph = classifier_graph(random_parameters(cell, stack), cell)
    assert [(entry.domain, entry.version) for entry in graph.opset_import] == [("", OPSET)]
    recurrent = [n for n in graph.graph.node if n.op_type in ("LSTM", "GRU", "RNN")]
    assert [n.op_type for n in recurrent] == [cell.upper()] * stack[0]
    for n in recurrent:
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        assert attributes["direction"] == (b"bidirectional" if stack[1] else b"forward")
        assert attributes["hidden_size"] == H
        assert attributes.get("layout", 0) == 0   # ONNX Runtime's CPU kernels need layout 0
        assert attributes.get("linear_before_reset", 0) == (1 if cell == "gru" else 0)
    first = graph.graph.node[0]
    assert (first.op_type, list(first.input)) == ("Transpose", ["x"])
    assert graph.graph.node[-1].op_type == "Gemm"
    (x,) = graph.graph.input
    (logits,) = graph.graph.output
    assert [d.dim_param or d.dim_value for d in x.type.tensor_type.shape.dim] == ["B", "T", I]
    assert [d.dim_param or d.dim_value for d in logits.type.tensor_type.shape.dim] == ["B", C]
    assert x.type.tensor_type.elem_type == onnx.TensorProto.FLOAT


# -- against torch -------------------------------------------------------------------------


def torch_oracle(cell, stack, nonlinearity="tanh", seed=0):
    """torch, a torch classifier, and its parameters as fastrnn keys them."""
    torch, module = torch_classifier(cell, I, H, C, stack, nonlinearity=nonlinearity, seed=seed)
    params = fastrnn_keys({key: value.numpy() for key, value in module.state_dict().items()})
    return torch, module, params


def torch_logits(torch, module, x):
    with torch.no_grad():
        return module(x).numpy()


@pytest.mark.parametrize("stack", STACKS, ids=stack_id)
@pytest.mark.parametrize("cell, nonlinearity", TORCH_CELLS, ids=["lstm", "gru", "rnn-tanh",
                                                                 "rnn-relu"])
def test_graph_matches_torch(cell, nonlinearity, stack):
    torch, module, params = torch_oracle(cell, stack, nonlinearity, seed=stack[0])
    graph = classifier_graph(params, cell, nonlinearity=nonlinearity)
    for seed, (B, T) in enumerate(SHAPES):
        x = inputs(B, T, seed)
        expected = torch_logits(torch, module, torch.from_numpy(x))
        logits = run_onnx(graph, x)
        np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-4)
        np.testing.assert_array_equal(np.argmax(logits, axis=1), np.argmax(expected, axis=1))


@pytest.mark.parametrize("stack", [(1, False), (2, True), (3, True)], ids=stack_id)
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_lengths_input_matches_torch_packed_sequences(cell, stack):
    torch, module, params = torch_oracle(cell, stack, seed=7)
    x, lengths = inputs(5, 8), np.array([8, 1, 3, 8, 5])
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        torch.from_numpy(x), torch.from_numpy(lengths), batch_first=True, enforce_sorted=False)
    expected = torch_logits(torch, module, packed)
    graph = classifier_graph(params, cell, lengths_input=True)
    np.testing.assert_allclose(run_onnx(graph, x, lengths), expected, rtol=0, atol=1e-4)
    # Without the lengths input the graph reads all T steps of every sequence.
    full = classifier_graph(params, cell)
    assert [i.name for i in full.graph.input] == ["x"]
    assert np.abs(run_onnx(full, x) - expected).max() > 1e-3


# -- what cannot be exported ------------------------------------------------------------------


def test_a_recurrent_layer_without_a_head_is_refused_with_the_fix(tmp_path):
    with pytest.raises(TypeError, match="SequenceClassifier"):
        export_onnx(fastrnn.LSTM(I, H, seed=0), tmp_path / "layer.onnx")
    assert not os.listdir(tmp_path)


def _without(key):
    return lambda params: params.pop(key)


def _set(key, value):
    return lambda params: params.__setitem__(key, value)


BROKEN = {
    "missing bias": (_without("bias_hh_l1"), "missing \\['bias_hh_l1'\\]"),
    "stray key": (_set("weight_ih_l0_extra", np.zeros(3, np.float32)), "unexpected"),
    "wrong shape": (_set("weight_hh_l0", np.zeros((4 * H, H + 1), np.float32)), "shape"),
    "layer gap": (_without("weight_ih_l1"), "do not form"),
    "no head": (_without("fc.weight"), "no 2-D 'fc.weight'"),
    "scalar weight": (_set("weight_ih_l0", np.float32(1.0)), "no 2-D 'weight_ih_l0'"),
    "non-finite": (lambda p: p["bias_ih_l0"].__setitem__(3, np.nan), "non-finite"),
    "beyond float32": (_set("fc.bias", np.full(C, 1e300)), "float32's range"),
    "integers": (_set("fc.bias", np.zeros(C, np.int64)), "not floats"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_parameters_that_are_no_classifier_are_refused(case):
    params = random_parameters("lstm", (2, False))
    breaks, message = BROKEN[case]
    breaks(params)
    with pytest.raises(ValueError, match=message):
        classifier_graph(params, "lstm")


def test_a_cell_or_activation_without_a_standard_operator_is_refused():
    with pytest.raises(ValueError, match="cannot export cell 'peephole'"):
        classifier_graph(random_parameters("lstm", (1, False)), "peephole")
    with pytest.raises(ValueError, match="nonlinearity 'sigmoid'"):
        classifier_graph(random_parameters("rnn", (1, False)), "rnn", nonlinearity="sigmoid")


def test_a_config_that_contradicts_the_parameters_is_refused(tmp_path):
    class ClaimsTwoLayers(fastrnn.SequenceClassifier):
        def config(self):
            return dict(super().config(), num_layers=2)

    with pytest.raises(ValueError, match="config says 2 layer"):
        export_onnx(ClaimsTwoLayers(I, H, C, seed=0), tmp_path / "model.onnx")
    assert not os.listdir(tmp_path)


def test_parameters_too_large_for_one_onnx_file_are_refused(monkeypatch):
    params = random_parameters("gru", (1, False))
    monkeypatch.setattr(fastrnn_onnx, "MAX_PARAMETER_BYTES", 4 * 100)
    with pytest.raises(ValueError, match="less than 2 GiB"):
        classifier_graph(params, "gru")


def test_export_without_the_onnx_package_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnx", None)   # makes `import onnx` fail
    with pytest.raises(RuntimeError, match=r"pip install 'fastrnn\[onnx\]'"):
        export_onnx(fastrnn.SequenceClassifier(I, H, C, seed=0), tmp_path / "model.onnx")


# -- writing the file --------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["missing directory", "a directory", "under a file"])
def test_an_unwritable_output_path_is_a_clear_error_and_writes_nothing(where, tmp_path):
    (tmp_path / "subdir").mkdir()
    (tmp_path / "plain").write_text("not a directory")
    target = {"missing directory": tmp_path / "missing" / "model.onnx",
              "a directory": tmp_path / "subdir",
              "under a file": tmp_path / "plain" / "model.onnx"}[where]
    with pytest.raises(OSError, match=f"cannot write {target}"):
        export_onnx(fastrnn.SequenceClassifier(I, H, C, seed=0), target)
    assert sorted(os.listdir(tmp_path)) == ["plain", "subdir"]
    assert not os.listdir(tmp_path / "subdir")


@pytest.mark.parametrize("previous", [False, True], ids=["no previous file", "previous file"])
def test_a_failure_mid_write_leaves_no_file_or_the_previous_one(previous, tmp_path, monkeypatch):
    path = tmp_path / "model.onnx"
    if previous:
        export_onnx(fastrnn.SequenceClassifier(I, H, C, cell="rnn", seed=1), path)
        before = path.read_bytes()

    def write_half_then_fail(file, data):
        file.write(data[:len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fastrnn_onnx, "_write_bytes", write_half_then_fail)
    with pytest.raises(OSError, match="cannot write .*No space left on device"):
        export_onnx(fastrnn.SequenceClassifier(I, H, C, seed=2), path)
    assert os.listdir(tmp_path) == (["model.onnx"] if previous else [])
    if previous:
        assert path.read_bytes() == before
        onnx.checker.check_model(os.fspath(path))
