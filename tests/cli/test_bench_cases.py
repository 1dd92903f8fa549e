"""`fastrnn bench`'s cases: one list of names, what the installed fastrnn must have, errors.

The GRU and the layer variants arrive with other issues; here a stand-in
fastrnn.GRU (or an LSTM that refuses num_layers) shows that their cases join
the lists by themselves, and that asking for one fastrnn cannot run is an
error naming what is missing.
"""

import argparse
import subprocess
import sys

import numpy as np
import pytest

import fastrnn
from helpers import OUTSIDE_REPO
from fastrnn import cli
from fastrnn.bench import cases, command, onnx_graphs, runners

pytestmark = pytest.mark.usefixtures("keep_thread_settings")


@pytest.fixture
def fresh_probes():
    """What fastrnn has is found once per process: find it again around a stand-in."""
    cases._probe.cache_clear()
    yield
    cases._probe.cache_clear()


class StandInGRU:
    """Takes fastrnn.GRU's place where it has not arrived: torch's init, no kernels."""

    def __init__(self, input_size, hidden_size, *, batch_first=True, backend=None, seed=None):
        rng = np.random.default_rng(seed)
        k = 1.0 / np.sqrt(hidden_size)
        shapes = {"weight_ih_l0": (3 * hidden_size, input_size),
                  "weight_hh_l0": (3 * hidden_size, hidden_size),
                  "bias_ih_l0": (3 * hidden_size,), "bias_hh_l0": (3 * hidden_size,)}
        self.weights = {key: rng.uniform(-k, k, shape).astype(np.float32)
                        for key, shape in shapes.items()}

    def state_dict(self):
        return {key: value.copy() for key, value in self.weights.items()}


def default_cases():
    return command.selected_cases(command.add_arguments(argparse.ArgumentParser()).parse_args([]))


def test_case_names_read_cell_mode_shape_variant():
    assert cases.CATALOGUE["lstm-train-origin"] == ("lstm", "train", "origin",
                                                    cases.SHAPES["origin"], "plain")
    assert cases.CATALOGUE["gru-latency-batch1"].shape == (28, 1, 28, 128)
    stacked = cases.CATALOGUE["rnn-inference-medium-2layer-bidir"]
    assert (stacked.layout.num_layers, stacked.directions) == (2, 2)
    for name, case in cases.CATALOGUE.items():
        assert case.name == name and cases.case_by_name(name) is case


def test_grid_flags_nest_cell_mode_shape_variant():
    chosen = cases.make_cases(["origin", "large"], ["lstm"], ["train", "latency"],
                              ["plain", "lengths"])
    assert [case.name for case in chosen] == [
        "lstm-train-origin", "lstm-train-origin-lengths", "lstm-train-large",
        "lstm-train-large-lengths", "lstm-latency-batch1"]


def test_a_lengths_case_is_timed_beside_its_padded_twin():
    asked = [cases.CATALOGUE[name] for name in ("rnn-train-origin", "lstm-train-medium-lengths",
                                                "lstm-train-medium")]
    groups = [[case.name for case in group] for group in cases.timing_groups(asked)]
    assert groups == [["rnn-train-origin"], ["lstm-train-medium", "lstm-train-medium-lengths"]]
    alone = cases.timing_groups([cases.CATALOGUE["lstm-train-medium-lengths"]], add_twins=False)
    assert [[case.name for case in group] for group in alone] == [["lstm-train-medium-lengths"]]


def test_unknown_case_is_a_clear_error_naming_a_near_one(capsys):
    with pytest.raises(ValueError, match="did you mean lstm-train-origin"):
        cases.case_by_name("lstm-train-orign")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", "--cases", "lstm-train-orign"])
    assert exit_info.value.code == 2
    assert "unknown case 'lstm-train-orign'" in capsys.readouterr().err


def test_unknown_rival_is_a_clear_error(capsys):
    with pytest.raises(ValueError, match="unknown rival"):
        runners.make_runner("tensorflow", cases.CATALOGUE["rnn-inference-tiny"], 1)
    with pytest.raises(SystemExit):
        cli.main(["bench", "--rivals", "tensorflow"])
    assert "--rivals must be a comma-separated list" in capsys.readouterr().err


def test_a_rival_asked_for_that_does_not_import_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setattr(runners, "peer_unavailable_reason",
                        lambda peer: "torch does not import: ImportError: gone")
    assert cli.main(["bench", "--rivals", "numpy,torch", "--shapes", "tiny"]) == 2
    assert "rival 'torch' cannot run here: torch does not import" in capsys.readouterr().err


