"""Shared test helpers: the one tolerance table, problem builders, backends, data files.

Imported as a module (`from helpers import ...`; pyproject's pytest `pythonpath`
puts tests/ on the path). Fixtures live in conftest.py.
"""

import collections
import gzip
import json
import os
import struct
import tempfile

import numpy as np
import pytest

import fastrnn
from fastrnn.cells import CELLS, KERNELS

# Every backend comparison uses this table. "output": max absolute error of
# y and the final state; "grad": max error relative to the largest magnitude
# of the expected gradient (so an all-zero gradient is compared absolutely).
try:  # the oracle of the comparisons with torch, where it is installed
    import torch
except ImportError:
    torch = None

needs_torch = pytest.mark.skipif(
    torch is None, reason="torch is not installed (pip install torch==2.13.0 to compare)")

TOLERANCES = {
    np.dtype(np.float32): {"output": 1e-5, "grad": 1e-4},
    np.dtype(np.float64): {"output": 1e-12, "grad": 1e-10},
}

# A fresh interpreter started in the source tree imports its fastrnn (no compiled
# extension) before the installed one: tests start subprocesses from here instead.
OUTSIDE_REPO = tempfile.gettempdir()

BACKENDS = fastrnn.available_backends()
FAST_BACKENDS = [name for name in BACKENDS if name != "numpy"]


def relative_error(actual, expected, scale=None):
    """The largest difference over the largest |expected| (or over `scale`, the size
    of the quantity's neighbours: one parameter's gradient among its layer's)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    if actual.size == 0:
        return 0.0
    if scale is None:
        scale = float(np.abs(expected).max())
    return float(np.abs(actual - expected).max()) / max(scale, 1e-6)


def numeric_gradient(f, array, eps=1e-6):
    """Central finite differences of the scalar f() with respect to `array` (changed in
    place and put back)."""
    grad = np.zeros_like(array)
    flat, out = array.reshape(-1), grad.reshape(-1)
    for k in range(flat.size):
        orig = flat[k]
        flat[k] = orig + eps
        up = f()
        flat[k] = orig - eps
        down = f()
        flat[k] = orig
        out[k] = (up - down) / (2 * eps)
    return grad


def assert_close(actual, expected, kind, dtype, what="", scale=None):
    tol = TOLERANCES[np.dtype(dtype)][kind]
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert np.all(np.isfinite(actual)) == np.all(np.isfinite(expected)), \
        f"{what}: finiteness differs"
    if kind == "output":
        err = float(np.abs(actual - expected).max()) if actual.size else 0.0
    else:
        err = relative_error(actual, expected, scale)
    assert err <= tol, f"{what}: {kind} error {err:.3g} > {tol:g}"
    return err


# -- layers -----------------------------------------------------------------------

def make_layer(cell, I, H, *, backend, dtype=np.float32, batch_first=True, seed=0):
    """One layer of `cell` (a name in the table of cells), one direction."""
    return getattr(fastrnn, CELLS[cell].layer)(I, H, backend=backend, dtype=dtype,
                                               batch_first=batch_first, seed=seed)


def make_problem(cell, T, B, I, H, *, dtype=np.float32, batch_first=True, seed=0, scale=1.0):
    """Inputs, a nonzero initial state and loss weights on every output; states laid out
    as torch lays them, (num_layers * num_directions, B, H) = (1, B, H)."""
    rng = np.random.default_rng(seed)
    shape = (B, T, I) if batch_first else (T, B, I)
    x = (scale * rng.standard_normal(shape)).astype(dtype)
    state = rng.uniform(-0.5, 0.5, (1, B, H)).astype(dtype)
    dy = rng.standard_normal(shape[:2] + (H,)).astype(dtype)
    dstate = rng.standard_normal((1, B, H)).astype(dtype)
    if len(CELLS[cell].states) == 2:   # the LSTM's c, drawn after h
        state = (state, rng.uniform(-1, 1, (1, B, H)).astype(dtype))
        dstate = (dstate, rng.standard_normal((1, B, H)).astype(dtype))
    return x, state, dy, dstate


def flat_state(state):
    return list(state) if isinstance(state, tuple) else [state]


# -- stacks of layers against torch ---------------------------------------------------

# Every cell a layer has, each nonlinearity but the default as a cell of its own ("relu":
# the ReLU RNN): (layer class name, layer options, the cell's entry in the table).
CellVariant = collections.namedtuple("CellVariant", "layer options cell")
CELL_VARIANTS = {name if nonlinearity == "tanh" else nonlinearity:
                 CellVariant(cell.layer, {} if nonlinearity == "tanh"
                             else {"nonlinearity": nonlinearity}, cell)
                 for name, cell in CELLS.items() for nonlinearity in cell.kernels}


def make_stack(variant, I, H, num_layers=1, bidirectional=False, *, backend,
               dtype=np.float64, batch_first=True, dropout=0.0, precision="fp32", seed=0):
    """fastrnn's layer of a CELL_VARIANTS entry."""
    layer, options, _ = CELL_VARIANTS[variant]
    return getattr(fastrnn, layer)(I, H, num_layers, bidirectional=bidirectional,
                                  dropout=dropout, batch_first=batch_first, backend=backend,
                                  dtype=dtype, precision=precision, seed=seed, **options)


