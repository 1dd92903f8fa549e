"""Checkpoints: round trips, hostile and broken files, and a save killed halfway."""

import json
import os
import signal
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import fastrnn
from fastrnn.checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from fastrnn.optim import Adam
from fastrnn.cells import CELLS
from helpers import BACKENDS, OUTSIDE_REPO, REPO_ROOT


def trained_model(cell="lstm", seed=0, steps=2, H=6, backend="numpy", **options):
    model = fastrnn.SequenceClassifier(5, H, 3, cell=cell, seed=seed, backend=backend, **options)
    opt = Adam(model.parameters(), lr=0.01)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        x = rng.random((4, 7, 5), dtype=np.float32)
        opt.step(model.loss_and_grads(x, rng.integers(0, 3, 4))[1])
    return model, opt


@pytest.mark.parametrize("options", [{}, {"forget_bias": 0.0, "recurrent_init": "orthogonal"}],
                         ids=["defaults", "options"])
def test_round_trip_restores_identical_predictions(tmp_path, cell, options):
    model, _ = trained_model(cell, **options)
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = fastrnn.load(path)
    assert loaded.config() == model.config()
    for key, value in model.parameters().items():
        np.testing.assert_array_equal(loaded.parameters()[key], value)
    x = np.random.default_rng(5).random((9, 7, 5), dtype=np.float32)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_more_step_from_the_file_gives_the_bits_of_one_more_step_in_memory(
        tmp_path, cell, backend):
    model, optimizer = trained_model(cell, steps=3, backend=backend)
    path = tmp_path / "run.npz"
    save_checkpoint(path, model, optimizer, {"step": 3})
    saved = read_checkpoint(path)
    resumed = fastrnn.SequenceClassifier.from_checkpoint(saved, backend=backend)
    assert resumed.config() == model.config() and resumed.backend == backend
    resumed_optimizer = Adam(resumed.parameters())
    resumed_optimizer.load_state_dict(saved.optimizer_state)
    rng = np.random.default_rng(9)
    x, y = rng.random((4, 7, 5), dtype=np.float32), rng.integers(0, 3, 4)
    for m, opt in ((model, optimizer), (resumed, resumed_optimizer)):
        opt.step(m.loss_and_grads(x, y)[1])
    for key, value in model.parameters().items():
        np.testing.assert_array_equal(resumed.parameters()[key], value)


def test_a_checkpoint_is_not_read_as_a_cell_of_other_gates(tmp_path, cell):
    model, _ = trained_model(cell, steps=1)
    path = tmp_path / "model.npz"
    model.save(path)
    arrays = dict(np.load(path))
    # The same arrays under another cell's config: its (G*H, I) weights must be refused.
    config = model.config()
    config["cell"] = next(name for name, other in CELLS.items() if other.G != CELLS[cell].G)
    arrays["config"] = np.frombuffer(json.dumps(config).encode(), np.uint8)
    np.savez(tmp_path / "relabelled.npz", **arrays)
    with pytest.raises(ValueError, match="weight_ih_l0"):
        fastrnn.load(tmp_path / "relabelled.npz")


def test_optimizer_and_train_state_round_trip(tmp_path):
    model, opt = trained_model(steps=3)
    path = tmp_path / "run.npz"
    save_checkpoint(path, model, opt, {"step": 3, "note": "hello"})
    saved = read_checkpoint(path)
    assert saved.train_state == {"step": 3, "note": "hello"}
    fresh = Adam(model.parameters())
    fresh.load_state_dict(saved.optimizer_state)
    assert fresh.step_count == 3 and fresh.lr == 0.01
    for key in opt.exp_avg:
        np.testing.assert_array_equal(fresh.exp_avg[key], opt.exp_avg[key])
        np.testing.assert_array_equal(fresh.exp_avg_sq[key], opt.exp_avg_sq[key])


def test_file_permissions_follow_umask_and_no_temp_files_remain(tmp_path):
    model, _ = trained_model()
    model.save(tmp_path / "a.npz")
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(tmp_path / "a.npz").st_mode & 0o777 == 0o666 & ~umask
    assert os.listdir(tmp_path) == ["a.npz"]


# -- files that must be refused ------------------------------------------------------