def test_cases_by_name_do_not_mix_with_the_grid_flags(capsys):
    assert cli.main(["bench", "--cases", "lstm-train-origin", "--modes", "train"]) == 2
    assert "--cases names the cases itself; leave out --modes" in capsys.readouterr().err


def test_default_cases_are_every_origin_case_that_runs_here():
    names = [case.name for case in default_cases()]
    expected = [case.name for case in cases.make_cases(["origin"], cases.CELLS, cases.MODES)
                if cases.missing_features(case) is None]
    assert names == expected
    assert {"rnn-train-origin", "lstm-inference-origin", "lstm-latency-batch1"} <= set(names)


def test_a_case_fastrnn_cannot_run_is_an_error_naming_what_is_missing(monkeypatch, capsys,
                                                                      fresh_probes):
    class OneLayerLSTM(fastrnn.LSTM):
        def __init__(self, *args, num_layers=1, **kwargs):
            if num_layers != 1:
                raise TypeError("got an unexpected keyword argument 'num_layers'")
            super().__init__(*args, **kwargs)
    monkeypatch.setattr(fastrnn, "LSTM", OneLayerLSTM)
    monkeypatch.delattr(fastrnn, "GRU", raising=False)
    assert cli.main(["bench", "--cases", "lstm-inference-tiny-2layer-bidir"]) == 2
    assert ("lstm-inference-tiny-2layer-bidir needs fastrnn.LSTM(num_layers=2, "
            "bidirectional=True)") in capsys.readouterr().err
    assert cli.main(["bench", "--cells", "gru", "--modes", "inference"]) == 2
    assert "gru-inference-origin needs fastrnn.GRU" in capsys.readouterr().err
    # left to the defaults, the list holds only what runs: no GRU, no error
    assert not any(case.cell == "gru" for case in default_cases())


def test_a_fastrnn_with_a_gru_gets_its_cases(monkeypatch, fresh_probes, capsys):
    monkeypatch.setattr(fastrnn, "GRU", StandInGRU, raising=False)
    names = [case.name for case in default_cases()]
    assert {"gru-inference-origin", "gru-latency-batch1"} <= set(names)
    # the training step needs SequenceClassifier(cell="gru") too
    train = cases.CATALOGUE["gru-train-origin"]
    assert (train.name in names) == (cases.missing_features(train) is None)
    assert cli.main(["bench", "--list-cases"]) == 0
    listed = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines())
    assert set(listed) == set(cases.CATALOGUE)
    assert listed["gru-inference-medium"] == "runs here"
    assert listed["lstm-train-origin"] == "runs here"


def test_torch_and_onnxruntime_run_the_gru_from_fastrnns_weights(monkeypatch, fresh_probes):
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    monkeypatch.setattr(fastrnn, "GRU", StandInGRU, raising=False)
    case = cases.CATALOGUE["gru-inference-tiny"]
    y_torch = runners.make_runner("torch", case, 1)()
    y_onnx = runners.make_runner("onnxruntime", case, 1)()
    assert y_torch.shape == (3, 2, 5)
    np.testing.assert_allclose(y_onnx, y_torch, atol=1e-5)


def test_a_backend_without_the_cells_kernels_is_skipped_with_the_reason(monkeypatch,
                                                                         fresh_probes):
    monkeypatch.setattr(fastrnn, "GRU", StandInGRU, raising=False)
    module = fastrnn._backends.get_backend("numpy")
    for kernel in ("gru_forward", "gru_backward"):
        monkeypatch.delattr(module, kernel, raising=False)
    run, output, skip = runners.warmed_runner("numpy", cases.CATALOGUE["gru-inference-tiny"], 1)
    assert run is None and output is None
    assert skip == {"reason": "fastrnn's numpy backend has no gru_forward, gru_backward",
                    "failed": False}


def test_the_command_line_loads_the_harness_only_for_bench():
    code = ("import sys, fastrnn.cli\n"
            "fastrnn.cli.build_parser()\n"
            "fastrnn.cli.main(['info'])\n"
            "assert 'fastrnn.bench' not in sys.modules, 'the harness was imported'\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=OUTSIDE_REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_bench_help_shows_the_harness_flags(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", "--help"])
    assert exit_info.value.code == 0
    shown = capsys.readouterr().out
    assert shown.startswith("usage: fastrnn bench")
    for flag in ("--cases", "--list-cases", "--in-process", "--isolate", "--variants"):
        assert flag in shown