def torch_stack(variant, I, H, num_layers=1, bidirectional=False, *, dtype=np.float64,
                batch_first=True, seed=0):
    """torch's module of a CELL_VARIANTS entry, with torch's own init from `seed`."""
    import torch
    torch.manual_seed(seed)
    _, options, cell = CELL_VARIANTS[variant]
    module = getattr(torch.nn, cell.torch_module)(I, H, num_layers, bidirectional=bidirectional,
                                     batch_first=batch_first, **options)
    return module.to(torch.float64 if dtype == np.float64 else torch.float32)


def stack_problem(variant, T, B, I, H, num_layers=1, bidirectional=False, *,
                  dtype=np.float64, batch_first=True, seed=0):
    """x, a nonzero state (L*D, B, H), dL/dy on every output and dL/dstate_T."""
    rng = np.random.default_rng(seed)
    LD, D = num_layers * (2 if bidirectional else 1), 2 if bidirectional else 1
    x = rng.standard_normal((B, T, I) if batch_first else (T, B, I)).astype(dtype)
    states = [rng.uniform(-0.5, 0.5, (LD, B, H)).astype(dtype) for _ in range(2)]
    dy = rng.standard_normal(x.shape[:2] + (D * H,)).astype(dtype)
    dstates = [rng.standard_normal((LD, B, H)).astype(dtype) for _ in range(2)]
    if len(CELL_VARIANTS[variant].cell.states) == 2:   # the LSTM's (h, c)
        return x, tuple(states), dy, tuple(dstates)
    return x, states[0], dy, dstates[0]


def fastrnn_results(layer, x, state, dy, dstate, lengths=None):
    """{y, state_T (list), dx, dstate0 (list), grads} of one forward and backward."""
    y, final = layer.forward(x, state, lengths=lengths)
    dx, dstate0 = layer.backward(dy, dstate)
    return {"y": y, "state_T": flat_state(final), "dx": dx, "dstate0": flat_state(dstate0),
            "grads": dict(layer.grads)}


def torch_results(module, x, state, dy, dstate, lengths=None):
    """The same as fastrnn_results from torch; with lengths through a PackedSequence
    (enforce_sorted=False) and pad_packed_sequence to all T steps."""
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
    batch_first = module.batch_first
    x_t = torch.tensor(x, requires_grad=True)
    states = [torch.tensor(s, requires_grad=True) for s in flat_state(state)]
    state_t = tuple(states) if len(states) == 2 else states[0]
    if lengths is None:
        y, final = module(x_t, state_t)
    else:
        packed = pack_padded_sequence(x_t, torch.tensor(np.asarray(lengths)),
                                      batch_first=batch_first, enforce_sorted=False)
        y, final = module(packed, state_t)
        T = x.shape[1] if batch_first else x.shape[0]
        y, _ = pad_packed_sequence(y, batch_first=batch_first, total_length=T)
    finals = list(final) if isinstance(final, tuple) else [final]
    loss = (y * torch.tensor(dy)).sum()
    for s, ds in zip(finals, flat_state(dstate)):
        loss = loss + (s * torch.tensor(ds)).sum()
    loss.backward()
    return {"y": y.detach().numpy(), "state_T": [s.detach().numpy() for s in finals],
            "dx": x_t.grad.numpy(), "dstate0": [s.grad.numpy() for s in states],
            "grads": {k: p.grad.numpy() for k, p in module.named_parameters()}}


