"""`fastrnn export CHECKPOINT OUT.onnx`: a graph ONNX Runtime runs like the checkpoint, and
one-line errors for what cannot be exported, with OUT left as it was."""

import os
import re
import sys
import zipfile

import numpy as np
import pytest

import fastrnn
from fastrnn import onnx as fastrnn_onnx
from fastrnn.cli import main
from fastrnn.model import CELLS

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

I, H, C = 6, 9, 3


def run(argv, capsys):
    code = main([os.fspath(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def session(path):
    return ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])


@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / "model.npz"
    fastrnn.SequenceClassifier(I, H, C, cell="lstm", seed=3).save(path)
    return path


def assert_one_line_error(code, out, err):
    assert code == 2 and out == ""
    assert err.startswith("fastrnn export: error: ") and err.count("\n") == 1, err


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_export_writes_a_graph_that_runs_like_the_checkpoint(cell, tmp_path, capsys):
    saved, out = tmp_path / "model.npz", tmp_path / "model.onnx"
    fastrnn.SequenceClassifier(I, H, C, cell=cell, seed=5).save(saved)
    code, stdout, _ = run(["export", saved, out], capsys)
    assert code == 0
    assert f"wrote {out}" in stdout and f"opset {fastrnn_onnx.OPSET}" in stdout
    onnx.checker.check_model(os.fspath(out), full_check=True)
    model, graph = fastrnn.load(saved), session(out)
    for B, T in [(1, 1), (7, 4)]:
        x = np.random.default_rng(B).standard_normal((B, T, I)).astype(np.float32)
        (logits,) = graph.run(None, {"x": x})
        np.testing.assert_allclose(logits, model.logits(x), rtol=0, atol=1e-4)
        np.testing.assert_array_equal(np.argmax(logits, axis=1), model.predict(x))


def test_export_with_lengths_adds_an_input_the_graph_reads(checkpoint, tmp_path, capsys):
    out = tmp_path / "model.onnx"
    code, stdout, _ = run(["export", "--lengths", checkpoint, out], capsys)
    assert code == 0 and "lengths (B,) int64" in stdout
    graph = session(out)
    assert [i.name for i in graph.get_inputs()] == ["x", "lengths"]
    x = np.random.default_rng(0).standard_normal((3, 5, I)).astype(np.float32)
    (full,) = graph.run(None, {"x": x, "lengths": np.full(3, 5, np.int64)})
    np.testing.assert_allclose(full, fastrnn.load(checkpoint).logits(x), rtol=0, atol=1e-4)
    # Sequence 1 stops after 2 steps: its logits are those of its first 2 steps alone.
    (short,) = graph.run(None, {"x": x, "lengths": np.array([5, 2, 5], np.int64)})
    np.testing.assert_allclose(short[[0, 2]], full[[0, 2]], rtol=0, atol=1e-6)
    np.testing.assert_allclose(short[1], fastrnn.load(checkpoint).logits(x[1:2, :2])[0],
                               rtol=0, atol=1e-4)


def _truncated(path, tmp_path):
    data = path.read_bytes()
    broken = tmp_path / "truncated.npz"
    broken.write_bytes(data[:len(data) // 2])
    return broken


def _foreign_npz(path, tmp_path):
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, weights=np.zeros((3, 3)))
    return foreign


def _wrong_member(path, tmp_path):
    altered = tmp_path / "altered.npz"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(altered, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename == "param/fc.bias.npy":
                data = source.read("param/fc.weight.npy")   # a (C, H) array where (C,) belongs
            target.writestr(info.filename, data)
    return altered


def _text_file(path, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    return text


def _onnx_file(path, tmp_path, capsys):
    graph = tmp_path / "graph.onnx"
    assert run(["export", path, graph], capsys)[0] == 0
    return graph


BAD_CHECKPOINTS = {
    "truncated": (_truncated, "corrupt or truncated|not a valid .npz"),
    "foreign npz": (_foreign_npz, "not a fastrnn checkpoint"),
    "wrong shape": (_wrong_member, "must be floats of shape"),
    "missing": (lambda path, tmp_path: tmp_path / "nothing.npz", "no such checkpoint"),
    "text": (_text_file, "not a valid .npz"),
}


@pytest.mark.parametrize("case", sorted(BAD_CHECKPOINTS) + ["an ONNX file"])
def test_a_corrupt_or_foreign_checkpoint_is_a_one_line_error(case, checkpoint, tmp_path,
                                                            capsys):
    if case == "an ONNX file":
        bad, message = _onnx_file(checkpoint, tmp_path, capsys), "not a valid .npz"
    else:
        make, message = BAD_CHECKPOINTS[case]
        bad = make(checkpoint, tmp_path)
    out = tmp_path / "out.onnx"
    code, stdout, err = run(["export", bad, out], capsys)
    assert_one_line_error(code, stdout, err)
    assert re.search(message, err), err
    assert not out.exists()


@pytest.mark.parametrize("where", ["missing directory", "a directory"])
def test_an_unwritable_output_path_is_a_one_line_error(where, checkpoint, tmp_path, capsys):
    target = tmp_path / "missing" / "model.onnx" if where == "missing directory" else tmp_path
    code, out, err = run(["export", checkpoint, target], capsys)
    assert_one_line_error(code, out, err)
    assert f"cannot write {target}" in err
    assert sorted(os.listdir(tmp_path)) == ["model.npz"]


def test_a_failed_export_leaves_the_previous_output_intact(checkpoint, tmp_path, capsys,
                                                           monkeypatch):
    out = tmp_path / "model.onnx"
    assert run(["export", checkpoint, out], capsys)[0] == 0
    before = out.read_bytes()
    fastrnn.SequenceClassifier(I, 2 * H, C, cell="rnn", seed=4).save(checkpoint)

    def write_some_then_fail(file, data):
        file.write(data[:100])
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(fastrnn_onnx, "_write_bytes", write_some_then_fail)
    code, stdout, err = run(["export", checkpoint, out], capsys)
    assert_one_line_error(code, stdout, err)
    assert "Input/output error" in err
    assert out.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["model.npz", "model.onnx"]


def test_a_model_onnx_cannot_hold_is_a_one_line_error(checkpoint, tmp_path, capsys,
                                                      monkeypatch):
    monkeypatch.setattr(fastrnn_onnx, "MAX_PARAMETER_BYTES", 1000)
    code, out, err = run(["export", checkpoint, tmp_path / "model.onnx"], capsys)
    assert_one_line_error(code, out, err)
    assert "one ONNX file holds less than 2 GiB" in err
    assert not (tmp_path / "model.onnx").exists()


def test_export_without_onnx_says_which_extra_to_install(checkpoint, tmp_path, capsys,
                                                         monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)   # makes `import onnx` fail
    code, out, err = run(["export", checkpoint, tmp_path / "model.onnx"], capsys)
    assert_one_line_error(code, out, err)
    assert "pip install 'fastrnn[onnx]'" in err
