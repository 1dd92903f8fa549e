"""The benchmark's rivals run once on tiny sizes, so they cannot rot; the peers checked.

Timing is not tested here (the machine is shared): only that every rival
computes something sensible, that all compute the same thing, and that torch
and ONNX Runtime are driven as fastrnn is (gate orders, packed lengths).
"""

import math
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

import fastrnn
from helpers import BACKENDS, assert_close, make_layer, make_problem
from fastrnn.bench import onnx_graphs, runners
from fastrnn.bench.cases import CATALOGUE, Shape, make_batch, missing_features
from fastrnn.cells import CELLS

ROOT = pathlib.Path(__file__).resolve().parents[2]
# Every tiny case the installed fastrnn runs: the GRU and the layer variants join by themselves.
TINY_CASES = [case for name, case in CATALOGUE.items()
              if case.shape_name == "tiny" and missing_features(case) is None]
RIVALS = BACKENDS + list(runners.PEERS)

# The benchmark code sets every library's threads; put them back for later tests.
pytestmark = pytest.mark.usefixtures("keep_thread_settings")


def runner_or_skip(rival, case, threads=1):
    try:
        return runners.make_runner(rival, case, threads)
    except runners.Unavailable as exc:
        pytest.skip(str(exc))


@pytest.mark.parametrize("rival", RIVALS)
@pytest.mark.parametrize("case", [c for c in TINY_CASES if c.mode == "inference"]
                         + [CATALOGUE["rnn-latency-batch1"]], ids=lambda case: case.name)
def test_forward_runner_gives_finite_outputs(rival, case):
    y = runner_or_skip(rival, case)()
    T, B, _, H = case.shape
    assert y.shape == (T, B, case.directions * H)
    assert np.all(np.isfinite(y)) and np.abs(y).max() < 1.0 + 1e-6  # h = tanh(.), o*tanh(c), ...


# ONNX Runtime's operators do not train
@pytest.mark.parametrize("rival", BACKENDS + ["torch", "fastrnn.torch"])
@pytest.mark.parametrize("case", [c for c in TINY_CASES if c.mode == "train"],
                         ids=lambda case: case.name)
def test_train_step_runner_lowers_the_loss(rival, case):
    step = runner_or_skip(rival, case)
    losses = [step() for _ in range(30)]
    assert all(math.isfinite(loss) and loss > 0 for loss in losses)
    # Adam on one fixed batch must make progress: the steps really train.
    assert losses[-1] < losses[0]


def other_runners(case):
    """(rival, runner) for every rival but the reference that can run `case` here."""
    for rival in RIVALS:
        if rival == "numpy":
            continue
        try:
            yield rival, runners.make_runner(rival, case, 1)
        except runners.Unavailable:
            continue


# torch in bfloat16 rounds its states, outputs and loss to bfloat16 as well (and Adam
# updates bfloat16 parameters): within 2^-6 of fastrnn's bf16, as tests/kernels/test_bf16.py
# derives for the LSTM's outputs; fastrnn's backends round the products' operands alone,
# as the reference does.
TORCH_BF16_TOLERANCE = 2.0 ** -6


def in_torch_bf16(rival, case):
    return rival == "torch" and case.layout.precision == "bf16"


@pytest.mark.parametrize("case", TINY_CASES, ids=lambda case: case.name)
def test_every_rival_computes_what_the_reference_does(case):
    reference = runner_or_skip("numpy", case)
    if case.mode != "train":
        expected = reference()
        for rival, run in other_runners(case):
            if in_torch_bf16(rival, case):
                assert np.abs(run() - expected).max() <= TORCH_BF16_TOLERANCE
            else:
                assert_close(run(), expected, "output", np.float32, f"{rival} y")
        return
    expected = [reference() for _ in range(3)]
    for rival, step in other_runners(case):
        # same starting weights, data and Adam: the same losses, step after step
        np.testing.assert_allclose([step() for _ in range(3)], expected,
                                   rtol=TORCH_BF16_TOLERANCE if in_torch_bf16(rival, case)
                                   else 1e-5, err_msg=rival)


def test_onnxruntime_does_not_train():
    pytest.importorskip("onnxruntime")
    with pytest.raises(runners.Unavailable, match="inference only"):
        runners.make_runner("onnxruntime", CATALOGUE["lstm-train-tiny"], 1)


@pytest.mark.parametrize("T,B,I,H", [(1, 1, 1, 1), (7, 3, 4, 5), (28, 2, 28, 16)],
                         ids=lambda v: str(v))
def test_onnxruntime_matches_reference(cell, T, B, I, H):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    layer = make_layer(cell, I, H, backend="numpy", batch_first=False, seed=T + H)
    x, state, _, _ = make_problem(cell, T, B, I, H, batch_first=False, seed=B)
    y_ref, final_ref = layer.forward(x, state, training=False)
    states, finals_ref = ((state, final_ref) if cell == "lstm"
                          else ((state,), (final_ref,)))
    feeds = {"X": x, "initial_h": states[0]}   # (1, B, H), as fastrnn and ONNX lay them out
    if cell == "lstm":
        feeds["initial_c"] = states[1]
    session = onnx_graphs.onnx_session(onnx_graphs.onnx_model(cell, layer.state_dict()),
                                       threads=1)
    y, *finals = session.run(None, feeds)
    assert_close(y[:, 0], y_ref, "output", np.float32, "Y")
    for k, (final, expected) in enumerate(zip(finals, finals_ref)):
        assert_close(final, expected, "output", np.float32, f"final state {k}")


