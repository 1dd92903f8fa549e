"""Data-parallel training under MPI: N ranks train the model one process trains.

The tests that need ranks start `mpiexec -n 2` (the one beside this Python
first, as `pip install ".[mpi]"` puts it there); where mpiexec or mpi4py is
missing they skip and say so, unless FASTRNN_TEST_REQUIRE_MPI=1 (CI) makes
that a failure. fastrnn.distributed's single-process behaviour is tested
without MPI.
"""

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import fastrnn
from fastrnn import distributed
from fastrnn.checkpoint import read_checkpoint
from fastrnn.distributed import RankError, World
from fastrnn.training import BatchOrder

from helpers import relative_error, write_mnist

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parents[1] / "examples" / "distributed_training.py"
PROBE = HERE / "mpi_train_probe.py"
API_CHECKS = HERE / "mpi_api_checks.py"
MPIEXEC = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")

# Small enough to be quick, large enough to be a real LSTM: 400 images, 10 batches an epoch.
# Clipping makes the gradients' scale matter (Adam alone would not see a missing 1/N).
TRAIN = ["--hidden", 12, "--batch-size", 40, "--clip", 0.5, "--log-every", 1,
         "--test-limit", 60]
STEPS = 40
TIMEOUT = 120   # seconds for any one launch; a hang is a failure, not a stuck suite


@pytest.fixture(scope="module")
def mpiexec():
    missing = [what for what, there in (("mpiexec", MPIEXEC),
                                        ("mpi4py", importlib.util.find_spec("mpi4py")))
               if not there]
    if missing:
        why = f"{' and '.join(missing)} not installed (pip install '.[mpi]')"
        if os.environ.get("FASTRNN_TEST_REQUIRE_MPI") == "1":
            pytest.fail(f"{why}, but FASTRNN_TEST_REQUIRE_MPI=1 asks for the MPI tests")
        pytest.skip(why)
    return MPIEXEC


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("mnist")
    write_mnist(root, n_train=400, n_test=60, seed=3)
    return str(root)


def launch(mpiexec, ranks, args, cwd):
    """Run `python args...` (under `mpiexec -n ranks` when ranks is given) in cwd;
    returns (exit code, stdout, stderr, seconds). A run past TIMEOUT is killed,
    with every process it started, and fails the test."""
    env = {key: value for key, value in os.environ.items()
           if key not in distributed.LAUNCHER_VARIABLES
           and key not in ("FASTRNN_NUM_THREADS", "FASTRNN_MPI")}
    command = [sys.executable, *map(str, args)]
    if ranks is not None:
        command = [mpiexec, "-n", str(ranks), *command]
    started = time.monotonic()
    child = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = child.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        out, err = child.communicate()
        pytest.fail(f"{' '.join(command)} still ran after {TIMEOUT} s:\n{out}\n{err}")
    return child.returncode, out, err, time.monotonic() - started


def train(mpiexec, ranks, directory, name, *flags, data, steps=STEPS):
    code, out, err, seconds = launch(
        mpiexec, ranks, ["-m", "fastrnn", "train", "--data", data, "--steps", steps, *TRAIN,
                         "--save", directory / f"{name}.npz",
                         "--metrics-out", directory / f"{name}.json", *flags], directory)
    return code, out, err, seconds


def read_json(path):
    with open(path) as file:
        return json.load(file)


def assert_same_model(actual_path, expected_path):
    actual = fastrnn.load(actual_path).parameters()
    expected = fastrnn.load(expected_path).parameters()
    for key in expected:
        assert relative_error(actual[key], expected[key]) <= 1e-4, key


@pytest.fixture(scope="module")
def runs(mpiexec, data, tmp_path_factory):
    """The same 40 steps as one process (2 threads here) and as two ranks."""
    directory = tmp_path_factory.mktemp("runs")
    one = train(mpiexec, None, directory, "one", "--no-progress", data=data)
    # Progress on: a non-terminal stderr gets a line at the first and the last step.
    two = train(mpiexec, 2, directory, "two", "--check-params-every", 10, data=data)
    assert one[0] == 0, one[2]
    assert two[0] == 0, two[2]
    return {"dir": directory, "one": one, "two": two}


