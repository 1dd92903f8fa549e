"""`fastrnn train`, `eval`, `plot-diagnostics`: results, determinism, resume, errors."""

import io
import json
import sys

import numpy as np
import pytest

import fastrnn
from fastrnn.cells import CELLS
from fastrnn.cli import main
from fastrnn.training import BatchOrder, Progress
from helpers import BACKENDS, REAL, have_real, read_json, run_cli as run


TINY = ["--hidden", 8, "--batch-size", 50, "--no-progress", "--log-every", 2]


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@have_real
def test_train_and_eval_on_real_mnist(cell, backend, tmp_path, capsys):
    ckpt, metrics = tmp_path / "run.npz", tmp_path / "metrics.json"
    code, out, err = run(["train", "--cell", cell, "--steps", 20, "--hidden", 32,
                          "--test-limit", 500, "--data", REAL, "--backend", backend,
                          "--no-progress", "--save", ckpt, "--metrics-out", metrics], capsys)
    assert code == 0, err
    assert out.startswith(f"fastrnn train: {cell.upper()} H=32")
    assert "step    20  loss" in out and "mean W_hh" in out and "mean h_T" in out
    result = read_json(metrics)
    for key in ("test_accuracy", "test_loss", "steps", "train_seconds", "steps_per_second",
                "backend", "cell", "seed", "threads", "lr", "clip"):
        assert key in result
    assert (result["steps"], result["cell"], result["backend"], result["test_examples"]) == \
        (20, cell, backend, 500)
    assert result["test_accuracy"] > 0.2   # 20 steps: far above chance (0.1) already

    evaluated = tmp_path / "eval.json"
    code, out, err = run(["eval", ckpt, "--data", REAL, "--test-limit", 500,
                          "--backend", backend, "--metrics-out", evaluated], capsys)
    assert code == 0, err
    assert out.startswith(f"{ckpt}: {cell.upper()} H=32") and "test accuracy" in out
    again = read_json(evaluated)
    assert again["cell"] == cell
    assert again["test_accuracy"] == result["test_accuracy"]
    assert again["test_loss"] == result["test_loss"]
    _, _, x_test, y_test = fastrnn.datasets.load_mnist(REAL, download=False)
    predictions = fastrnn.load(ckpt, backend=backend).predict(x_test[:500])
    assert np.mean(predictions == y_test[:500]) == result["test_accuracy"]


