"""`fastrnn export --quantize int8`: LSTM layers as ONNX Runtime's DynamicQuantizeLSTM with
the frozen model's int8 codes and per-row scales; the GRU and the RNN refused clearly."""

import os

import numpy as np
import pytest

import fastrnn
from fastrnn import _quantize
from fastrnn.cells import CELLS
from fastrnn.onnx import to_onnx
from helpers import run_cli

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
numpy_helper = pytest.importorskip("onnx.numpy_helper")

I, H, C = 6, 19, 3


def logits_of(graph, x, lengths=None):
    source = os.fspath(graph) if isinstance(graph, (str, os.PathLike)) \
        else graph.SerializeToString()
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    feeds = {"x": x} if lengths is None else {"x": x, "lengths": lengths.astype(np.int64)}
    return session.run(None, feeds)[0]


@pytest.mark.parametrize("num_layers, bidirectional", [(1, False), (2, False), (2, True)])
def test_an_int8_lstm_graph_runs_in_onnx_runtime_near_fastrnns_int8_logits(num_layers,
                                                                         bidirectional):
    model = fastrnn.SequenceClassifier(I, H, C, num_layers=num_layers,
                                       bidirectional=bidirectional, seed=2)
    frozen = model.freeze("int8")
    x = np.random.default_rng(0).standard_normal((8, 10, I)).astype(np.float32)
    lengths = np.array([10, 1, 4, 10, 7, 2, 9, 5])
    graph = to_onnx(model, quantize="int8")
    assert {node.op_type for node in graph.graph.node} >= {"DynamicQuantizeLSTM"}
    assert "LSTM" not in {node.op_type for node in graph.graph.node}
    scale = np.abs(model.logits(x)).max()
    # ONNX Runtime quantizes the activations its own way: near, not equal
    assert np.abs(logits_of(graph, x) - frozen.logits(x)).max() < 0.03 * scale
    with_lengths = to_onnx(model, quantize="int8", lengths_input=True)
    assert np.abs(logits_of(with_lengths, x, lengths)
                  - frozen.logits(x, lengths=lengths)).max() < 0.03 * scale


def test_the_int8_graph_holds_the_frozen_models_codes_and_scales():
    model = fastrnn.SequenceClassifier(I, H, C, seed=4)
    params = model.parameters()
    weights = _quantize.QuantizedWeights(params["weight_ih_l0"], params["weight_hh_l0"],
                                         params["bias_ih_l0"], params["bias_hh_l0"])
    tensors = {t.name: numpy_helper.to_array(t) for t in to_onnx(model, quantize="int8")
               .graph.initializer}
    order = np.concatenate([np.arange(g * H, (g + 1) * H) for g in CELLS["lstm"].onnx.gate_order])
    assert tensors["layer0.W"].dtype == np.int8 and tensors["layer0.W"].shape == (1, I, 4 * H)
    assert np.array_equal(tensors["layer0.W"][0], weights.q_ih[order].T)
    assert np.array_equal(tensors["layer0.R"][0], weights.q_hh[order].T)
    assert np.array_equal(tensors["layer0.W_scale"][0], weights.s_ih[order])
    assert np.array_equal(tensors["layer0.R_scale"][0], weights.s_hh[order])
    assert not tensors["layer0.W_zero_point"].any()


def test_export_quantize_int8_from_the_command_line(tmp_path, capsys):
    saved, out = tmp_path / "model.npz", tmp_path / "model.onnx"
    model = fastrnn.SequenceClassifier(I, H, C, seed=1)
    model.save(saved)
    code, stdout, _ = run_cli(["export", saved, out, "--quantize", "int8"], capsys)
    assert code == 0 and "int8 weights (com.microsoft DynamicQuantizeLSTM)" in stdout
    x = np.random.default_rng(3).standard_normal((5, 7, I)).astype(np.float32)
    assert np.abs(logits_of(out, x) - model.freeze("int8").logits(x)).max() < 0.03


@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_int8_export_of_a_gru_or_rnn_is_a_one_line_error_naming_the_fix(cell, tmp_path, capsys):
    saved, out = tmp_path / "model.npz", tmp_path / "model.onnx"
    fastrnn.SequenceClassifier(I, H, C, cell=cell, seed=1).save(saved)
    code, stdout, err = run_cli(["export", saved, out, "--quantize", "int8"], capsys)
    assert code == 2 and stdout == "" and err.count("\n") == 1
    assert f"cannot export a {cell.upper()} to int8" in err and "without --quantize" in err
    assert not out.exists()
    with pytest.raises(ValueError, match="for the LSTM only"):
        to_onnx(fastrnn.SequenceClassifier(I, H, C, cell=cell), quantize="int8")
    with pytest.raises(ValueError, match="quantize must be None or 'int8'"):
        to_onnx(fastrnn.SequenceClassifier(I, H, C), quantize="int4")