def test_two_ranks_train_the_model_one_process_trains(runs):
    directory = runs["dir"]
    assert_same_model(directory / "two.npz", directory / "one.npz")
    one, two = read_json(directory / "one.json"), read_json(directory / "two.json")
    assert (one["world_size"], two["world_size"]) == (1, 2)
    assert [entry["step"] for entry in two["history"]] == list(range(1, STEPS + 1))
    for mine, theirs in zip(two["history"], one["history"]):
        assert mine["loss"] == pytest.approx(theirs["loss"], rel=1e-5)
        assert mine["grad_norm"] == pytest.approx(theirs["grad_norm"], rel=1e-4)
        assert mine["h_T_mean"] == pytest.approx(theirs["h_T_mean"], rel=1e-3, abs=1e-6)
        assert abs(mine["batch_accuracy"] - theirs["batch_accuracy"]) <= 1 / 40
    assert two["final_train_loss"] == pytest.approx(one["final_train_loss"], rel=1e-5)
    assert two["test_loss"] == pytest.approx(one["test_loss"], rel=1e-5)
    assert two["test_examples"] == one["test_examples"] == 60


def test_each_rank_computes_its_rows_of_the_batch_one_process_computes(mpiexec, data,
                                                                        tmp_path):
    code, out, err, _ = launch(mpiexec, 2, [PROBE, "labels", 3, "--data", data, "--steps", 3,
                                            *TRAIN, "--no-progress"], tmp_path)
    assert code == 0, err
    seen = {(int(rank), int(step)): [int(label) for label in labels.split(",")]
            for rank, step, labels in re.findall(r"rank (\d) step (\d) labels ([\d,]+)", out)}
    _, y_train, _, _ = fastrnn.datasets.load_mnist(data, download=False)
    order = BatchOrder(len(y_train), 40, seed=0)
    for step in (1, 2, 3):
        assert seen[0, step] + seen[1, step] == list(y_train[order.indices(step - 1)]), step
        assert len(seen[0, step]) == 20


def test_rank_zero_alone_prints_shows_progress_and_writes(runs):
    _, out, err, _ = runs["two"]
    assert out.count("fastrnn train: LSTM H=12") == 1
    assert "ranks 2 (20 rows each)" in out
    for step in range(1, STEPS + 1):
        assert out.count(f"step {step:5d}  loss") == 1, step
    assert out.count("test loss") == out.count("saved ") == out.count("metrics: ") == 1
    assert err.count(f"train: 1/{STEPS} steps") == 1, err
    assert err.count(f"train: {STEPS}/{STEPS} steps") == 1, err
    assert sorted(path.name for path in runs["dir"].iterdir()) == \
        ["one.json", "one.npz", "two.json", "two.npz"]


