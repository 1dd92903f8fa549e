"""The benchmark code run once on tiny sizes, so it cannot rot; and the ONNX peer checked.

Timing is not tested here (the machine is shared): only that every rival
computes something sensible and that ONNX Runtime computes what fastrnn does.
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
from conftest import BACKENDS, assert_close, make_layer, make_problem
from fastrnn import bench

ROOT = pathlib.Path(__file__).resolve().parents[2]
TINY = bench.SHAPES["tiny"]
RIVALS = BACKENDS + list(bench.PEERS)
TRAINERS = BACKENDS + ["torch"]   # ONNX Runtime's operators do not train


# The benchmark code sets every library's threads; put them back for later tests.
pytestmark = pytest.mark.usefixtures("keep_thread_settings")


def runner_or_skip(rival, mode, cell, threads=1):
    try:
        return bench.make_runner(rival, bench.Case(mode, cell, "tiny", TINY), threads)
    except bench.Unavailable as exc:
        pytest.skip(str(exc))


@pytest.mark.parametrize("rival", RIVALS)
@pytest.mark.parametrize("mode", ["inference", "latency"])
def test_forward_runner_gives_finite_outputs(rival, mode, cell):
    y = runner_or_skip(rival, mode, cell)()
    assert y.shape == (TINY.T, TINY.B, TINY.H)
    assert np.all(np.isfinite(y)) and np.abs(y).max() < 1.0 + 1e-6  # h = tanh(.) or o*tanh(c)


@pytest.mark.parametrize("rival", TRAINERS)
def test_train_step_runner_lowers_the_loss(rival, cell):
    step = runner_or_skip(rival, "train", cell)
    losses = [step() for _ in range(30)]
    assert all(math.isfinite(loss) and loss > 0 for loss in losses)
    # Adam on one fixed batch must make progress: the steps really train.
    assert losses[-1] < losses[0]


def other_runners(rivals, mode, cell):
    """(rival, runner) for every rival but the reference that can run here."""
    for rival in rivals:
        if rival == "numpy":
            continue
        try:
            yield rival, bench.make_runner(rival, bench.Case(mode, cell, "tiny", TINY), 1)
        except bench.Unavailable:
            continue


@pytest.mark.parametrize("mode", ["inference", "latency"])
def test_every_rival_computes_the_same_outputs(mode, cell):
    reference = runner_or_skip("numpy", mode, cell)()
    for rival, run in other_runners(RIVALS, mode, cell):
        assert_close(run(), reference, "output", np.float32, f"{rival} y")


def test_every_rival_takes_the_same_training_steps(cell):
    reference = runner_or_skip("numpy", "train", cell)
    expected = [reference() for _ in range(3)]
    for rival, step in other_runners(TRAINERS, "train", cell):
        losses = [step() for _ in range(3)]
        # same starting weights, data and Adam: the same losses, step after step
        np.testing.assert_allclose(losses, expected, rtol=1e-5, err_msg=rival)


def test_onnxruntime_does_not_train():
    pytest.importorskip("onnxruntime")
    with pytest.raises(bench.Unavailable, match="inference only"):
        bench.make_runner("onnxruntime", bench.Case("train", "lstm", "tiny", TINY), 1)


def test_unknown_rival_is_an_error():
    with pytest.raises(ValueError, match="unknown rival"):
        bench.make_runner("tensorflow", bench.Case("inference", "rnn", "tiny", TINY), 1)


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
    feeds = {"X": x, "initial_h": states[0][None]}
    if cell == "lstm":
        feeds["initial_c"] = states[1][None]
    session = bench.onnx_session(bench.onnx_model(cell, layer.state_dict()), threads=1)
    y, *finals = session.run(None, feeds)
    assert_close(y[:, 0], y_ref, "output", np.float32, "Y")
    for k, (final, expected) in enumerate(zip(finals, finals_ref)):
        assert_close(final[0], expected, "output", np.float32, f"final state {k}")


def test_report_runs_every_rival_on_tiny_cases(capsys):
    cases = [bench.Case(mode, cell, "tiny", TINY) for cell in bench.CELLS
             for mode in ("inference", "train")]
    peak = {"gflops": 100.0, "size": 2048, "kernel": "test", "threads": 1}
    rivals = bench.rival_names()
    report = bench.run_report(cases, rivals, threads=1, budget=0.02, min_rounds=2, peak=peak)
    timed = {(r["case"], r["rival"]) for r in report["results"]}
    skipped = {(s["case"], s["rival"]) for s in report["skipped"]}
    assert timed | skipped == {(bench.case_label(c), r) for c in cases for r in rivals}
    assert not timed & skipped
    assert ("rnn inference tiny", "numpy") in timed
    for row in report["results"]:
        assert row["samples"] >= 2 and row["median_s"] > 0 and row["gflops"] > 0
    text = bench.format_report(report)
    for column in bench.COLUMNS:
        assert column in text


def test_bench_suites_run_once_on_tiny_sizes(tmp_path):
    """`pytest bench/`, every benchmark of the best backend called once on tiny sizes.

    The peers' runners are exercised above; this checks the suites' own
    plumbing (conftest options, groups, fixtures) without importing torch.
    """
    # The child must import the fastrnn this process imported (installed, or a
    # source tree), so it runs outside the repository with that on its path.
    package_parent = str(pathlib.Path(fastrnn.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [package_parent] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    best = BACKENDS[0]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", str(ROOT / "bench"), "--bench-tiny",
         "--benchmark-disable", "--bench-threads", "1", "-q", "-p", "no:cacheprovider",
         "-k", f"{best} and (origin or batch1)"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = done.stdout.strip().splitlines()[-1]
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (\w+)", summary)}
    # inference, train step and latency, for rnn and lstm
    assert counts == {"passed": 6, "deselected": counts.get("deselected")}, summary