def assert_same_results(got, want, dtype):
    """Every output and gradient of two *_results within the tolerance table."""
    assert_close(got["y"], want["y"], "output", dtype, "y")
    assert len(got["state_T"]) == len(want["state_T"]) == len(got["dstate0"])
    for k, (s, s_ref) in enumerate(zip(got["state_T"], want["state_T"])):
        assert_close(s, s_ref, "output", dtype, f"state_T[{k}]")
    assert_close(got["dx"], want["dx"], "grad", dtype, "dx")
    for k, (d, d_ref) in enumerate(zip(got["dstate0"], want["dstate0"])):
        assert_close(d, d_ref, "grad", dtype, f"dstate0[{k}]")
    assert list(got["grads"]) == list(want["grads"])
    for key, g_ref in want["grads"].items():
        assert_close(got["grads"][key], g_ref, "grad", dtype, key)


# -- the raw kernels ----------------------------------------------------------------

GATES = {kernel: cell.G for kernel, cell in KERNELS.items()}
KERNEL_CELLS = list(GATES)


def make_kernel_args(cell, T, B, I, H, dtype, *, seed=0, scale=1.0):
    """Kernel arguments: time-major x, torch-like weights and biases, nonzero states, a
    loss on every step."""
    rng = np.random.default_rng(seed)
    G = GATES[cell]
    k = 1.0 / np.sqrt(H)

    def uniform(shape, bound):
        return rng.uniform(-bound, bound, shape).astype(dtype)

    args = {
        "x": (scale * rng.standard_normal((T, B, I))).astype(dtype),
        "h0": uniform((B, H), 0.5),
        "c0": uniform((B, H), 1.0),
        "w_ih": uniform((G * H, I), k),
        "w_hh": uniform((G * H, H), k),
        "b_ih": uniform((G * H,), k),
        "b_hh": uniform((G * H,), k),
        "dy": rng.standard_normal((T, B, H)).astype(dtype),
        "dhT": rng.standard_normal((B, H)).astype(dtype),
        "dcT": rng.standard_normal((B, H)).astype(dtype),
    }
    if cell != "lstm":
        del args["c0"], args["dcT"]
    return args


GRAD_NAMES = {cell: ["dx", "dh0"] + (["dc0"] if cell == "lstm" else []) +
              ["dw_ih", "dw_hh", "db_ih", "db_hh"] for cell in GATES}


def initial_states(cell, a):
    return [a["h0"], a["c0"]] if cell == "lstm" else [a["h0"]]


def final_state_grads(cell, a):
    return [a["dhT"], a["dcT"]] if cell == "lstm" else [a["dhT"]]


def kernel_forward(kernels, cell, a, training=True, **options):
    """One forward of `kernels` (a backend module) on the arguments `a`: (outputs, saved),
    outputs [y] or [y, cT]; options: batch_sizes, reverse, out, precision, threads."""
    *outputs, saved = getattr(kernels, f"{cell}_forward")(
        a["x"], *initial_states(cell, a), a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"], training,
        **options)
    return outputs, saved


def kernel_backward(kernels, cell, saved, a, outputs, *, with_dy=True, need_dx=True,
                    **options):
    """The gradients (GRAD_NAMES order) of one backward through a forward's `saved` and
    `outputs`; options: batch_sizes, reverse, precision, threads."""
    return list(getattr(kernels, f"{cell}_backward")(
        saved, *initial_states(cell, a), a["w_ih"], a["w_hh"], outputs[0],
        a["dy"] if with_dy else None, *final_state_grads(cell, a), need_dx, **options))


def run_kernels(kernels, cell, a, *, with_dy=True, need_dx=True, **options):
    """Training forward then backward on one backend: (forward outputs, gradients)."""
    outputs, saved = kernel_forward(kernels, cell, a, **options)
    options.pop("out", None)
    return outputs, kernel_backward(kernels, cell, saved, a, outputs, with_dy=with_dy,
                                    need_dx=need_dx, **options)


TORCH_MODULES = {"rnn": ("RNN", {"nonlinearity": "tanh"}),
                 "rnn_relu": ("RNN", {"nonlinearity": "relu"}),
                 "lstm": ("LSTM", {}), "gru": ("GRU", {})}


