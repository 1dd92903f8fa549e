"""`fastrnn train --layers N --bidirectional --dropout P`, and the bench cases that need them."""

import numpy as np

import fastrnn
from fastrnn.checkpoint import read_checkpoint, save_checkpoint
from helpers import read_json, run_cli as run

TINY = ["--hidden", 6, "--batch-size", 50, "--no-progress", "--log-every", 2]


def test_train_builds_the_stack_saves_it_and_eval_and_resume_read_it(tmp_path, tiny_data,
                                                                      capsys):
    stack = ["--layers", 2, "--bidirectional", "--dropout", 0.2, "--cell", "gru"]
    code, out, err = run(["train", "--data", tiny_data, "--steps", 4, *stack, *TINY,
                          "--save", tmp_path / "run.npz", "--save-every", 2,
                          "--metrics-out", tmp_path / "run.json",
                          "--diagnostics", tmp_path / "diag", "--diagnostics-every", 2],
                         capsys)
    assert code == 0, err
    assert "GRU H=6 x2 layers bidirectional dropout 0.2" in out
    metrics = read_json(tmp_path / "run.json")
    assert (metrics["layers"], metrics["bidirectional"], metrics["dropout"]) == (2, True, 0.2)
    config = read_checkpoint(tmp_path / "run.npz").config
    assert (config["num_layers"], config["bidirectional"], config["dropout"]) == (2, True, 0.2)
    model = fastrnn.load(tmp_path / "run.npz")
    assert model.parameters()["fc.weight"].shape == (10, 12)
    records = metrics["diagnostics"]["records"]
    assert records and all(len(r["reverse"]["grad_norm"]) == 28 for r in records)

    code, out, _ = run(["eval", tmp_path / "run.npz", "--data", tiny_data,
                        "--metrics-out", tmp_path / "eval.json"], capsys)
    assert code == 0 and "GRU H=6 x2 layers bidirectional  test loss" in out
    assert read_json(tmp_path / "eval.json")["test_loss"] == metrics["test_loss"]

    code, _, err = run(["train", "--data", tiny_data, "--resume", tmp_path / "run.npz",
                        "--layers", 1], capsys)
    assert code == 2 and "--layers 1 contradicts" in err


def test_a_training_checkpoint_of_fastrnn_0_1_resumes_as_one_layer(tmp_path, tiny_data, capsys):
    code, _, err = run(["train", "--data", tiny_data, "--steps", 2, *TINY,
                        "--save", tmp_path / "new.npz"], capsys)
    assert code == 0, err
    saved = read_checkpoint(tmp_path / "new.npz")
    model = fastrnn.SequenceClassifier.from_checkpoint(saved)
    optimizer = fastrnn.optim.Adam(model.parameters())
    optimizer.load_state_dict(saved.optimizer_state)
    # what 0.1 wrote: no layers, bidirectional or dropout among the settings
    settings = {k: v for k, v in saved.train_state["settings"].items()
                if k not in ("layers", "bidirectional", "dropout")}
    save_checkpoint(tmp_path / "old.npz", model, optimizer,
                    dict(saved.train_state, settings=settings))
    code, out, err = run(["train", "--data", tiny_data, "--resume", tmp_path / "old.npz",
                          "--steps", 3, "--no-progress", "--metrics-out", tmp_path / "m.json"],
                         capsys)
    assert code == 0, err
    assert "resuming at step 2" in out
    metrics = read_json(tmp_path / "m.json")
    assert (metrics["layers"], metrics["bidirectional"], metrics["dropout"]) == (1, False, 0.0)


def listed_cases(capsys):
    """{case name: what `fastrnn bench --list-cases` says of it}."""
    code, out, _ = run(["bench", "--list-cases"], capsys)
    assert code == 0
    return dict(line.split(None, 1) for line in out.splitlines()
                if line.startswith(("lstm-", "gru-", "rnn-")))


def test_bench_lists_and_runs_the_stacked_cases(capsys):
    listed = listed_cases(capsys)
    for cell in ("lstm", "gru", "rnn"):
        assert listed[f"{cell}-train-tiny-2layer-bidir"].startswith("runs here")
        assert listed[f"{cell}-inference-medium-2layer-bidir"].startswith("runs here")
    code, out, err = run(["bench", "--cases", "lstm-train-tiny-2layer-bidir",
                          "--rivals", "cpp" if "cpp" in fastrnn.available_backends()
                          else "numpy", "--in-process", "--seconds", "0.05"], capsys)
    assert code == 0, err
    assert "lstm-train-tiny-2layer-bidir" in out


def test_bench_lists_the_lengths_cases_as_running_here(capsys):
    # The bench probes the layers on the numpy backend: the lengths cases run once every
    # backend's kernels take packed batches.
    listed = listed_cases(capsys)
    for cell in ("lstm", "gru", "rnn"):
        for mode in ("train", "inference"):
            assert listed[f"{cell}-{mode}-medium-lengths"].startswith("runs here")


def test_a_resumed_run_with_dropout_ends_where_the_straight_run_does(tmp_path, tiny_data,
                                                                     capsys):
    # The run: dropout masks are a pure function of (seed, step, layer, row), so
    # 2 steps and a resume to 4 draw the masks 4 steps in one go draw.
    common = ["train", "--data", tiny_data, "--cell", "gru", "--layers", 2, "--dropout", 0.3,
              "--hidden", 8, "--batch-size", 20, "--train-limit", 200, "--test-limit", 40,
              "--no-progress", "--log-every", 0]
    code, _, err = run([*common, "--steps", 4, "--save", tmp_path / "straight.npz"], capsys)
    assert code == 0, err
    code, _, err = run([*common, "--steps", 2, "--save", tmp_path / "half.npz"], capsys)
    assert code == 0, err
    for name in ("resumed", "again"):
        code, out, err = run(["train", "--data", tiny_data, "--resume", tmp_path / "half.npz",
                              "--steps", 4, "--no-progress", "--log-every", 0,
                              "--save", tmp_path / f"{name}.npz"], capsys)
        assert code == 0, err
        assert "resuming at step 2" in out
    straight = fastrnn.load(tmp_path / "straight.npz").parameters()
    half = fastrnn.load(tmp_path / "half.npz").parameters()
    for name in ("resumed", "again"):
        resumed = fastrnn.load(tmp_path / f"{name}.npz").parameters()
        for key, value in straight.items():
            np.testing.assert_array_equal(resumed[key], value, err_msg=f"{name}: {key}")
    assert any(not np.array_equal(half[key], straight[key]) for key in straight)
