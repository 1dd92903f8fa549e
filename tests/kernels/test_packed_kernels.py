"""Packed (variable-length) batches through every backend's kernels.

The kernels are called directly with batch_sizes, the contract at the top of
fastrnn/_reference.py: the rows sorted by length, longest first, and step t's
rows stored after step t-1's. torch runs the same padded batch through
pack_padded_sequence(..., enforce_sorted=False) and pad_packed_sequence(...,
total_length=T), so every result is compared in the caller's padded layout
and original row order. Cells: rnn (tanh), rnn_relu, lstm, gru.

The packing helpers (packing, pack, unpack, unsort) are this file's own.
"""

import numpy as np
import pytest

from helpers import (BACKENDS, FAST_BACKENDS, GRAD_NAMES, KERNEL_CELLS, assert_close,
                     kernel_backward, kernel_forward, make_kernel_args, needs_torch, torch,
                     torch_kernel_results)
from fastrnn import _backends, _reference as reference

if torch is not None:
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


CELLS = KERNEL_CELLS
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


def case_problem(cell, case, dtype):
    _, T, lengths, I, H = case
    p = make_kernel_args(cell, T, len(lengths), I, H, dtype, seed=T * 31 + H)
    return p, np.array(lengths)


def sorted_packed(p, lengths):
    """The kernel arguments of problem p packed by lengths, and (order, batch_sizes)."""
    order, batch_sizes = packing(lengths)
    packed = dict(p)
    for name in ("x", "dy"):
        packed[name] = pack(p[name], order, batch_sizes)
    for name in ("h0", "c0", "dhT", "dcT"):
        if name in p:
            packed[name] = p[name][order]
    return packed, order, batch_sizes


# ------------------------------------------------------------ kernel calls


def run_kernels(kernels, cell, a, batch_sizes, *, need_dx=True, with_dy=True, training=True):
    """Every output of a forward and its backward, by name, as the kernels return them."""
    outputs, saved = kernel_forward(kernels, cell, a, training, batch_sizes=batch_sizes)
    out = dict(zip(["y", "cT"], outputs))
    if training:
        grads = kernel_backward(kernels, cell, saved, a, outputs, with_dy=with_dy,
                                need_dx=need_dx, batch_sizes=batch_sizes)
        out.update(zip(GRAD_NAMES[cell], grads))
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
    return {**result, **out}


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
    expected = torch_kernel_results(cell, p, lengths)
    check_all(run_in_torch_layout(kernels, cell, p, lengths), expected, dtype,
              FORWARD_NAMES[cell])
    # Inference keeps fewer states (Numba: two slots of c_t): the same outputs.
    a, order, batch_sizes = sorted_packed(p, lengths)
    outputs, saved = kernel_forward(kernels, cell, a, False, batch_sizes=batch_sizes)
    assert saved is None
    assert_close(unpack(outputs[0], order, batch_sizes, p["x"].shape[0]), expected["y"],
                 "output", dtype, "y (training=False)")
    if cell == "lstm":
        assert_close(unsort(outputs[1], order), expected["cT"], "output", dtype,
                     "cT (training=False)")


def backward_matches_torch(cell, backend, case, dtype):
    p, lengths = case_problem(cell, case, dtype)
    kernels = _backends.get_backend(backend)
    for with_dy in (True, False):
        expected = torch_kernel_results(cell, p, lengths, with_dy)
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