def test_each_rank_uses_its_share_of_the_cpus_by_default(runs):
    cpus = len(os.sched_getaffinity(0))
    assert read_json(runs["dir"] / "two.json")["threads"] == max(1, cpus // 2)
    assert read_json(runs["dir"] / "one.json")["threads"] == cpus


def test_eval_under_mpiexec_splits_the_test_set_and_reports_once(mpiexec, runs, data,
                                                                 tmp_path):
    checkpoint = runs["dir"] / "two.npz"
    code, out, err, _ = launch(mpiexec, 2, ["-m", "fastrnn", "eval", checkpoint, "--data", data,
                                            "--test-limit", 59,
                                            "--metrics-out", tmp_path / "eval.json"], tmp_path)
    assert code == 0, err
    assert out.count("test accuracy") == 1
    split = read_json(tmp_path / "eval.json")
    assert split["world_size"] == 2 and split["test_examples"] == 59   # shares of 29 and 30
    model = fastrnn.load(checkpoint)
    _, _, x_test, y_test = fastrnn.datasets.load_mnist(data, download=False)
    loss, accuracy = model.evaluate(x_test[:59], y_test[:59])
    assert split["test_loss"] == pytest.approx(loss, rel=1e-6)
    assert split["test_accuracy"] == accuracy


def test_a_batch_size_the_ranks_cannot_share_is_an_error_before_training(mpiexec, data,
                                                                          tmp_path):
    code, out, err, _ = train(mpiexec, 2, tmp_path, "odd", "--batch-size", 41, data=data)
    assert code == 2
    assert err.count("batch size 41 cannot be split evenly across 2 ranks") == 1, err
    assert "step" not in out and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_resume_under_mpiexec_ends_where_one_process_ends(mpiexec, runs, data, tmp_path):
    # Rank 1 fails at step 25; the checkpoint of step 20 survives it.
    code, _, err, _ = launch(mpiexec, 2, [PROBE, "raise", 1, 25, "--data", data,
                                          "--steps", STEPS, *TRAIN, "--no-progress",
                                          "--save", tmp_path / "run.npz", "--save-every", 10],
                             tmp_path)
    assert code != 0 and "injected failure at step 25" in err
    assert read_checkpoint(tmp_path / "run.npz").train_state["step"] == 20

    code, out, err, _ = launch(mpiexec, 2, ["-m", "fastrnn", "train", "--data", data,
                                            "--resume", tmp_path / "run.npz", "--no-progress",
                                            "--log-every", 1, "--test-limit", 60, "--save", tmp_path / "run.npz",
                                            "--metrics-out", tmp_path / "run.json"], tmp_path)
    assert code == 0, err
    assert out.count("resuming at step 20") == 1
    resumed = read_json(tmp_path / "run.json")
    assert resumed["resumed_from_step"] == 20 and resumed["steps"] == STEPS
    assert resumed["world_size"] == 2
    assert_same_model(tmp_path / "run.npz", runs["dir"] / "one.npz")
    straight = read_json(runs["dir"] / "one.json")["history"]
    assert [entry["loss"] for entry in resumed["history"]] == \
        pytest.approx([entry["loss"] for entry in straight], rel=1e-5)


# Far more steps than the run could take in TIMEOUT: it ends only because a rank failed.
ENDLESS = ["--steps", 10 ** 6, *TRAIN, "--no-progress", "--log-every", 2, "--save-every", 2]


def test_an_exception_on_one_rank_ends_every_rank_with_its_error(mpiexec, data, tmp_path):
    code, out, err, seconds = launch(
        mpiexec, 2, [PROBE, "raise", 1, 5, "--data", data, *ENDLESS,
                     "--save", tmp_path / "run.npz"], tmp_path)
    assert code != 0
    assert "error: injected failure at step 5 (on rank 1 of 2; ending every rank)" in err
    assert "step     4  loss" in out and "step     6  loss" not in out
    assert seconds < TIMEOUT / 2
    read_checkpoint(tmp_path / "run.npz")   # whole: step 2 or 4, never half-written


def test_a_killed_rank_ends_every_rank_and_the_error_names_it(mpiexec, data, tmp_path):
    code, out, err, seconds = launch(
        mpiexec, 2, [PROBE, "kill", 1, 5, "--data", data, *ENDLESS,
                     "--save", tmp_path / "run.npz"], tmp_path)
    assert code != 0 and seconds < TIMEOUT / 2
    assert "step     6  loss" not in out
    # mpiexec names the rank that died by its pid; rank 0's "ranks:" line maps pids to ranks.
    pids = dict(re.findall(r"(\d+) = pid (\d+)", out))
    named = re.search(r"PID (\d+)", out + err) or re.search(r"rank (\d+) with PID", out + err)
    assert pids and named, out + err
    assert named.group(1) in (pids["1"], "1")
    read_checkpoint(tmp_path / "run.npz")


def test_an_uncaught_exception_in_a_users_script_ends_every_rank(mpiexec, tmp_path):
    script = ("from fastrnn import distributed\n"
              "if distributed.rank() == 1:\n"
              "    raise ValueError('no data on this rank')\n"
              "distributed.allreduce([1.0])   # rank 0 would wait here for rank 1 forever\n")
    code, out, err, seconds = launch(mpiexec, 2, ["-c", script], tmp_path)
    assert code != 0 and seconds < TIMEOUT / 2
    assert "ValueError: no data on this rank" in err
    assert "(on rank 1 of 2: ending every rank)" in err


def test_the_example_trains_one_model_on_two_ranks(mpiexec, tmp_path):
    outputs = {}
    for ranks in (None, 2):
        code, out, err, _ = launch(mpiexec, ranks, [EXAMPLE], tmp_path)
        assert code == 0, err
        outputs[ranks] = out
    alone, shared = outputs[None], outputs[2]
    assert shared.count("2 rank(s), 16 rows each") == 1 and "1 rank(s), 32 rows" in alone
    losses = [[float(v) for v in re.findall(r"loss (\S+)", out)] for out in (alone, shared)]
    assert len(losses[0]) == 3 and losses[1] == pytest.approx(losses[0], rel=1e-4)
    assert re.findall(r"train accuracy \S+", shared) == re.findall(r"train accuracy \S+", alone)
    assert float(re.search(r"train accuracy (\S+)", alone).group(1)) > 0.8   # it learned


def test_the_api_across_two_ranks(mpiexec, tmp_path):
    code, out, err, _ = launch(mpiexec, 2, [API_CHECKS], tmp_path)
    assert code == 0, err
    # The ranks share one stdout, so their lines may run into each other.
    assert sorted(re.findall(r"rank \d+ ok", out)) == ["rank 0 ok", "rank 1 ok"]


# -- one process: no MPI needed ------------------------------------------------------


class FakeCommunicator:
    """Rank `rank` of `size`, for the arithmetic that needs no messages."""

    def __init__(self, rank, size):
        self.rank, self.size = rank, size

    def Get_rank(self):
        return self.rank

    def Get_size(self):
        return self.size


def test_a_process_alone_is_rank_zero_of_one_and_its_collectives_return_their_input():
    world = World()
    assert (world.rank, world.size) == (0, 1)
    assert world.local_rows(7) == slice(0, 7) and world.share(5) == slice(0, 5)
    grads = {"w": np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)}
    before = grads["w"].copy()
    assert world.allreduce_grads(grads) is grads
    np.testing.assert_array_equal(grads["w"], before)
    np.testing.assert_array_equal(world.allreduce([2.5, 3]), [2.5, 3.0])
    assert world.broadcast({"a": 1}) == {"a": 1}
    world.check_parameters_agree(grads, step=3)
    assert world.threads_per_rank() == len(os.sched_getaffinity(0))
    assert world.agree(lambda: 42) == 42
    with pytest.raises(KeyError):   # alone, a failure is itself, traceback and all
        world.agree(lambda: {}["missing"])