def test_other_commands_still_refuse_unknown_flags(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["info", "--bogus"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_frozen_and_stream_cases_take_the_quantize_variants_and_batch_one():
    chosen = cases.make_cases(["origin"], ["lstm"], ["inference", "frozen", "stream"],
                              ["plain", "int8", "lengths"])
    assert [case.name for case in chosen] == [
        "lstm-inference-origin", "lstm-inference-origin-lengths",
        "lstm-frozen-batch1", "lstm-frozen-batch1-int8", "lstm-frozen-origin",
        "lstm-frozen-origin-int8", "lstm-stream-batch1", "lstm-stream-batch1-int8"]
    stream = cases.CATALOGUE["gru-stream-batch1"]
    assert cases.case_flops(stream) == 2 * (28 + 128) * 3 * 128   # one frame
    assert cases.CATALOGUE["lstm-frozen-origin-int8"].layout.precision == "int8"


@pytest.mark.parametrize("quantize", [None, "int8"])
def test_every_rival_of_a_stream_case_steps_the_same_frames_with_the_state_carried(quantize):
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    case = cases.CATALOGUE["lstm-stream-batch1" + ("-int8" if quantize else "")]
    rivals = ["cpp", "onnxruntime"] + ([] if quantize else ["torch", "numpy"])
    steps = {rival: runners.make_runner(rival, case, 1) for rival in rivals}
    T = case.shape.T
    outputs = {rival: np.stack([step() for _ in range(T + 2)]) for rival, step in steps.items()}
    layer = fastrnn.LSTM(28, 128, batch_first=False, seed=0).freeze(quantize)
    x, _, _ = cases.make_batch(case, batch_first=False)
    y, _ = layer.forward(x)
    assert np.array_equal(outputs["cpp"][:T], y)
    # the state goes on past the last frame: the first frames again, from h_T
    assert not np.allclose(outputs["cpp"][T], outputs["cpp"][0])
    # ONNX Runtime's int8 quantizes its activations its own way
    tolerance = 0.03 if quantize else 1e-5
    for rival, out in outputs.items():
        assert np.abs(out - outputs["cpp"]).max() <= tolerance, rival


def test_bf16_cases_are_layers_and_frozen_models_in_bfloat16_timed_beside_float32():
    chosen = cases.make_cases(["origin"], ["gru"], ["train", "latency", "frozen"],
                              ["plain", "bf16"])
    assert [case.name for case in chosen] == [
        "gru-train-origin", "gru-train-origin-bf16", "gru-latency-batch1",
        "gru-frozen-batch1", "gru-frozen-batch1-bf16", "gru-frozen-origin",
        "gru-frozen-origin-bf16"]
    train = cases.CATALOGUE["gru-train-origin-bf16"]
    assert cases.layer_keywords(train) == {"precision": "bf16"}
    assert train.fp32_twin.name == "gru-train-origin" and train.twin == train.fp32_twin
    # a frozen model's precision is the freeze's: its layer is float32, and it has no twin
    frozen = cases.CATALOGUE["gru-frozen-origin-bf16"]
    assert cases.layer_keywords(frozen) == {} and frozen.twin is None
    # int8 is for frozen models only
    assert "gru-train-origin-int8" not in cases.CATALOGUE
    asked = [cases.CATALOGUE[name] for name in ("lstm-inference-medium-bf16",
                                                "lstm-inference-medium-lengths", "rnn-train-origin")]
    groups = [[case.name for case in group] for group in cases.timing_groups(asked)]
    assert groups == [["lstm-inference-medium", "lstm-inference-medium-bf16",
                       "lstm-inference-medium-lengths"], ["rnn-train-origin"]]


@pytest.mark.parametrize("mode", ["inference", "train"])
def test_every_rival_of_a_bf16_case_computes_in_bfloat16_from_the_same_weights(mode):
    pytest.importorskip("torch")
    case = cases.CATALOGUE[f"lstm-{mode}-tiny-bf16"]
    for rival in ("fastrnn.torch", "onnxruntime"):
        assert runners.not_applicable(rival, case) is not None
    rivals = ["torch"] + fastrnn.available_backends()
    outputs = {rival: runners.make_runner(rival, case, 1)() for rival in rivals}
    float32 = runners.make_runner("torch", case.fp32_twin, 1)()
    # torch's bf16 LSTM keeps its activations in bfloat16 too; its outputs are near
    # fastrnn's where products alone are rounded, and not equal to float32's
    assert np.any(np.asarray(outputs["torch"]) != np.asarray(float32))
    for rival in fastrnn.available_backends():
        assert np.allclose(outputs[rival], outputs["torch"], atol=0.02), rival
    if mode == "inference":   # fastrnn's rivals are its layers with precision="bf16"
        layer = fastrnn.LSTM(4, 5, batch_first=False, seed=0, backend="numpy", precision="bf16")
        x, _, _ = cases.make_batch(case, batch_first=False)
        assert np.array_equal(outputs["numpy"], layer.forward(x, training=False)[0])
