"""fastrnn train --precision: recorded in the checkpoint and the metrics, fixed for a resume."""

import pytest

import fastrnn
from fastrnn.cli import main
from helpers import read_json, run_cli

TINY = ["--hidden", 8, "--batch-size", 50, "--no-progress", "--log-every", 2]


def test_train_with_bf16_records_it_and_a_resume_cannot_change_it(tmp_path, tiny_data, capsys):
    code, out, _ = run_cli(["train", "--data", tiny_data, "--steps", 2, "--precision", "bf16",
                            "--save", tmp_path / "a.npz", "--metrics-out",
                            tmp_path / "m.json", *TINY], capsys)
    assert code == 0 and "precision bf16" in out
    assert read_json(tmp_path / "m.json")["precision"] == "bf16"
    assert fastrnn.load(tmp_path / "a.npz").config()["precision"] == "bf16"
    code, _, err = run_cli(["train", "--data", tiny_data, "--resume", tmp_path / "a.npz",
                            "--steps", 3, "--precision", "fp32"], capsys)
    assert code == 2 and "--precision fp32 contradicts the checkpoint" in err
    code, _, _ = run_cli(["train", "--data", tiny_data, "--resume", tmp_path / "a.npz",
                          "--steps", 3, "--metrics-out", tmp_path / "m2.json"], capsys)
    assert code == 0 and read_json(tmp_path / "m2.json")["precision"] == "bf16"


def test_an_unknown_precision_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--precision", "fp16"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'fp16'" in capsys.readouterr().err