def torch_weights(module, head=None):
    weights = {key: value.detach().numpy().copy() for key, value in module.state_dict().items()}
    if head is not None:
        weights["fc.weight"] = head.weight.detach().numpy().copy()
        weights["fc.bias"] = head.bias.detach().numpy().copy()
    return weights


@pytest.mark.parametrize("T,B,I,H", [(1, 1, 1, 1), (7, 3, 4, 5)], ids=lambda v: str(v))
def test_onnxruntime_gru_matches_torch(T, B, I, H):
    # torch's gates r, z, n become ONNX's z, r, h, with linear_before_reset=1
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    torch.manual_seed(T + H)
    gru = torch.nn.GRU(I, H)
    x = np.random.default_rng(B).standard_normal((T, B, I)).astype(np.float32)
    with torch.no_grad():
        y_torch, h_torch = gru(torch.from_numpy(x))
    session = onnx_graphs.onnx_session(onnx_graphs.onnx_model("gru", torch_weights(gru)), 1)
    y, h = session.run(None, {"X": x, "initial_h": np.zeros((1, B, H), np.float32)})
    assert_close(y[:, 0], y_torch.numpy(), "output", np.float32, "Y")
    assert_close(h, h_torch.numpy(), "output", np.float32, "Y_h")


@pytest.mark.parametrize("cell", list(CELLS))
def test_torch_reads_a_lengths_batch_through_packed_sequences(cell):
    torch = pytest.importorskip("torch")
    case = CATALOGUE[f"{cell}-inference-medium-lengths"]._replace(shape=Shape(9, 5, 3, 4))
    module = getattr(torch.nn, CELLS[cell].torch_module)(3, 4)
    y = runners.torch_runner(case, 1, torch_weights(module))()
    x, _, lengths = make_batch(case, batch_first=False)
    assert lengths.min() < 9 and y.shape == (9, 5, 4)
    for b, length in enumerate(lengths):
        with torch.no_grad():   # sequence b alone, only its own steps
            alone, _ = module(torch.from_numpy(x[:length, b:b + 1]))
        np.testing.assert_allclose(y[:length, b], alone[:, 0].numpy(), atol=1e-6)
        assert not y[length:, b].any()


def test_torch_trains_on_each_sequences_last_step_with_lengths():
    torch = pytest.importorskip("torch")
    case = CATALOGUE["lstm-train-medium-lengths"]._replace(shape=Shape(9, 5, 3, 4))
    module, head = torch.nn.LSTM(3, 4, batch_first=True), torch.nn.Linear(4, 10)
    loss = runners.torch_runner(case, 1, torch_weights(module, head))()
    x, labels, lengths = make_batch(case)
    with torch.no_grad():
        finals = torch.cat([module(torch.from_numpy(x[b:b + 1, :length]))[1][0][-1]
                            for b, length in enumerate(lengths)])
        expected = torch.nn.functional.cross_entropy(head(finals), torch.from_numpy(labels))
    assert loss == pytest.approx(expected.item(), rel=1e-6)


def test_torch_head_reads_both_directions_of_the_last_layer():
    torch = pytest.importorskip("torch")
    case = CATALOGUE["gru-train-tiny-2layer-bidir"]
    T, B, I, H = case.shape
    module = torch.nn.GRU(I, H, num_layers=2, bidirectional=True, batch_first=True)
    head = torch.nn.Linear(2 * H, 10)
    loss = runners.torch_runner(case, 1, torch_weights(module, head))()
    x, labels, _ = make_batch(case)
    with torch.no_grad():
        y, _ = module(torch.from_numpy(x))
        # forward direction after the last step, reverse direction after the first
        final = torch.cat([y[:, -1, :H], y[:, 0, H:]], dim=1)
        expected = torch.nn.functional.cross_entropy(head(final), torch.from_numpy(labels))
    assert loss == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("mode", ["isolated", "in-process"])
def test_bench_suites_run_once_on_tiny_sizes(tmp_path, mode):
    """`pytest bench/` on tiny sizes, the best backend's cases once each, in either mode."""
    # The child must import the fastrnn this process imported (installed, or a
    # source tree), so it runs outside the repository with that on its path.
    package_parent = str(pathlib.Path(fastrnn.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [package_parent] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    best = BACKENDS[0]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", str(ROOT / "bench"), "--bench-tiny",
         "--benchmark-disable", "--bench-threads", "1", "-q", "-p", "no:cacheprovider",
         "-k", best] + (["--bench-in-process"] if mode == "in-process" else []),
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = done.stdout.strip().splitlines()[-1]
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (\w+)", summary)}
    # inference, train step, frozen model and stream of each cell, and any variant that
    # runs here; latency, stream and frozen also at batch 1
    expected = sum(1 for case in TINY_CASES if case.mode != "latency") + sum(
        1 for case in CATALOGUE.values() if case.shape_name == "batch1"
        and missing_features(case) is None)
    assert counts == {"passed": expected, "deselected": counts.get("deselected")}, summary
