"""Sizes checked before memory is committed: a model or a run that cannot fit here, and a
checkpoint whose claims its file does not hold, end in one line naming the numbers, not
in a MemoryError traceback after allocating until memory ran out."""

import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import fastrnn
from fastrnn import _memory
from fastrnn.checkpoint import CheckpointError
from fastrnn._stack import parameter_count, parameter_shapes
from fastrnn.training import memory_needed
from helpers import OUTSIDE_REPO, run_cli as run

resource = pytest.importorskip("resource")   # address-space limits: not on Windows

# The address space the subprocesses below may have (`ulimit -v`): room for Python,
# numpy and fastrnn, and a bound on what the code before these checks could take.
LIMIT = 1536 * 2**20


def fastrnn_limited(*argv):
    """(exit code, stderr) of `python -m fastrnn ARGV` under an address-space limit."""
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))
    done = subprocess.run([sys.executable, "-m", "fastrnn", *map(str, argv)],
                          capture_output=True, text=True, cwd=OUTSIDE_REPO, timeout=600,
                          preexec_fn=limit)
    return done.returncode, done.stderr


def test_train_with_10000_layers_ends_in_one_line_naming_the_memory_it_needs(tiny_data):
    code, err = fastrnn_limited("train", "--layers", 10000, "--data", tiny_data,
                                "--no-progress")
    # By hand: LSTM, I = T = 28, H = 128, batch 100, 10 classes. Parameters
    # 4H(I+H+2) + 9999 * 4H(2H+2) + 10(H+1), four times over (themselves, their
    # gradients, Adam's two moments); BPTT keeps per row and step each layer's input
    # (I, then H) and y, c and the 4 gates of each (6H); a training forward runs on a
    # copy of the weight matrices, 4H(I+H) + 9999 * 4H(2H).
    P = 4 * 128 * (28 + 128 + 2) + 9999 * 4 * 128 * (2 * 128 + 2) + 10 * 129
    record = 100 * 28 * (28 + 9999 * 128 + 10000 * 6 * 128)
    weights = 4 * 128 * (28 + 128) + 9999 * 4 * 128 * 2 * 128
    total = 4 * (4 * P + record + weights)
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"fastrnn train: error: training this model needs at least "
                          f"{total / 2**30:.1f} GiB of memory (parameters "
                          f"{4 * P / 2**30:.1f} GiB, "), err
    assert "available to this process; choose fewer --layers" in err


@pytest.fixture
def claims_a_billion_layers(tmp_path):
    path = tmp_path / "claims.npz"
    fastrnn.SequenceClassifier(28, 8, 10, seed=0).save(path)
    with np.load(path) as npz:
        members = dict(npz)
    config = dict(json.loads(members["config"].tobytes()), num_layers=10**9)
    members["config"] = np.frombuffer(json.dumps(config).encode(), np.uint8)
    np.savez(path, **members)
    return path


@pytest.mark.parametrize("command", ["eval", "export"])
def test_a_checkpoint_claiming_a_billion_layers_is_refused_by_counting_first(
        command, claims_a_billion_layers, tiny_data, tmp_path):
    argv = {"eval": ["eval", claims_a_billion_layers, "--data", tiny_data],
            "export": ["export", claims_a_billion_layers, tmp_path / "model.onnx"]}[command]
    code, err = fastrnn_limited(*argv)
    assert code == 2 and err == (f"fastrnn {command}: error: {claims_a_billion_layers}: the "
                                 f"config claims 1000000000 layer(s), 4000000000 recurrent "
                                 f"parameter arrays, and the file holds 6 parameter arrays "
                                 f"in all\n")


def test_loading_a_claim_lists_no_layer(
        claims_a_billion_layers):
    # 10**5 layers: what the names of every claimed layer cost before, without harm.
    with np.load(claims_a_billion_layers) as npz:
        members = dict(npz)
    config = dict(json.loads(members["config"].tobytes()), num_layers=10**5)
    members["config"] = np.frombuffer(json.dumps(config).encode(), np.uint8)
    np.savez(claims_a_billion_layers, **members)
    with pytest.raises(CheckpointError, match="claims 100000 layer"):
        fastrnn.load(claims_a_billion_layers)


