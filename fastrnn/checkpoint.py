"""Checkpoints: plain arrays in an .npz file, written atomically, read without pickle.

Layout (every entry a plain array; strings are UTF-8 JSON held as uint8):

    format_version       int64 scalar, FORMAT_VERSION
    config               JSON: SequenceClassifier arguments (cell, sizes, options)
    param/<key>          every model parameter, keyed like model.parameters()
    optim                JSON: Adam hyperparameters and step count (optional)
    optim_exp_avg/<key>, optim_exp_avg_sq/<key>    Adam moments (optional)
    train                JSON: training progress for --resume (optional)

A save goes to a temporary file in the target's directory, is flushed and
fsynced, then renamed over the target: a crash at any moment leaves either
the old checkpoint or the new one, never a half-written file under the name.
Every float entry is finite: a save refuses NaN or Inf (a diverged model),
and so does a read.

This module knows the file, not the model class: fastrnn.model imports it to
save and load, and nothing here imports fastrnn.model.
"""

import json
import os
import zipfile

import numpy as np

from ._config import check_model_config, parameter_shapes
from ._files import write_atomically

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A file that is not a readable fastrnn checkpoint of a supported version."""


def _json_array(value):
    return np.frombuffer(json.dumps(value, sort_keys=True).encode("utf-8"), dtype=np.uint8)


def _write_arrays(file, arrays):
    """Write the .npz body; a separate function so tests can interrupt it."""
    np.savez(file, **arrays)


def save_checkpoint(path, model, optimizer=None, train_state=None):
    """Atomically write `model` (and optionally Adam state and training progress) to `path`."""
    path = os.fspath(path)
    arrays = {
        "format_version": np.array(FORMAT_VERSION, dtype=np.int64),
        "config": _json_array(model.config()),
    }
    for key, value in model.parameters().items():
        arrays[f"param/{key}"] = value
    if optimizer is not None:
        state = optimizer.state_dict()
        arrays["optim"] = _json_array({k: state[k] for k in ("lr", "betas", "eps", "step")})
        for key in state["exp_avg"]:
            arrays[f"optim_exp_avg/{key}"] = state["exp_avg"][key]
            arrays[f"optim_exp_avg_sq/{key}"] = state["exp_avg_sq"][key]
    if train_state is not None:
        arrays["train"] = _json_array(train_state)
    # A diverged model is not saved: read_checkpoint would refuse it, and writing it
    # over the last checkpoint of a run would lose that run's last good weights.
    for name, value in arrays.items():
        if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
            raise ValueError(f"cannot save {path}: {name} holds non-finite values (NaN or "
                             f"Inf), as the weights of a diverged run do, and a checkpoint "
                             f"holds finite numbers only; {path} is left as it was")

    write_atomically(path, lambda file: _write_arrays(file, arrays))


class Checkpoint:
    """What a checkpoint file holds, validated: config, params, optimizer and train state.

    SequenceClassifier.from_checkpoint builds the model it describes.
    """

    def __init__(self, config, params, optimizer_state, train_state):
        self.config = config
        self.params = params
        self.optimizer_state = optimizer_state
        self.train_state = train_state


def _read_members(path):
    """{name: array} of every member, refusing anything np.savez would not have written."""
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            for info in infos:
                # We only ever write stored members: refusing compressed ones rules out
                # decompression bombs, and sizes are then bounded by the file itself.
                if info.compress_type != zipfile.ZIP_STORED \
                        or not info.filename.endswith(".npy"):
                    raise CheckpointError(f"{path}: unexpected member {info.filename!r} in "
                                          f"checkpoint")
                _check_claimed_size(path, archive, info)
    except zipfile.BadZipFile as exc:
        raise CheckpointError(f"{path}: not a fastrnn checkpoint (not a valid .npz: {exc})") \
            from None
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({exc})") from None


def _check_claimed_size(path, archive, info):
    """CheckpointError where the .npy header of a member claims more bytes than the member
    holds: numpy would allocate the claim before finding the data short."""
    try:
        with archive.open(info) as member:
            version = np.lib.format.read_magic(member)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                           (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if read_header is None:
                raise ValueError(f"npy format version {version}")
            shape, _, dtype = read_header(member)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({info.filename}: "
                              f"{exc})") from None
    claimed = dtype.itemsize * int(np.prod(shape, dtype=object))
    if claimed > info.file_size:
        raise CheckpointError(f"{path}: member {info.filename!r} claims {dtype} {shape}, "
                              f"{claimed} bytes, and holds {info.file_size}")


def _decode_json(path, members, name):
    array = members[name]
    if array.dtype != np.uint8 or array.ndim != 1:
        raise CheckpointError(f"{path}: entry {name!r} is not JSON text")
    try:
        return json.loads(array.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{path}: entry {name!r} is not valid JSON ({exc})") from None


def _check_config(path, config):
    try:
        return check_model_config(config)
    except ValueError as exc:
        raise CheckpointError(f"{path}: bad model config: {exc}") from None


def _float_arrays(path, members, prefix, shapes):
    arrays = {}
    for key, shape in shapes.items():
        name = f"{prefix}/{key}"
        if name not in members:
            raise CheckpointError(f"{path}: missing entry {name!r}")
        value = members[name]
        if value.dtype.kind != "f" or value.shape != shape:
            raise CheckpointError(f"{path}: entry {name!r} must be floats of shape {shape}, "
                                  f"got {value.dtype} {value.shape}")
        if not np.all(np.isfinite(value)):
            raise CheckpointError(f"{path}: entry {name!r} holds non-finite values (NaN or "
                                  f"Inf): the weights of a diverged run, which fastrnn "
                                  f"neither saves nor loads")
        arrays[key] = value
    return arrays


def _check_layer_count(path, config, members):
    """CheckpointError where the config claims more layers than the file holds arrays for:
    counted before the shapes of every claimed layer are listed (10**9 of them, say)."""
    L, bidirectional = config["num_layers"], config["bidirectional"]
    claimed = 4 * L * (2 if bidirectional else 1)   # weight_ih, weight_hh, bias_ih, bias_hh
    held = sum(name.startswith("param/") for name in members)
    if claimed > held:
        raise CheckpointError(f"{path}: the config claims {L} layer(s)"
                              f"{', bidirectional' if bidirectional else ''}, {claimed} "
                              f"recurrent parameter arrays, and the file holds {held} "
                              f"parameter arrays in all")


def read_checkpoint(path):
    """Read and validate a checkpoint file; raises CheckpointError for anything else."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    members = _read_members(path)
    version = members.get("format_version")
    if version is None or version.shape != () or version.dtype.kind not in "iu":
        raise CheckpointError(f"{path}: not a fastrnn checkpoint (no format version)")
    if int(version) != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {int(version)} is not "
                              f"supported (this fastrnn reads version {FORMAT_VERSION})")
    if "config" not in members:
        raise CheckpointError(f"{path}: missing model config")
    config = _check_config(path, _decode_json(path, members, "config"))
    _check_layer_count(path, config, members)
    shapes = parameter_shapes(config)
    params = _float_arrays(path, members, "param", shapes)

    optimizer_state = None
    if "optim" in members:
        meta = _decode_json(path, members, "optim")
        if not isinstance(meta, dict) or set(meta) != {"lr", "betas", "eps", "step"}:
            raise CheckpointError(f"{path}: malformed optimizer state")
        optimizer_state = dict(meta,
                               exp_avg=_float_arrays(path, members, "optim_exp_avg", shapes),
                               exp_avg_sq=_float_arrays(path, members, "optim_exp_avg_sq",
                                                        shapes))
    train_state = _decode_json(path, members, "train") if "train" in members else None
    if train_state is not None and not isinstance(train_state, dict):
        raise CheckpointError(f"{path}: malformed training state")

    known = {"format_version", "config", "optim", "train"}
    known.update(f"param/{k}" for k in shapes)
    if optimizer_state is not None:
        known.update(f"optim_exp_avg/{k}" for k in shapes)
        known.update(f"optim_exp_avg_sq/{k}" for k in shapes)
    unexpected = sorted(set(members) - known)
    if unexpected:
        raise CheckpointError(f"{path}: unexpected entries {unexpected}")
    return Checkpoint(config, params, optimizer_state, train_state)
