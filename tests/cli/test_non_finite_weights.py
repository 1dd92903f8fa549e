"""One rule for NaN and Inf weights at every entry point: a checkpoint holds finite numbers
only. Saving refuses others and leaves the file as it was; loading, `eval`, `export` and
`--resume` refuse a file that holds them (0.2 wrote such files); training stops at the
first non-finite loss, before its update, and keeps the run's last checkpoint."""

import numpy as np
import pytest

import fastrnn
from fastrnn.checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from fastrnn.optim import Adam
from fastrnn.training import TrainingConfig, TrainingDiverged, train
from helpers import run_cli as run

TINY = ["--hidden", 8, "--batch-size", 50, "--no-progress", "--log-every", 2]


def assert_one_line_error(code, err, command, *fragments):
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"fastrnn {command}: error: "), err
    for fragment in fragments:
        assert fragment in err, err


def test_save_refuses_non_finite_weights_or_adam_state_and_leaves_the_file_as_it_was(tmp_path):
    model = fastrnn.SequenceClassifier(3, 4, 2, seed=0)
    optimizer = Adam(model.parameters())
    path = tmp_path / "model.npz"
    save_checkpoint(path, model, optimizer)
    before = path.read_bytes()
    optimizer.exp_avg_sq["bias_hh_l0"][1] = np.inf
    with pytest.raises(ValueError, match="optim_exp_avg_sq/bias_hh_l0 holds non-finite"):
        save_checkpoint(path, model, optimizer)
    model.fc_bias[0] = np.nan
    with pytest.raises(ValueError, match=r"cannot save .*param/fc\.bias holds non-finite values "
                                         r"\(NaN or Inf\).*left as it was"):
        model.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]


@pytest.fixture
def diverged_checkpoint(tmp_path, tiny_data, capsys):
    """A training checkpoint whose weights hold a NaN, as 0.2 saved a diverged run."""
    path = tmp_path / "diverged.npz"
    code, _, _ = run(["train", "--data", tiny_data, "--steps", 2, "--save", path, *TINY],
                     capsys)
    assert code == 0
    with np.load(path) as npz:
        members = {name: npz[name] for name in npz.files}
    members["param/weight_hh_l0"][0, 0] = np.nan
    np.savez(path, **members)
    return path


def test_load_eval_export_and_resume_refuse_a_file_with_non_finite_weights(
        diverged_checkpoint, tmp_path, tiny_data, capsys):
    what = "entry 'param/weight_hh_l0' holds non-finite values (NaN or Inf)"
    with pytest.raises(CheckpointError, match=r"param/weight_hh_l0' holds non-finite"):
        fastrnn.load(diverged_checkpoint)
    code, _, err = run(["eval", diverged_checkpoint, "--data", tiny_data], capsys)
    assert_one_line_error(code, err, "eval", what)
    code, _, err = run(["export", diverged_checkpoint, tmp_path / "model.onnx"], capsys)
    assert_one_line_error(code, err, "export", what)
    assert not (tmp_path / "model.onnx").exists()
    code, _, err = run(["train", "--data", tiny_data, "--resume", diverged_checkpoint,
                        "--steps", 4, "--no-progress"], capsys)
    assert_one_line_error(code, err, "train", what)


def test_training_stops_at_the_first_non_finite_loss_before_its_update_keeping_the_last_checkpoint(
        tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    x_train, y_train = rng.random((40, 5, 3), dtype=np.float32), rng.integers(0, 2, 40)
    options = dict(batch_size=10, seed=0, lr=0.01, lr_schedule="constant")

    def trained(steps):
        model = fastrnn.SequenceClassifier(3, 4, 2, seed=1)
        optimizer = Adam(model.parameters(), lr=0.01)
        train(model, optimizer, x_train, y_train, TrainingConfig(steps=steps, **options))
        return model

    three_steps = trained(3)
    real = fastrnn.SequenceClassifier.loss_and_grads
    calls = []

    def diverging_at_step_4(self, x, y, lengths=None):
        loss, grads = real(self, x, y, lengths)
        calls.append(loss)
        if len(calls) == 4:   # what a diverged step gives: NaN everywhere
            loss, grads = float("nan"), {key: g * np.nan for key, g in grads.items()}
        return loss, grads

    monkeypatch.setattr(fastrnn.SequenceClassifier, "loss_and_grads", diverging_at_step_4)
    model = fastrnn.SequenceClassifier(3, 4, 2, seed=1)
    optimizer = Adam(model.parameters(), lr=0.01)
    path = tmp_path / "run.npz"
    with pytest.raises(TrainingDiverged, match=rf"training diverged at step 4: the loss is "
                                               rf"nan; .* the checkpoint of step 2, "
                                               rf"{path}, is kept"):
        train(model, optimizer, x_train, y_train,
              TrainingConfig(steps=6, checkpoint_path=path, checkpoint_every=2, **options))
    for key, value in three_steps.parameters().items():
        np.testing.assert_array_equal(model.parameters()[key], value, err_msg=key)
    assert read_checkpoint(path).train_state["step"] == 2


# The NumPy backend's products warn of the NaN they meet; the loss says it once.
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_a_learning_rate_that_blows_the_weights_up_ends_in_one_line_and_saves_nothing(
        tmp_path, tiny_data, capsys):
    saved = tmp_path / "run.npz"
    code, _, err = run(["train", "--data", tiny_data, "--lr", 1e38, "--steps", 5,
                        "--save", saved, *TINY], capsys)
    assert_one_line_error(code, err, "train", "training diverged at step")
    assert not saved.exists()
