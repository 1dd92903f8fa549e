"""Each case timed on every rival: fastrnn's backends, torch, ONNX Runtime.

Groups are named "<cell> <mode> <shape>", so the rivals of one case are one
table in pytest-benchmark's report. FLOPs per call are in each benchmark's
extra_info (see fastrnn/bench.py for how they are counted).
"""

import math

import numpy as np
import pytest

from conftest import RIVALS, TRAINERS, case_params
FULL_SHAPES = ["origin", "medium", "large"]


@pytest.mark.parametrize("rival", RIVALS)
@pytest.mark.parametrize("case", case_params("inference", FULL_SHAPES))
def test_inference(benchmark, warmed_runner, rival, case):
    run, shape = warmed_runner(rival, case)
    y = benchmark(run)
    assert y.shape == (shape.T, shape.B, shape.H) and np.all(np.isfinite(y))


@pytest.mark.parametrize("rival", TRAINERS)
@pytest.mark.parametrize("case", case_params("train", FULL_SHAPES))
def test_train_step(benchmark, warmed_runner, rival, case):
    run, _ = warmed_runner(rival, case)
    loss = benchmark(run)
    assert math.isfinite(loss) and loss > 0


@pytest.mark.parametrize("rival", RIVALS)
@pytest.mark.parametrize("case", case_params("latency", ["batch1"]))
def test_latency(benchmark, warmed_runner, rival, case):
    run, shape = warmed_runner(rival, case)
    y = benchmark(run)
    assert y.shape == (shape.T, shape.B, shape.H) and np.all(np.isfinite(y))