def torch_kernel_results(cell, a, lengths=None, with_dy=True):
    """What the kernels compute for the time-major problem `a`, from torch's module of
    `cell` holding a's weights: {y, hT, [cT,] dx, dh0, [dc0,] dw_ih, dw_hh, db_ih, db_hh}.
    With lengths, the padded batch goes through pack_padded_sequence(...,
    enforce_sorted=False) and pad_packed_sequence(..., total_length=T)."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
    T, _, I = a["x"].shape
    H = a["h0"].shape[1]
    name, options = TORCH_MODULES[cell]
    module = getattr(torch.nn, name)(I, H, **options).to(torch.from_numpy(a["x"]).dtype)
    with torch.no_grad():
        for key in ("w_ih", "w_hh", "b_ih", "b_hh"):
            kind = "weight" if key.startswith("w") else "bias"
            getattr(module, f"{kind}_{key[2:]}_l0").copy_(torch.from_numpy(a[key]))
    x = torch.tensor(a["x"], requires_grad=True)
    state0 = [torch.tensor(s[None], requires_grad=True) for s in initial_states(cell, a)]
    data = x if lengths is None else pack_padded_sequence(
        x, torch.from_numpy(np.asarray(lengths)), enforce_sorted=False)
    out, final = module(data, tuple(state0) if cell == "lstm" else state0[0])
    y = out if lengths is None else pad_packed_sequence(out, total_length=T)[0]
    finals = list(final) if cell == "lstm" else [final]
    loss = sum((s[0] * torch.from_numpy(ds)).sum()
               for s, ds in zip(finals, final_state_grads(cell, a)))
    if with_dy:
        loss = loss + (y * torch.from_numpy(a["dy"])).sum()
    loss.backward()
    params = dict(module.named_parameters())
    result = {"y": y, "hT": finals[0][0], "dx": x.grad, "dh0": state0[0].grad[0],
              "dw_ih": params["weight_ih_l0"].grad, "dw_hh": params["weight_hh_l0"].grad,
              "db_ih": params["bias_ih_l0"].grad, "db_hh": params["bias_hh_l0"].grad}
    if cell == "lstm":
        result.update(cT=finals[1][0], dc0=state0[1].grad[0])
    return {name: value.detach().numpy() for name, value in result.items()}


# -- models -------------------------------------------------------------------------

def torch_loss_and_grads(rnn, fc, x, y):
    """torch's loss and gradients (keyed like SequenceClassifier.parameters()) on one batch."""
    import torch
    out, _ = rnn(torch.tensor(x))
    loss = torch.nn.functional.cross_entropy(fc(out[:, -1]), torch.tensor(y))
    loss.backward()
    grads = {k: p.grad.numpy() for k, p in rnn.named_parameters()}
    grads["fc.weight"] = fc.weight.grad.numpy()
    grads["fc.bias"] = fc.bias.grad.numpy()
    return loss.item(), grads


def torch_classifier(model):
    """torch's recurrent layer and Linear with a SequenceClassifier's weights copied in."""
    import torch
    cls = getattr(torch.nn, CELLS[model.cell].torch_module)
    rnn = cls(model.input_size, model.hidden_size, batch_first=True)
    fc = torch.nn.Linear(model.hidden_size, model.num_classes)
    with torch.no_grad():
        for k, p in rnn.named_parameters():
            p.copy_(torch.tensor(model.parameters()[k]))
        fc.weight.copy_(torch.tensor(model.fc_weight))
        fc.bias.copy_(torch.tensor(model.fc_bias))
    return rnn, fc


# -- MNIST files ----------------------------------------------------------------------

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(REPO_ROOT, "..", "shared", "data", "mnist")
REAL = os.environ.get("FASTRNN_DATA") or SHARED
have_real = pytest.mark.skipif(
    not os.path.isfile(os.path.join(REAL, "t10k-labels-idx1-ubyte.gz")),
    reason="real MNIST not found (set FASTRNN_DATA)")


def idx_bytes(array):
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_mnist(root, n_train=12, n_test=5, *, gz=True, seed=0):
    """Small but well-formed MNIST files; returns the arrays written."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test),
    }
    os.makedirs(root, exist_ok=True)
    for name, array in arrays.items():
        data = idx_bytes(array)
        path = os.path.join(root, name + (".gz" if gz else ""))
        with open(path, "wb") as file:
            file.write(gzip.compress(data) if gz else data)
    return arrays


# -- the command line -----------------------------------------------------------------

def run_cli(argv, capsys):
    """(exit code, stdout, stderr) of `fastrnn ARGV` run in this process; never a traceback."""
    from fastrnn.cli import main
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def read_json(path):
    with open(path) as file:
        return json.load(file)
