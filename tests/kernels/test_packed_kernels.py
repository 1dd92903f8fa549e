"""Packed (variable-length) batches through every backend's kernels, and the ReLU RNN.

The kernels are called directly with batch_sizes, the contract at the top of
fastrnn/_reference.py: the rows sorted by length, longest first, and step t's
rows stored after step t-1's. torch runs the same padded batch through
pack_padded_sequence(..., enforce_sorted=False) and pad_packed_sequence(...,
total_length=T), so every result is compared in the caller's padded layout
and original row order. Cells: rnn (tanh), rnn_relu, lstm, gru.

The packing helpers (packing, pack, unpack, unsort) live here: tests/helpers.py
does not exist on this branch yet.
"""

import numpy as np
import pytest

from helpers import (BACKENDS, FAST_BACKENDS, GATES, GRAD_NAMES, assert_close, needs_torch,
                     torch)
from fastrnn import _backends, _reference as reference

if torch is not None:
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


CELLS = ["rnn", "rnn_relu", "lstm", "gru"]
DTYPES = [np.float32, np.float64]

# name, T, lengths (B of them), I, H: a length of 1 beside lengths of T (ties
# too) at an odd H, every length T, one sequence shorter than T (the packed
# batch has fewer steps than the padded one), a single step, and H = 1.
CASES = [
    ("lengths1toT", 7, [1, 7, 3, 7, 2, 5, 1, 6, 4], 5, 33),
    ("allT", 5, [5, 5, 5, 5], 3, 7),
    ("shorterthanT", 6, [4], 2, 5),
    ("T1", 1, [1, 1, 1], 4, 9),
    ("H1", 4, [2, 4, 1, 4, 3, 3], 3, 1),
]


def case_id(case):
    return f"B{len(case[2])}-{case[0]}"


cases = pytest.mark.parametrize("case", CASES, ids=case_id)
dtypes = pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
cells = pytest.mark.parametrize("cell", CELLS)


# ------------------------------------------------------------ packing helpers


def packing(lengths):
    """(order, batch_sizes) of a batch of these lengths: its rows sorted stably
    by length, longest first, and how many of them run at each step."""
    lengths = np.asarray(lengths)
    order = np.argsort(-lengths, kind="stable")
    batch_sizes = np.array([np.sum(lengths > t) for t in range(lengths.max())], dtype=np.int64)
    return order, batch_sizes


def pack(padded, order, batch_sizes):
    """Time-major padded (T, B, n) -> packed rows (N, n), gathered step by step:
    step t's rows are the first n_t sequences of `order` at time t."""
    return np.concatenate([padded[t, order[:n_t]] for t, n_t in enumerate(batch_sizes)])


def unpack(rows, order, batch_sizes, T):
    """Packed rows (N, n) -> padded (T, B, n) in the original row order, zero
    past each length (what pad_packed_sequence(..., total_length=T) gives)."""
    padded = np.zeros((T, len(order), rows.shape[1]), dtype=rows.dtype)
    row = 0
    for t, n_t in enumerate(batch_sizes):
        padded[t, order[:n_t]] = rows[row:row + n_t]
        row += n_t
    return padded


def unsort(sorted_rows, order):
    """Per-sequence rows in the sorted order -> the original order."""
    original = np.empty_like(sorted_rows)
    original[order] = sorted_rows
    return original


# ------------------------------------------------------------- the problems