@pytest.mark.parametrize("size", [1, 2, 3, 7])
def test_the_ranks_rows_cover_each_batch_once_in_order(size):
    batch = 6 * size
    rows = [World(FakeCommunicator(r, size)).local_rows(batch) for r in range(size)]
    assert np.array_equal(np.concatenate([np.arange(batch)[s] for s in rows]),
                          np.arange(batch))
    shares = [World(FakeCommunicator(r, size)).share(10) for r in range(size)]
    assert np.array_equal(np.concatenate([np.arange(10)[s] for s in shares]), np.arange(10))


def test_a_batch_the_ranks_cannot_share_names_the_fix():
    world = World(FakeCommunicator(0, 4))
    with pytest.raises(ValueError, match=r"batch size 50 cannot be split evenly across 4 "
                                         r"ranks: use a multiple of 4 \(such as 48\)"):
        world.local_rows(50)
    with pytest.raises(ValueError, match="such as 3"):
        World(FakeCommunicator(0, 3)).local_rows(2)
    for bad in (0, -3, True, 2.0):
        with pytest.raises(ValueError, match="positive integer"):
            world.local_rows(bad)


def test_gradients_the_buffer_cannot_hold_are_clear_errors():
    world = World(FakeCommunicator(0, 2))   # a process alone sums nothing, so checks nothing
    with pytest.raises(TypeError, match="dict of arrays"):
        world.allreduce_grads([np.zeros(3, np.float32)])
    with pytest.raises(TypeError, match="one dtype"):
        world.allreduce_grads({"a": np.zeros(3, np.float32), "b": np.zeros(3)})
    with pytest.raises(TypeError, match="floating NumPy array"):
        world.allreduce_grads({"a": [1.0, 2.0]})
    with pytest.raises(TypeError, match="floating NumPy array"):
        world.allreduce_grads({"a": np.zeros(3, np.int32)})
    frozen = np.zeros(3, np.float32)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        world.allreduce_grads({"a": frozen})


def test_a_rank_error_says_once_what_every_rank_says_else_names_each_rank():
    assert str(RankError({0: "no data", 1: "no data"}, 2)) == "no data"
    assert str(RankError({1: "no data"}, 2)) == "on rank 1: no data"
    assert str(RankError({2: "b", 0: "a"}, 3)) == "on rank 0: a; on rank 2: b"


def test_only_a_launcher_makes_a_process_a_rank(monkeypatch):
    for name in distributed.LAUNCHER_VARIABLES + ("FASTRNN_MPI",):
        monkeypatch.delenv(name, raising=False)
    assert not distributed.launched_by_mpi()
    monkeypatch.setenv("PMI_RANK", "0")
    assert distributed.launched_by_mpi()
    monkeypatch.setenv("FASTRNN_MPI", "0")
    assert not distributed.launched_by_mpi()
    monkeypatch.setenv("FASTRNN_MPI", "yes")
    with pytest.raises(ValueError, match="FASTRNN_MPI must be 0 or 1"):
        distributed.launched_by_mpi()


def test_a_launched_process_without_mpi4py_says_how_to_get_it(monkeypatch):
    monkeypatch.setenv("FASTRNN_MPI", "1")
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    monkeypatch.setattr(distributed, "_world", None)
    with pytest.raises(RuntimeError, match=r"pip install 'fastrnn\[mpi\]'"):
        distributed.world()
    assert distributed.current_world() is None


def test_one_process_writes_world_size_one(tmp_path, data, capsys):
    from fastrnn.cli import main
    argv = ["train", "--data", data, "--steps", 2, *TRAIN, "--no-progress",
            "--metrics-out", tmp_path / "m.json"]
    code = main([str(arg) for arg in argv])
    assert code == 0, capsys.readouterr().err
    assert read_json(tmp_path / "m.json")["world_size"] == 1
    assert "ranks" not in capsys.readouterr().out