def members_of(path):
    with np.load(path, allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def rewrite(path, **changes):
    members = members_of(path)
    for name, value in changes.items():
        name = name.replace("__", "/")
        if value is None:
            del members[name]
        else:
            members[name] = value
    np.savez(path, **members)


def json_bytes(value):
    return np.frombuffer(json.dumps(value).encode(), np.uint8)


@pytest.fixture
def saved(tmp_path):
    model, opt = trained_model()
    path = tmp_path / "model.npz"
    save_checkpoint(path, model, opt, {"step": 2})
    return path


def test_truncated_and_garbage_files(saved, tmp_path):
    data = saved.read_bytes()
    for size in (0, 10, len(data) // 2, len(data) - 1):
        saved.write_bytes(data[:size])
        with pytest.raises(CheckpointError, match=str(saved.name)):
            fastrnn.load(saved)
    saved.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(CheckpointError, match="not"):
        fastrnn.load(saved)
    with pytest.raises(CheckpointError, match="no such"):
        fastrnn.load(tmp_path / "missing.npz")


def test_flipped_byte_in_the_data_is_refused(saved):
    # Stored members carry a CRC: a flipped byte inside an array is detected.
    data = bytearray(saved.read_bytes())
    data[len(data) // 2] ^= 0xFF
    saved.write_bytes(bytes(data))
    with pytest.raises(CheckpointError):
        fastrnn.load(saved)


@pytest.mark.parametrize("change,message", [
    ({"format_version": np.array(2)}, "version 2 is not supported"),
    ({"format_version": None}, "no format version"),
    ({"config": json_bytes({"cell": "gru"})}, "config"),
    ({"config": np.frombuffer(b"{not json", np.uint8)}, "not valid JSON"),
    ({"config": np.array(["text"])}, "not JSON text"),
    ({"param__fc.bias": None}, "missing entry 'param/fc.bias'"),
    ({"param__fc.bias": np.zeros(4, np.float32)}, "shape"),
    ({"param__fc.bias": np.array([0, np.nan, 0], np.float32)}, "non-finite"),
    ({"param__fc.bias": np.array(["a", "b", "c"])}, "floats"),
    ({"surprise": np.zeros(1)}, "unexpected entries"),
    ({"optim": json_bytes({"lr": 0.1})}, "optimizer"),
    ({"optim_exp_avg__fc.bias": None}, "missing"),
    ({"train": json_bytes([1, 2])}, "training state"),
], ids=lambda v: v if isinstance(v, str) else "-".join(v))
def test_malformed_entries(saved, change, message):
    rewrite(saved, **change)
    with pytest.raises(CheckpointError, match=message):
        read_checkpoint(saved)


@pytest.mark.parametrize("change", [
    {"cell": "LSTM"}, {"hidden_size": 2.0}, {"num_classes": 1}, {"num_classes": True},
    {"forget_bias": float("nan")}, {"forget_bias": "1.0"}, {"recurrent_init": "zeros"},
], ids=lambda change: "-".join(f"{k}={v}" for k, v in change.items()))
def test_constructor_and_checkpoint_refuse_the_same_configs(saved, change):
    config = dict(fastrnn.load(saved).config(), **change)
    (key,) = change
    with pytest.raises(ValueError, match=key):
        fastrnn.SequenceClassifier(**config)
    rewrite(saved, config=json_bytes(config))
    with pytest.raises(CheckpointError, match=f"bad model config: {key}"):
        read_checkpoint(saved)


def test_hostile_pickle_is_never_executed(saved, tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    members = members_of(saved)
    members["param/fc.bias"] = np.array([Payload()], dtype=object)
    np.savez(saved, **members)   # np.savez pickles object arrays
    with pytest.raises(CheckpointError):
        fastrnn.load(saved)
    assert not marker.exists()


def test_compressed_members_are_refused(saved):
    np.savez_compressed(saved, **members_of(saved))
    with pytest.raises(CheckpointError, match="unexpected member"):
        fastrnn.load(saved)
    with zipfile.ZipFile(saved, "a") as archive:
        archive.writestr("../../etc/evil", b"x")
    with pytest.raises(CheckpointError, match="unexpected member"):
        fastrnn.load(saved)


# -- a save killed halfway -----------------------------------------------------------------

CHILD = r"""
import sys
import fastrnn
from fastrnn import checkpoint

class StallAfterFirstMegabyte:
    # Passes writes through; after 1 MiB it tells the parent and waits to be killed.
    def __init__(self, file):
        self.file, self.written = file, 0
    def write(self, data):
        count = self.file.write(data)
        self.written += len(data)
        if self.written > 1 << 20:
            self.file.flush()
            print("writing", flush=True)
            sys.stdin.read()
        return count
    def __getattr__(self, name):
        return getattr(self.file, name)

real_write = checkpoint._write_arrays
checkpoint._write_arrays = lambda file, arrays: real_write(StallAfterFirstMegabyte(file), arrays)
model = fastrnn.SequenceClassifier(28, 512, 10, seed=1, backend="numpy")
model.save(sys.argv[1])
"""


def test_save_killed_halfway_leaves_the_previous_checkpoint(tmp_path):
    path = tmp_path / "model.npz"
    previous, _ = trained_model()
    previous.save(path)
    before = path.read_bytes()

    env = dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    child = subprocess.Popen([sys.executable, "-W", "ignore", "-c", CHILD, str(path)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True,
                             cwd=OUTSIDE_REPO)
    try:
        assert child.stdout.readline().strip() == "writing"
        temps = [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
        assert len(temps) == 1 and os.path.getsize(tmp_path / temps[0]) > 1 << 20
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
        child.stdin.close()
    assert child.returncode == -signal.SIGKILL

    assert path.read_bytes() == before
    loaded = fastrnn.load(path)
    for key, value in previous.parameters().items():
        np.testing.assert_array_equal(loaded.parameters()[key], value)
    # What the killed save left is a stray temporary file, and it does not load.
    with pytest.raises(CheckpointError):
        fastrnn.load(tmp_path / temps[0])