def test_a_member_whose_header_claims_more_than_it_holds_is_refused_before_numpy_allocates(
        tmp_path):
    path = tmp_path / "model.npz"
    fastrnn.SequenceClassifier(3, 4, 2, seed=0).save(path)
    with np.load(path) as npz:
        members = dict(npz)
    header = tmp_path / "header.npy"
    with open(header, "wb") as file:   # a header of 10**11 floats, then 16 bytes
        np.lib.format.write_array_header_1_0(
            file, {"descr": "<f4", "fortran_order": False, "shape": (10**11,)})
        file.write(bytes(16))
    np.savez(path, **{name: value for name, value in members.items() if name != "param/fc.bias"})
    with zipfile.ZipFile(path, "a") as archive:
        archive.write(header, "param/fc.bias.npy")
    with pytest.raises(CheckpointError, match=r"'param/fc\.bias\.npy' claims float32 "
                                              r"\(100000000000,\), 400000000000 bytes"):
        fastrnn.load(path)


def test_a_layer_whose_parameters_cannot_fit_is_refused_before_any_is_drawn(monkeypatch):
    monkeypatch.setattr(_memory, "available_bytes", lambda: 2**30)
    count = parameter_count(4, 28, 10**5)
    assert count == sum(np.prod(s) for s in parameter_shapes(4, 28, 10**5).values())
    with pytest.raises(MemoryError, match=rf"LSTM\(28, 100000\) needs at least "
                                          rf"{4 * count / 2**30:.1f} GiB of memory for its "
                                          rf"parameters, more than the 1\.0 GiB available"):
        fastrnn.LSTM(28, 10**5)
    with pytest.raises(MemoryError, match=r"GRU\(28, 8, num_layers=1000000000, "
                                          r"bidirectional=True\) needs at least"):
        fastrnn.SequenceClassifier(28, 8, 10, cell="gru", num_layers=10**9,
                                   bidirectional=True)
    fastrnn.LSTM(28, 128, num_layers=4)   # 1.4 MB: unchecked, and fits


@pytest.mark.parametrize("stack", [(1, False), (2, True)], ids=["L1-uni", "L2-bi"])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_the_estimate_counts_what_a_training_step_keeps(cell, stack):
    config = dict(input_size=3, hidden_size=5, num_classes=4, cell=cell, num_layers=stack[0],
                  bidirectional=stack[1])
    model = fastrnn.SequenceClassifier(**config, backend="numpy", seed=0)
    params = sum(value.size for value in model.parameters().values())
    needs = memory_needed(config, 6, 7)
    assert list(needs.values())[:2] == [4 * params, 12 * params]
    x = np.random.default_rng(0).random((6, 7, 3), dtype=np.float32)
    model.loss_and_grads(x, np.arange(6) % 4)
    kept = sum(array.nbytes for _, records in model.layer._tape.layers
               for _, _, y, saved in records
               for array in (saved.x, y, *saved.arrays))
    assert list(needs.values())[2] == kept
    copied = sum(pair[1].nbytes for pair in model.layer._weights_kept._pairs)
    assert copied > 0 and list(needs.values())[3] == copied


def test_a_memory_error_while_training_is_one_line_not_a_traceback(tiny_data, capsys,
                                                                     monkeypatch):
    def out_of_memory(*args, **kwargs):
        raise MemoryError("Unable to allocate 3.00 GiB for an array with shape (28, 100, 4)")
    monkeypatch.setattr(fastrnn.training, "train", out_of_memory)
    code, _, err = run(["train", "--data", tiny_data, "--hidden", 8, "--no-progress"], capsys)
    assert code == 2
    assert err == ("fastrnn train: error: Unable to allocate 3.00 GiB for an array with "
                   "shape (28, 100, 4)\n")


def test_the_memory_available_is_no_more_than_the_system_has():
    available = _memory.available_bytes()
    assert available is not None and 0 < available <= os.sysconf("SC_PHYS_PAGES") * \
        os.sysconf("SC_PAGE_SIZE")