def test_same_seed_same_result_and_resume_ends_where_the_run_would(cell, backend, tmp_path,
                                                                   tiny_data, capsys,
                                                                   monkeypatch):
    common = ["train", "--data", tiny_data, "--cell", cell, "--backend", backend,
              "--lr-schedule", "cosine", "--clip", 0.5, "--steps", 7, *TINY]

    def train(name, *extra):
        code, out, err = run([*common, "--save", tmp_path / f"{name}.npz",
                              "--metrics-out", tmp_path / f"{name}.json", *extra], capsys)
        return code, out, err

    assert train("straight")[0] == 0
    assert train("again")[0] == 0
    straight = read_json(tmp_path / "straight.json")
    assert read_json(tmp_path / "again.json")["test_loss"] == straight["test_loss"]

    # The same run killed right after its periodic checkpoint at step 3 (5 batches
    # per epoch, so the resumed part crosses into the second epoch).
    real_save = fastrnn.training.save_checkpoint

    def save_then_die(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt
    monkeypatch.setattr(fastrnn.training, "save_checkpoint", save_then_die)
    code, _, err = train("interrupted", "--save-every", 3)
    assert code == 130 and "interrupted" in err
    monkeypatch.undo()
    half = fastrnn.checkpoint.read_checkpoint(tmp_path / "interrupted.npz")
    assert half.train_state["step"] == 3 and half.optimizer_state["step"] == 3

    code, out, err = run(["train", "--data", tiny_data, "--resume", tmp_path / "interrupted.npz",
                          "--save", tmp_path / "resumed.npz", "--no-progress",
                          "--backend", backend, "--metrics-out", tmp_path / "resumed.json"],
                         capsys)
    assert code == 0, err
    assert out.startswith(f"fastrnn train: {cell.upper()} H=8") and "resuming at step 3" in out
    resumed = read_json(tmp_path / "resumed.json")
    assert resumed["resumed_from_step"] == 3 and resumed["steps_this_run"] == 4
    assert resumed["steps"] == 7 and resumed["lr_schedule"] == "cosine"
    assert resumed["test_loss"] == straight["test_loss"]
    a = fastrnn.load(tmp_path / "straight.npz").parameters()
    b = fastrnn.load(tmp_path / "resumed.npz").parameters()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_resume_refuses_contradicting_flags(tmp_path, tiny_data, capsys):
    run(["train", "--data", tiny_data, "--steps", 2, "--save", tmp_path / "a.npz", *TINY],
        capsys)
    code, _, err = run(["train", "--data", tiny_data, "--resume", tmp_path / "a.npz",
                        "--hidden", 32], capsys)
    assert code == 2 and "--hidden 32 contradicts" in err
    fastrnn.SequenceClassifier(28, 8, 10, backend="numpy").save(tmp_path / "model_only.npz")
    code, _, err = run(["train", "--data", tiny_data, "--resume", tmp_path / "model_only.npz"],
                       capsys)
    assert code == 2 and "not a training checkpoint" in err

    saved = fastrnn.checkpoint.read_checkpoint(tmp_path / "a.npz")
    model = fastrnn.SequenceClassifier.from_checkpoint(saved)
    optimizer = fastrnn.optim.Adam(model.parameters())
    optimizer.load_state_dict(saved.optimizer_state)
    for broken in ({"settings": dict(saved.train_state["settings"], batch_size="all")},
                   {"step": 5}, {"step": 1}):
        fastrnn.checkpoint.save_checkpoint(tmp_path / "broken.npz", model, optimizer,
                                           dict(saved.train_state, **broken))
        code, _, err = run(["train", "--data", tiny_data, "--resume", tmp_path / "broken.npz"],
                           capsys)
        assert code == 2 and "malformed training progress" in err, broken


@pytest.mark.parametrize("argv", [
    ["train", "--hidden", "0"],
    ["train", "--cell", "transformer"],
    ["train", "--lr", "nan"],
    ["train", "--lr", "-0.1"],
    ["train", "--steps", "many"],
    ["train", "--clip", "0"],
    ["train", "--threads", "0"],
    ["train", "--layers", "0"],
    ["train", "--layers", "two"],
    ["train", "--dropout", "1"],
    ["train", "--dropout", "-0.5"],
    ["train", "--dropout", "nan"],
    ["train", "--bidirectional", "yes"],
    ["eval"],
    ["plot-diagnostics"],
    ["frobnicate"],
], ids=lambda argv: " ".join(argv))
def test_bad_arguments_are_argparse_errors(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    _, err = capsys.readouterr()
    assert "error:" in err and "Traceback" not in err


def test_runtime_errors_are_clear_messages(tmp_path, tiny_data, capsys):
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a checkpoint")
    cases = [
        (["train", "--data", tiny_data, "--backend", "nope", *TINY], "unknown backend"),
        (["train", "--data", tmp_path / "empty", "--no-download"], "FASTRNN_DATA"),
        (["train", "--data", tiny_data, "--batch-size", 1000], "exceeds"),
        (["train", "--data", tiny_data, "--save", tmp_path / "no" / "dir.npz"], "does not exist"),
        (["eval", garbage, "--data", tiny_data], "not a fastrnn checkpoint"),
        (["eval", tmp_path / "missing.npz", "--data", tiny_data], "no such"),
        (["plot-diagnostics", garbage, "-o", tmp_path / "x.png"], "cannot read diagnostics"),
    ]
    for argv, message in cases:
        code, _, err = run(argv, capsys)
        assert code == 2 and message in err, (argv, err)


def test_diagnostics_of_every_cell_and_the_comparison_picture(tmp_path, tiny_data, capsys):
    pytest.importorskip("matplotlib")
    for cell, table_entry in CELLS.items():
        code, out, err = run(["train", "--data", tiny_data, "--cell", cell, "--steps", 4,
                              "--backend", "numpy", "--diagnostics", tmp_path / cell,
                              "--diagnostics-every", 2,
                              "--metrics-out", tmp_path / f"{cell}.json", *TINY], capsys)
        assert code == 0, err
        run_json = read_json(tmp_path / cell / "diagnostics.json")
        assert run_json["cell"] == cell
        assert [r["step"] for r in run_json["records"]] == [0, 2, 4]
        for record in run_json["records"]:
            assert len(record["grad_norm"]) == len(record["saturated"]) == 28
            if table_entry.saturation.mean_gate:   # the GRU's update gate, a mean in (0, 1)
                gate_means = record[table_entry.saturation.mean_gate[1]]
                assert len(gate_means) == 28 and all(0.0 < g < 1.0 for g in gate_means)
        assert read_json(tmp_path / f"{cell}.json")["diagnostics"] == run_json
        assert (tmp_path / cell / "diagnostics.png").read_bytes()[:4] == b"\x89PNG"
    out_png = tmp_path / "compare.png"
    others = [tmp_path / cell / "diagnostics.json" for cell in CELLS if cell != "rnn"]
    code, out, err = run(["plot-diagnostics", tmp_path / "rnn.json", *others, "-o", out_png],
                         capsys)
    assert code == 0, err
    assert out_png.read_bytes()[:4] == b"\x89PNG"


def test_plot_without_matplotlib_says_how_to_get_it(tmp_path, capsys, monkeypatch):
    record = {"step": 0, "grad_norm": [1.0, 2.0], "saturated": [0.0, 0.1]}
    with open(tmp_path / "run.json", "w") as file:
        json.dump({"cell": "rnn", "records": [record]}, file)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code, _, err = run(["plot-diagnostics", tmp_path / "run.json"], capsys)
    assert code == 2 and "fastrnn[plot]" in err


def test_batch_order_is_a_function_of_seed_and_step():
    order = BatchOrder(10, 3, seed=4)
    epoch0 = np.concatenate([order.indices(s) for s in range(3)])
    assert len(set(epoch0)) == 9   # a permutation, the remainder dropped
    later = BatchOrder(10, 3, seed=4)
    np.testing.assert_array_equal(later.indices(4), order.indices(4))
    assert not np.array_equal(BatchOrder(10, 3, seed=5).indices(0), later.indices(0))


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_on_a_terminal_and_in_a_log(capsys):
    terminal = FakeTerminal()
    bar = Progress(10, stream=terminal)
    bar.update(5)
    bar.log("step 5 ...")
    bar.update(10)
    bar.close()
    drawn = terminal.getvalue()
    assert "\r\x1b[K[" in drawn and "steps/s" in drawn and "left" in drawn
    assert capsys.readouterr().out == "step 5 ...\n"

    log = io.StringIO()
    plain = Progress(10, stream=log, plain_interval=1e9)
    for step in range(1, 11):
        plain.update(step)
    lines = log.getvalue().splitlines()
    assert lines[0].startswith("train: 1/10 steps") and lines[-1].startswith("train: 10/10")
    assert len(lines) == 2 and "\r" not in log.getvalue()


def test_info_still_works(capsys):
    code, out, _ = run(["info"], capsys)
    assert code == 0 and "numpy" in out
