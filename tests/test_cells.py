"""The table of cells (fastrnn.cells): every part of fastrnn that deals in cells has each
cell of the table, and does with it what the table says."""

import numpy as np
import pytest

import fastrnn
from fastrnn import _backends, _config, cli, diagnostics, layers
from fastrnn.bench import cases
from fastrnn.cells import CELLS, KERNELS
from helpers import CELL_VARIANTS, GATES, needs_torch, torch

EVERY_CELL = pytest.mark.parametrize("name", list(CELLS))


def tiny_model(name, **options):
    return fastrnn.SequenceClassifier(3, 4, 2, cell=name, backend="numpy", seed=0, **options)


def tiny_batch():
    rng = np.random.default_rng(0)
    return rng.standard_normal((2, 5, 3)).astype(np.float32), np.array([0, 1])


@EVERY_CELL
def test_the_cells_layer_class_has_its_gates_and_states(name):
    cell = CELLS[name]
    layer_class = layers.LAYERS[name]
    assert getattr(fastrnn, cell.layer) is layer_class
    assert (layer_class.cell, layer_class.gates, layer_class.state_names) == \
        (name, cell.G, cell.states)
    layer = layer_class(3, 4, backend="numpy", seed=0)
    assert layer.weight_ih.shape == (cell.G * 4, 3)
    y, state = layer.forward(np.zeros((2, 5, 3)))
    assert len(state if isinstance(state, tuple) else (state,)) == len(cell.states)


@EVERY_CELL
def test_every_backend_has_the_cells_kernels(name):
    for kernel in CELLS[name].kernels.values():
        for stage in ("forward", "backward"):
            for backend in fastrnn.available_backends():
                assert hasattr(_backends.get_backend(backend), f"{kernel}_{stage}")


@EVERY_CELL
def test_the_model_checkpoint_config_and_command_line_take_the_cell(name, tmp_path):
    model = tiny_model(name)
    loss, grads = model.loss_and_grads(*tiny_batch())
    assert np.isfinite(loss) and set(grads) == set(model.parameters())
    config = _config.check_model_config(model.config())
    assert {key: value.shape for key, value in model.parameters().items()} == \
        _config.parameter_shapes(config)
    model.save(tmp_path / "model.npz")
    assert fastrnn.load(tmp_path / "model.npz").cell == name
    args = cli.build_parser().parse_args(["train", "--cell", name])
    assert args.cell == name


@EVERY_CELL
def test_the_onnx_graph_has_the_cells_operator(name):
    pytest.importorskip("onnx")
    from fastrnn import onnx as fastrnn_onnx
    operator = CELLS[name].onnx
    graph = fastrnn_onnx.to_onnx(tiny_model(name)).graph
    (node,) = [node for node in graph.node if node.op_type == operator.name]
    attributes = {a.name: a.i for a in node.attribute if a.name in operator.attributes}
    assert attributes == operator.attributes
    assert sorted(operator.gate_order) == list(range(CELLS[name].G))


@EVERY_CELL
def test_diagnostics_record_what_the_table_says_they_plot(name):
    saturation = CELLS[name].saturation
    record = diagnostics.diagnose(tiny_model(name), *tiny_batch())
    assert len(record["saturated"]) == len(record["h_saturated"]) == 5
    if saturation.mean_gate:
        assert len(record[saturation.mean_gate[1]]) == 5
    assert saturation.of in ("h", "tanh(c)") + CELLS[name].gates


@EVERY_CELL
def test_the_bench_has_the_cells_cases_and_counts_its_gates(name):
    case = cases.CATALOGUE[f"{name}-inference-origin"]
    T, B, I, H = case.shape
    assert cases.case_flops(case) == 2 * T * B * (I + H) * CELLS[name].G * H


@EVERY_CELL
@needs_torch
def test_torchs_module_of_the_cell_has_the_tables_gates(name):
    module = getattr(torch.nn, CELLS[name].torch_module)(3, 4)
    assert module.weight_ih_l0.shape == (CELLS[name].G * 4, 3)


def test_the_tests_cover_every_cell_and_kernel():
    assert set(GATES) == set(KERNELS)
    assert {variant.cell.name for variant in CELL_VARIANTS.values()} == set(CELLS)
    assert len(CELL_VARIANTS) == len(KERNELS)