@needs_torch
@pytest.mark.parametrize("packed", [False, True], ids=["unpacked", "packed"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_rnn_relu_keeps_nan_as_torch_does(backend, packed):
    p = make_kernel_args("rnn_relu", 5, 4, 3, 6, np.float64, seed=7)
    p["x"][2, 1, 0] = np.nan   # sequence 1 at step 2
    lengths = np.array([5, 4, 2, 5]) if packed else None
    expected = torch_kernel_results("rnn_relu", p, lengths)["y"]
    kernels = _backends.get_backend(backend)
    if packed:
        a, order, batch_sizes = sorted_packed(p, lengths)
        (y,), _ = kernel_forward(kernels, "rnn_relu", a, False, batch_sizes=batch_sizes)
        y = unpack(y, order, batch_sizes, 5)
    else:
        (y,), _ = kernel_forward(kernels, "rnn_relu", p, False)
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
    p = make_kernel_args(cell, T, B, 4, 19, np.float32, seed=3)
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
    outputs, saved = kernel_forward(kernels, cell, a, batch_sizes=batch_sizes)
    with_dx, without_dx = (kernel_backward(kernels, cell, saved, a, outputs, need_dx=need_dx,
                                           batch_sizes=batch_sizes) for need_dx in (True, False))
    assert without_dx[0] is None
    for name, value, want in zip(GRAD_NAMES[cell][1:], without_dx[1:], with_dx[1:]):
        np.testing.assert_array_equal(value, want, err_msg=name)


# The numba backward takes the weight gradients chunk by chunk of steps, each
# of at most max(rows, B) rows. The lengths1toT batch, 9, 7, 6, 5, 4, 3 and 2
# rows a step, runs in chunks of 1, 1, 1, 1 and 3 steps (at most 9 rows) or
# of 1, 1, 2 and 3 (13); padded to 9 rows a step, in chunks of one step.
CHUNKS = {(True, 1): 5, (True, 13): 4, (False, 1): 7, (False, 13): 7}


@pytest.mark.skipif("numba" not in BACKENDS, reason="numba is not installed")
@pytest.mark.parametrize("chunk_rows", [1, 13])
@pytest.mark.parametrize("packed", [False, True], ids=["unpacked", "packed"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@cells
def test_numba_backward_in_chunks_of_steps_gives_the_gradients_of_one_chunk(
        monkeypatch, cell, precision, packed, chunk_rows):
    p, lengths = case_problem(cell, CASES[0], np.float32)
    if not packed:
        lengths = np.full(len(lengths), p["x"].shape[0])
    a, _, batch_sizes = sorted_packed(p, lengths)
    numba = _backends.get_backend("numba")
    outputs, saved = kernel_forward(numba, cell, a, batch_sizes=batch_sizes, precision=precision)
    one_chunk = kernel_backward(numba, cell, saved, a, outputs, batch_sizes=batch_sizes,
                                precision=precision)
    GH = p["w_hh"].shape[0]
    offsets = np.concatenate([[0], np.cumsum(batch_sizes)])
    assert len(numba._chunks(offsets, GH, numba._CHUNK_NUMBERS)[0]) == 2   # one chunk
    monkeypatch.setattr(numba, "_CHUNK_NUMBERS", chunk_rows * GH)
    chunks = len(numba._chunks(offsets, GH, numba._CHUNK_NUMBERS)[0]) - 1
    assert chunks == CHUNKS[packed, chunk_rows]
    in_chunks = kernel_backward(numba, cell, saved, a, outputs, batch_sizes=batch_sizes,
                                precision=precision)
    for name, value, want in zip(GRAD_NAMES[cell], in_chunks, one_chunk):
        assert_close(value, want, kind_of(name), np.float32, name)


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
    return sorted_packed(make_kernel_args(cell, 3, 3, 2, 4, np.float32), [3, 2, 1])[0]


@pytest.mark.parametrize("bad", BAD_BATCH_SIZES, ids=[b[0] for b in BAD_BATCH_SIZES])
@cells
@pytest.mark.parametrize("backend", BACKENDS)
def test_packed_forward_refuses_bad_batch_sizes(backend, cell, bad):
    name, batch_sizes, error, message = bad
    kernels = _backends.get_backend(backend)
    good = small_packed_args(cell)
    a = dict(good, x=good["x"][:, None, :]) if name == "x_not_2d" else good
    with pytest.raises(error, match=message):
        kernel_forward(kernels, cell, a, batch_sizes=batch_sizes)


@pytest.mark.parametrize("bad", BAD_BATCH_SIZES[:-2], ids=[b[0] for b in BAD_BATCH_SIZES[:-2]])
@cells
@pytest.mark.parametrize("backend", BACKENDS)
def test_packed_backward_refuses_bad_batch_sizes(backend, cell, bad):
    """Backward checks batch_sizes as forward does; sizes that are fine in themselves
    but not the forward's are a foreign workspace (test_kernel_arguments.py)."""
    _, batch_sizes, error, message = bad
    kernels = _backends.get_backend(backend)
    a = small_packed_args(cell)
    outputs, saved = kernel_forward(kernels, cell, a, batch_sizes=GOOD_BATCH_SIZES)
    with pytest.raises(error, match=message):
        kernel_backward(kernels, cell, saved, a, outputs, batch_sizes=batch_sizes)


@cells
@pytest.mark.parametrize("backend", BACKENDS)
def test_packed_forward_refuses_an_h0_that_is_not_2d(backend, cell):
    kernels = _backends.get_backend(backend)
    good = small_packed_args(cell)
    with pytest.raises(ValueError, match=r"h0 must be 2-D \(B, H\)"):
        kernel_forward(kernels, cell, dict(good, h0=good["h0"][:, 0]),
                       batch_sizes=GOOD_BATCH_SIZES)
