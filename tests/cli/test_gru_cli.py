"""`fastrnn train --cell gru`, `fastrnn eval` of its checkpoint, resume and diagnostics."""

import numpy as np
import pytest

import fastrnn
from helpers import BACKENDS, read_json, run_cli as run
from helpers import REAL, have_real


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@have_real
def test_train_a_gru_for_20_steps_and_eval_its_checkpoint(backend, tmp_path, capsys):
    ckpt, metrics, evaluated = tmp_path / "gru.npz", tmp_path / "m.json", tmp_path / "e.json"
    code, out, err = run(["train", "--cell", "gru", "--steps", 20, "--hidden", 32,
                          "--test-limit", 500, "--data", REAL, "--backend", backend,
                          "--no-progress", "--save", ckpt, "--metrics-out", metrics], capsys)
    assert code == 0, err
    assert out.startswith("fastrnn train: GRU H=32") and "step    20  loss" in out
    result = read_json(metrics)
    assert result["cell"] == "gru" and result["steps"] == 20 and result["backend"] == backend
    assert result["test_accuracy"] > 0.2   # 20 steps: well above chance (0.1) already

    code, out, err = run(["eval", ckpt, "--data", REAL, "--test-limit", 500,
                          "--backend", backend, "--metrics-out", evaluated], capsys)
    assert code == 0, err
    assert out.startswith(f"{ckpt}: GRU H=32")
    again = read_json(evaluated)
    assert again["cell"] == "gru"
    assert again["test_accuracy"] == result["test_accuracy"]
    assert again["test_loss"] == result["test_loss"]
    model = fastrnn.load(ckpt, backend=backend)
    _, _, x_test, y_test = fastrnn.datasets.load_mnist(REAL, download=False)
    assert np.mean(model.predict(x_test[:500]) == y_test[:500]) == result["test_accuracy"]


def test_a_resumed_gru_run_ends_where_the_straight_run_does(backend, tmp_path, tiny_data,
                                                           capsys):
    common = ["train", "--cell", "gru", "--data", tiny_data, "--hidden", 8, "--batch-size", 50,
              "--backend", backend, "--no-progress", "--log-every", 0]
    code, _, err = run([*common, "--steps", 6, "--save", tmp_path / "straight.npz"], capsys)
    assert code == 0, err
    code, _, err = run([*common, "--steps", 3, "--save", tmp_path / "half.npz"], capsys)
    assert code == 0, err
    code, out, err = run(["train", "--data", tiny_data, "--resume", tmp_path / "half.npz",
                          "--steps", 6, "--backend", backend, "--no-progress",
                          "--save", tmp_path / "resumed.npz"], capsys)
    assert code == 0, err
    assert out.startswith("fastrnn train: GRU H=8") and "resuming at step 3" in out
    straight = fastrnn.load(tmp_path / "straight.npz").parameters()
    resumed = fastrnn.load(tmp_path / "resumed.npz").parameters()
    for key, value in straight.items():
        np.testing.assert_array_equal(resumed[key], value)


def test_gru_diagnostics_are_recorded_and_drawn(tmp_path, tiny_data, capsys):
    pytest.importorskip("matplotlib")
    out_dir = tmp_path / "gru"
    code, out, err = run(["train", "--cell", "gru", "--data", tiny_data, "--hidden", 8,
                          "--batch-size", 50, "--steps", 4, "--backend", "numpy",
                          "--no-progress", "--diagnostics", out_dir, "--diagnostics-every", 2],
                         capsys)
    assert code == 0, err
    run_record = read_json(out_dir / "diagnostics.json")
    assert run_record["cell"] == "gru"
    assert [r["step"] for r in run_record["records"]] == [0, 2, 4]
    for record in run_record["records"]:
        assert len(record["grad_norm"]) == len(record["saturated"]) == 28
        assert len(record["update_gate"]) == 28
        assert all(0.0 < z < 1.0 for z in record["update_gate"])
    assert (out_dir / "diagnostics.png").stat().st_size > 0