def make_problem(cell, T, B, I, H, dtype, *, seed=0, scale=1.0):
    """Padded time-major inputs and loss weights, torch-like weights, nonzero states."""
    rng = np.random.default_rng(seed)
    G, k = GATES[cell], 1.0 / np.sqrt(H)

    def uniform(shape, bound):
        return rng.uniform(-bound, bound, shape).astype(dtype)

    return {
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


def case_problem(cell, case, dtype):
    _, T, lengths, I, H = case
    return make_problem(cell, T, len(lengths), I, H, dtype, seed=T * 31 + H), np.array(lengths)


def sorted_packed(p, lengths):
    """The kernel arguments of problem p packed by lengths, and (order, batch_sizes)."""
    order, batch_sizes = packing(lengths)
    packed = dict(p)
    for name in ("x", "dy"):
        packed[name] = pack(p[name], order, batch_sizes)
    for name in ("h0", "c0", "dhT", "dcT"):
        packed[name] = p[name][order]
    return packed, order, batch_sizes


# ------------------------------------------------------------ kernel calls


def initial_states(cell, a):
    return [a["h0"], a["c0"]] if cell == "lstm" else [a["h0"]]


def final_state_grads(cell, a):
    return [a["dhT"], a["dcT"]] if cell == "lstm" else [a["dhT"]]


def forward(kernels, cell, a, training=True, batch_sizes=None):
    """(y, cT or None, saved) of `cell`'s forward kernel on the arguments a."""
    biases = [a["b_ih"], a["b_hh"]] if cell == "gru" else [a["b_ih"] + a["b_hh"]]
    out = getattr(kernels, f"{cell}_forward")(a["x"], *initial_states(cell, a), a["w_ih"],
                                              a["w_hh"], *biases, training,
                                              batch_sizes=batch_sizes)
    return out if cell == "lstm" else (out[0], None, out[1])


def backward(kernels, cell, a, y, saved, need_dx=True, batch_sizes=None, with_dy=True):
    """{name: gradient} of `cell`'s backward kernel."""
    grads = getattr(kernels, f"{cell}_backward")(
        saved, a["x"], *initial_states(cell, a), a["w_ih"], a["w_hh"], y,
        a["dy"] if with_dy else None, *final_state_grads(cell, a), need_dx, batch_sizes=batch_sizes)
    return dict(zip(GRAD_NAMES[cell], grads))


def run_kernels(kernels, cell, a, batch_sizes, *, need_dx=True, with_dy=True, training=True):
    """Every output of a forward and its backward, by name, as the kernels return them."""
    y, cT, saved = forward(kernels, cell, a, training, batch_sizes)
    out = {"y": y, "cT": cT}
    if training:
        out.update(backward(kernels, cell, a, y, saved, need_dx, batch_sizes, with_dy))
    return {name: value for name, value in out.items() if value is not None}


def run_in_torch_layout(kernels, cell, p, lengths, with_dy=True):
    """The outputs and gradients of the packed kernels for the padded problem p,
    laid out as torch gives them (padded, original order, final states h_T and c_T)."""
    T, B = p["x"].shape[:2]
    a, order, batch_sizes = sorted_packed(p, lengths)
    out = run_kernels(kernels, cell, a, batch_sizes, with_dy=with_dy)
    y = unpack(out.pop("y"), order, batch_sizes, T)
    result = {"y": y, "hT": y[lengths - 1, np.arange(B)],   # each sequence's last step
              "dx": unpack(out.pop("dx"), order, batch_sizes, T)}
    for name in ("cT", "dh0", "dc0"):
        if name in out:
            result[name] = unsort(out.pop(name), order)
    if "db" in out:  # the gradient of both b_ih and b_hh
        out["db_ih"] = out["db_hh"] = out.pop("db")
    return {**result, **out}


TORCH_MODULES = {"rnn": lambda I, H: torch.nn.RNN(I, H, nonlinearity="tanh"),
                 "rnn_relu": lambda I, H: torch.nn.RNN(I, H, nonlinearity="relu"),
                 "lstm": lambda I, H: torch.nn.LSTM(I, H),
                 "gru": lambda I, H: torch.nn.GRU(I, H)}


def torch_run(cell, p, lengths, with_dy=True):
    """The same outputs and gradients from torch holding p's weights: the padded
    batch packed by lengths (None: every sequence runs T steps)."""
    T, _, I = p["x"].shape
    H = p["h0"].shape[1]
    module = TORCH_MODULES[cell](I, H).to(torch.from_numpy(p["x"]).dtype)
    with torch.no_grad():
        for key in ("w_ih", "w_hh", "b_ih", "b_hh"):
            kind = "weight" if key.startswith("w") else "bias"
            getattr(module, f"{kind}_{key[2:]}_l0").copy_(torch.from_numpy(p[key]))
    x = torch.tensor(p["x"], requires_grad=True)
    state0 = [torch.tensor(s[None], requires_grad=True) for s in initial_states(cell, p)]
    data = x if lengths is None else pack_padded_sequence(
        x, torch.from_numpy(np.asarray(lengths)), enforce_sorted=False)
    out, final = module(data, tuple(state0) if cell == "lstm" else state0[0])
    y = out if lengths is None else pad_packed_sequence(out, total_length=T)[0]
    finals = list(final) if cell == "lstm" else [final]
    loss = sum((s[0] * torch.from_numpy(ds)).sum()
               for s, ds in zip(finals, final_state_grads(cell, p)))
    if with_dy:
        loss = loss + (y * torch.from_numpy(p["dy"])).sum()
    loss.backward()
    params = dict(module.named_parameters())
    result = {"y": y, "hT": finals[0][0], "dx": x.grad, "dh0": state0[0].grad[0],
              "dw_ih": params["weight_ih_l0"].grad, "dw_hh": params["weight_hh_l0"].grad,
              "db_ih": params["bias_ih_l0"].grad, "db_hh": params["bias_hh_l0"].grad}
    if cell == "lstm":
        result.update(cT=finals[1][0], dc0=state0[1].grad[0])
    return {name: value.detach().numpy() for name, value in result.items()}


def kind_of(name):
    """Which entry of the tolerance table a result is compared with."""
    return "output" if name in ("y", "hT", "cT") else "grad"


def check_all(actual, expected, dtype, names):
    for name in names:
        assert_close(actual[name], expected[name], kind_of(name), dtype, name)
        assert actual[name].dtype == np.dtype(dtype), f"{name}: dtype {actual[name].dtype}"


FORWARD_NAMES = {cell: ["y", "hT"] + (["cT"] if cell == "lstm" else []) for cell in CELLS}
BACKWARD_NAMES = {cell: ["dx", "dh0"] + (["dc0"] if cell == "lstm" else []) +
                  ["dw_ih", "dw_hh", "db_ih", "db_hh"] for cell in CELLS}


def forward_matches_torch(cell, backend, case, dtype):
    p, lengths = case_problem(cell, case, dtype)
    kernels = _backends.get_backend(backend)
    expected = torch_run(cell, p, lengths)
    check_all(run_in_torch_layout(kernels, cell, p, lengths), expected, dtype,
              FORWARD_NAMES[cell])
    # Inference keeps fewer states (Numba: two slots of c_t): the same outputs.
    a, order, batch_sizes = sorted_packed(p, lengths)
    y, cT, saved = forward(kernels, cell, a, False, batch_sizes)
    assert saved is None
    assert_close(unpack(y, order, batch_sizes, p["x"].shape[0]), expected["y"], "output",
                 dtype, "y (training=False)")
    if cell == "lstm":
        assert_close(unsort(cT, order), expected["cT"], "output", dtype, "cT (training=False)")


def backward_matches_torch(cell, backend, case, dtype):
    p, lengths = case_problem(cell, case, dtype)
    kernels = _backends.get_backend(backend)
    for with_dy in (True, False):
        expected = torch_run(cell, p, lengths, with_dy)
        actual = run_in_torch_layout(kernels, cell, p, lengths, with_dy)
        check_all(actual, expected, dtype, BACKWARD_NAMES[cell])


# ------------------------------------ every backend against torch's PackedSequence


def torch_comparison(cell, direction):
    """test_<cell>_<direction>_packed: that kernel of every backend against torch,
    for every case and dtype."""
    check = forward_matches_torch if direction == "forward" else backward_matches_torch

    @needs_torch
    @dtypes
    @cases
    @pytest.mark.parametrize("backend", BACKENDS)
    def test(backend, case, dtype):
        check(cell, backend, case, dtype)

    test.__name__ = test.__qualname__ = f"test_{cell}_{direction}_packed"
    return test


# test_rnn_forward_packed, test_rnn_backward_packed, test_rnn_relu_forward_packed, ...
# test_gru_backward_packed, so that a test id names the kernel it checks.
for _cell in CELLS:
    for _direction in ("forward", "backward"):
        _test = torch_comparison(_cell, _direction)
        globals()[_test.__name__] = _test


@needs_torch
def test_the_packing_helper_lays_rows_out_as_torch_does():
    lengths = np.array([2, 6, 1, 4, 5])  # distinct: one sorted order
    x = np.arange(6 * 5 * 2, dtype=np.float64).reshape(6, 5, 2)
    order, batch_sizes = packing(lengths)
    packed = pack_padded_sequence(torch.from_numpy(x), torch.from_numpy(lengths),
                                  enforce_sorted=False)
    np.testing.assert_array_equal(order, packed.sorted_indices.numpy())
    np.testing.assert_array_equal(batch_sizes, packed.batch_sizes.numpy())
    np.testing.assert_array_equal(pack(x, order, batch_sizes), packed.data.numpy())
    padded, _ = pad_packed_sequence(packed, total_length=6)
    np.testing.assert_array_equal(unpack(pack(x, order, batch_sizes), order, batch_sizes, 6),
                                  padded.numpy())


# ReLU without lengths: nothing else compares rnn_relu_* with torch.
RELU_SHAPES = [(1, 1, 1, 1), (1, 3, 5, 7), (6, 1, 4, 33), (5, 4, 3, 1), (9, 5, 6, 33)]


@needs_torch
@dtypes
@pytest.mark.parametrize("T,B,I,H", RELU_SHAPES,
                         ids=[f"B{B}-T{T}-H{H}" for T, B, I, H in RELU_SHAPES])
@pytest.mark.parametrize("backend", BACKENDS)
def test_rnn_relu_matches_torch_without_lengths(backend, T, B, I, H, dtype):
    p = make_problem("rnn_relu", T, B, I, H, dtype, seed=B + H)
    kernels = _backends.get_backend(backend)
    expected = torch_run("rnn_relu", p, None)
    actual = run_kernels(kernels, "rnn_relu", p, None)
    actual.update(hT=actual["y"][-1], db_ih=actual["db"], db_hh=actual["db"])
    check_all(actual, expected, dtype, ["y", "hT"] + BACKWARD_NAMES["rnn_relu"])


@needs_torch
@pytest.mark.parametrize("packed", [False, True], ids=["unpacked", "packed"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_rnn_relu_keeps_nan_as_torch_does(backend, packed):
    p = make_problem("rnn_relu", 5, 4, 3, 6, np.float64, seed=7)
    p["x"][2, 1, 0] = np.nan   # sequence 1 at step 2
    lengths = np.array([5, 4, 2, 5]) if packed else None
    expected = torch_run("rnn_relu", p, lengths)["y"]
    kernels = _backends.get_backend(backend)
    if packed:
        a, order, batch_sizes = sorted_packed(p, lengths)
        y, _, _ = forward(kernels, "rnn_relu", a, False, batch_sizes)
        y = unpack(y, order, batch_sizes, 5)
    else:
        y, _, _ = forward(kernels, "rnn_relu", p, False)
    end = lengths[1] if packed else 5   # sequence 1's last step + 1
    assert np.isnan(y[2:end, 1]).all(), "NaN in, NaN out, from step 2 on"
    np.testing.assert_array_equal(np.isnan(y), np.isnan(expected))
    assert_close(np.nan_to_num(y), np.nan_to_num(expected), "output", np.float64, "y")


# ----------------------------------------- every fast backend against the reference


@pytest.mark.parametrize("with_dy", [True, False], ids=["dy", "dy_None"])
@dtypes
@cases
@cells
@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_packed_kernels_match_the_reference(backend, cell, case, dtype, with_dy):
    p, lengths = case_problem(cell, case, dtype)
    a, _, batch_sizes = sorted_packed(p, lengths)
    expected = run_kernels(reference, cell, a, batch_sizes, with_dy=with_dy)
    actual = run_kernels(_backends.get_backend(backend), cell, a, batch_sizes, with_dy=with_dy)
    assert sorted(actual) == sorted(expected)
    for name in expected:
        assert_close(actual[name], expected[name], kind_of(name), dtype, name)


@cells
@pytest.mark.parametrize("backend", BACKENDS)
def test_packed_with_every_length_T_is_the_unpacked_call(backend, cell):
    T, B = 6, 5
    p = make_problem(cell, T, B, 4, 19, np.float32, seed=3)
    kernels = _backends.get_backend(backend)
    unpacked = run_kernels(kernels, cell, p, None)
    a, order, batch_sizes = sorted_packed(p, np.full(B, T))
    np.testing.assert_array_equal(order, np.arange(B))   # stable: nothing moves
    packed = run_kernels(kernels, cell, a, batch_sizes)
    for name in ("y", "dx"):
        packed[name] = packed[name].reshape(T, B, -1)
    assert sorted(packed) == sorted(unpacked)
    for name, value in unpacked.items():
        if backend == "cpp":  # one driver: the same rows in the same order
            np.testing.assert_array_equal(packed[name], value, err_msg=name)
        else:
            assert_close(packed[name], value, kind_of(name), np.float32, name)


@cells
@pytest.mark.parametrize("backend", BACKENDS)
def test_packed_backward_without_dx_gives_the_same_gradients(backend, cell):
    p, lengths = case_problem(cell, CASES[0], np.float32)
    a, _, batch_sizes = sorted_packed(p, lengths)
    kernels = _backends.get_backend(backend)
    y, _, saved = forward(kernels, cell, a, True, batch_sizes)
    with_dx = backward(kernels, cell, a, y, saved, True, batch_sizes)
    without_dx = backward(kernels, cell, a, y, saved, False, batch_sizes)
    assert without_dx.pop("dx") is None
    for name, value in without_dx.items():
        np.testing.assert_array_equal(value, with_dx[name], err_msg=name)


@cells
@pytest.mark.parametrize("backend", BACKENDS)
def test_packed_kernels_give_the_same_bits_twice(backend, cell):
    kernels = _backends.get_backend(backend)
    lengths = np.random.default_rng(1).integers(3, 13, 17)
    runs = []
    for _ in range(2):
        p = make_problem(cell, 12, 17, 11, 70, np.float32, seed=5)  # fresh arrays each time
        a, _, batch_sizes = sorted_packed(p, lengths)
        runs.append(run_kernels(kernels, cell, a, batch_sizes))
    for name, value in runs[0].items():
        np.testing.assert_array_equal(value, runs[1][name], err_msg=name)


# ------------------------------------------------------------ argument checks

# A packed x of 6 rows and B = 3, with batch_sizes that are wrong in one way each.
BAD_BATCH_SIZES = [
    ("list", [3, 2, 1], TypeError, "batch_sizes must be a numpy.ndarray"),
    ("int32", np.array([3, 2, 1], np.int32), TypeError, "batch_sizes has dtype int32"),
    ("float", np.array([3.0, 2.0, 1.0]), TypeError, "batch_sizes has dtype float64"),
    ("2d", np.array([[3, 2, 1]]), ValueError, r"batch_sizes must be 1-D \(T,\)"),
    ("empty", np.array([], np.int64), ValueError, "batch_sizes needs at least one time step"),
    ("increasing", np.array([3, 1, 2]), ValueError, "non-increasing and at least 1"),
    ("zero", np.array([3, 3, 0]), ValueError, "non-increasing and at least 1"),
    ("first_not_B", np.array([2, 2, 2]), ValueError,
     r"batch_sizes\[0\] must equal the batch of h0 \(3\)"),
    ("sum_not_rows", np.array([3, 2, 2]), ValueError, r"sum\(batch_sizes\) = 7 rows"),
    ("x_not_2d", np.array([3, 2, 1]), ValueError, "a packed x must be 2-D"),
]

GOOD_BATCH_SIZES = np.array([3, 2, 1])


def small_packed_args(cell):
    """Packed arguments of 6 rows and B = 3: lengths 3, 2, 1, so GOOD_BATCH_SIZES."""
    return sorted_packed(make_problem(cell, 3, 3, 2, 4, np.float32), [3, 2, 1])[0]


@pytest.mark.parametrize("direction", ["forward", "backward"])
@pytest.mark.parametrize("bad", BAD_BATCH_SIZES, ids=[b[0] for b in BAD_BATCH_SIZES])
@cells
@pytest.mark.parametrize("backend", BACKENDS)
def test_packed_kernels_refuse_bad_batch_sizes(backend, cell, bad, direction):
    name, batch_sizes, error, message = bad
    kernels = _backends.get_backend(backend)
    good = small_packed_args(cell)
    a = dict(good, x=good["x"][:, None, :]) if name == "x_not_2d" else good
    y, _, saved = forward(kernels, cell, good, True, GOOD_BATCH_SIZES)
    with pytest.raises(error, match=message):
        if direction == "forward":
            forward(kernels, cell, a, True, batch_sizes)
        else:
            backward(kernels, cell, a, y, saved, True, batch_sizes)


@cells
@pytest.mark.parametrize("backend", BACKENDS)
def test_packed_forward_refuses_an_h0_that_is_not_2d(backend, cell):
    kernels = _backends.get_backend(backend)
    good = small_packed_args(cell)
    with pytest.raises(ValueError, match=r"h0 must be 2-D \(B, H\)"):
        forward(kernels, cell, dict(good, h0=good["h0"][:, 0]), True, GOOD_BATCH_SIZES)


@pytest.mark.parametrize("name", ["y", "dy", "dhT"])
@cells
@pytest.mark.parametrize("backend", BACKENDS)
def test_packed_backward_refuses_arrays_of_the_wrong_shape(backend, cell, name):
    kernels = _backends.get_backend(backend)
    p, lengths = case_problem(cell, CASES[0], np.float32)
    a, _, batch_sizes = sorted_packed(p, lengths)
    y, _, saved = forward(kernels, cell, a, True, batch_sizes)
    if name == "y":
        y = y[:-1]   # a row short
    else:
        a[name] = a[name][:-1]
    with pytest.raises(ValueError, match=rf"\b{name} must have shape"):
        backward(kernels, cell, a, y, saved, True, batch_sizes)


@cells
@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_packed_backward_refuses_a_forward_of_other_batch_sizes(backend, cell):
    """Same T, B and N = 7 rows, other steps: only the sizes themselves tell."""
    kernels = _backends.get_backend(backend)
    a, _, batch_sizes = sorted_packed(make_problem(cell, 3, 3, 2, 4, np.float32), [3, 2, 2])
    np.testing.assert_array_equal(batch_sizes, [3, 3, 1])
    y, _, saved = forward(kernels, cell, a, True, batch_sizes)
    with pytest.raises(ValueError, match="batch_sizes differ from those of the forward"):
        backward(kernels, cell, a, y, saved, True, np.array([3, 2, 2]))


@cells
@pytest.mark.parametrize("backend", BACKENDS)
def test_packed_backward_refuses_the_saved_state_of_an_unpacked_forward(backend, cell):
    if backend == "numpy" and cell.startswith("rnn"):
        pytest.skip("the reference RNN saves nothing (None): there is nothing to refuse")
    kernels = _backends.get_backend(backend)
    p = make_problem(cell, 3, 2, 2, 4, np.float32)
    _, _, saved = forward(kernels, cell, p, True)
    a, _, batch_sizes = sorted_packed(p, [3, 3])  # the same 6 rows, packed
    y, _, _ = forward(kernels, cell, a, False, batch_sizes)
    with pytest.raises(ValueError, match="batch_sizes"):
        backward(kernels, cell, a, y, saved, True, batch_sizes)
