"""Every backend's raw kernels refuse what they cannot compute, before a kernel runs, and
say why.

Whatever arguments a caller hands over, a kernel either computes what the
reference computes or raises the one TypeError / ValueError that names the
argument at fault; a backward takes the workspace of a training forward of
the same cell, dtype, batch_sizes and direction, and checks the caller's
arrays against it. The compiled module's own messages for each argument are
checked in test_core.py.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastrnn import _backends, _reference
from helpers import BACKENDS, GATES, KERNEL_CELLS, kernel_backward, kernel_forward, make_kernel_args

cells = pytest.mark.parametrize("cell", KERNEL_CELLS)
backends = pytest.mark.parametrize("backend", BACKENDS)

# The arrays of a forward call after x, and of a backward call after saved.
FORWARD_ARRAYS = {cell: [name for name in ("h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh")
                         if cell == "lstm" or name != "c0"] for cell in KERNEL_CELLS}
BACKWARD_ARRAYS = {cell: [name for name in ("h0", "c0", "w_ih", "w_hh", "y", "dy", "dhT", "dcT")
                          if cell == "lstm" or name not in ("c0", "dcT")]
                   for cell in KERNEL_CELLS}


def backward_call(module, cell, saved, a, **options):
    """kernel_backward with the forward's y in a["y"]."""
    return kernel_backward(module, cell, saved, a, [a["y"]], **options)


# ------------------------------------------------------------ random calls


@st.composite
def raw_forward_calls(draw):
    """<cell>_forward arguments of random cell, sizes, dtype and layouts with at most
    one fault, and the refusal that fault must bring on every backend: (error type,
    message fragment), or None for a call that must compute what the reference does.
    The compiled backend reads arrays where they lie, so it also refuses a weight or
    state that is not C-contiguous (the Python backends copy any layout)."""
    cell = draw(st.sampled_from(KERNEL_CELLS))
    T, B, I, H = (draw(st.integers(1, 5)) for _ in range(4))
    G = GATES[cell]
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    shapes = {"x": (T, B, I), "h0": (B, H), "c0": (B, H), "w_ih": (G * H, I),
              "w_hh": (G * H, H), "b_ih": (G * H,), "b_hh": (G * H,)}
    if cell != "lstm":
        del shapes["c0"]
    names = sorted(shapes)
    fault = draw(st.sampled_from(["none", "none", "shape", "dtype", "x_dtype", "fortran"]))
    name = draw(st.sampled_from([n for n in names if n != "x"]))
    expected = None
    if fault == "shape":  # one size of one array off, x's sizes rule (h0 by its rows)
        shape = list(shapes[name])
        d = 0 if name == "h0" else draw(st.integers(0, len(shape) - 1))
        shape[d] += draw(st.sampled_from([-1, 1, 3]))
        shapes[name] = tuple(shape)
        expected = (ValueError, f"{name} must", None)
    arrays = {n: rng.uniform(-1, 1, shape).astype(dtype) for n, shape in shapes.items()}
    if fault == "dtype":
        other = np.float64 if dtype == np.float32 else np.float32
        arrays[name] = arrays[name].astype(other)
        expected = (TypeError, f"{name} has dtype", None)
    elif fault == "x_dtype":
        arrays["x"] = arrays["x"].astype(draw(st.sampled_from([np.int64, np.float16])))
        expected = (TypeError, "float32 or float64", None)
    elif fault == "fortran":
        name = draw(st.sampled_from([n for n in names if n in ("h0", "c0", "w_ih", "w_hh")]))
        arrays[name] = np.asfortranarray(arrays[name])
        if arrays[name].shape[0] > 1 and arrays[name].shape[1] > 1:
            expected = (ValueError, f"{name} must be C-contiguous", "cpp")
    return cell, arrays, expected


def reference_forward(cell, arrays):
    a = {k: np.asarray(v, np.float64) for k, v in arrays.items()}
    (y, *states), _ = kernel_forward(_reference, cell, a, False)
    return y, states[-1] if states else y[-1]


@backends
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(call=raw_forward_calls())
def test_a_raw_forward_either_agrees_with_the_reference_or_names_the_fault(backend, call):
    module = _backends.get_backend(backend)
    cell, a, expected = call
    if expected is not None and expected[2] in (None, backend):
        error, fragment, _ = expected
        with pytest.raises(error, match=fragment):
            kernel_forward(module, cell, a, False)
        return
    (y, *states), _ = kernel_forward(module, cell, a, False)
    last = states[-1] if states else y[-1]
    y_ref, last_ref = reference_forward(cell, a)
    tol = 1e-5 if a["x"].dtype == np.float32 else 1e-12
    assert y.shape == y_ref.shape
    assert np.abs(np.asarray(y, np.float64) - y_ref).max() <= tol
    assert np.abs(np.asarray(last, np.float64) - last_ref).max() <= tol


@st.composite
def raw_backward_faults(draw):
    """A cell and one fault of a backward call's arrays: (cell, name, kind), kind a
    shape one off or the other float dtype."""
    cell = draw(st.sampled_from(KERNEL_CELLS))
    name = draw(st.sampled_from(BACKWARD_ARRAYS[cell]))
    return cell, name, draw(st.sampled_from(["shape", "dtype"])), draw(st.integers(0, 1))


@backends
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fault=raw_backward_faults())
def test_a_raw_backward_names_the_array_that_does_not_fit_its_workspace(backend, fault):
    module = _backends.get_backend(backend)
    cell, name, kind, axis = fault
    a = make_kernel_args(cell, 3, 2, 4, 5, np.float32)
    (a["y"], *_), saved = kernel_forward(module, cell, a)
    if kind == "shape":
        shape = list(a[name].shape)
        if name == "h0":
            axis = 0  # h0's rows: its H would be read as the weights' fault
        shape[min(axis, len(shape) - 1)] += 1
        a[name] = np.zeros(shape, np.float32)
        error, fragment = ValueError, f"{name} must have shape"
    else:
        a[name] = a[name].astype(np.float64)
        # h0 says the caller's dtype: the workspace's is then the one at odds.
        error, fragment = TypeError, ("another dtype" if name == "h0" else f"{name} has dtype")
    with pytest.raises(error, match=fragment):
        backward_call(module, cell, saved, a)


# ------------------------------------------------------------- shapes by name

# Mismatches hypothesis once found the numba backend reading past (an empty b):
# every backend must refuse them before a kernel runs. For T=2, B=3, I=2, H=1.
def broken_shape(cell, name):
    G = GATES[cell]
    return {"b_ih": (0,), "b_hh": (G + 1,), "w_hh": (G, 2), "w_ih": (G, 3), "c0": (2, 2),
            "h0": (2, 1)}[name]


@backends
@pytest.mark.parametrize("cell, broken", [(cell, name) for cell in KERNEL_CELLS
                                          for name in FORWARD_ARRAYS[cell]])
def test_raw_kernels_refuse_mismatched_shapes(backend, cell, broken):
    module = _backends.get_backend(backend)
    a = make_kernel_args(cell, 2, 3, 2, 1, np.float32)
    a[broken] = np.zeros(broken_shape(cell, broken), np.float32)
    with pytest.raises(ValueError, match=broken):
        kernel_forward(module, cell, a)


@backends
@pytest.mark.parametrize("packed", [False, True], ids=["unpacked", "packed"])
@pytest.mark.parametrize("name", ["y", "dy", "dhT"])
@cells
def test_backward_refuses_arrays_of_the_wrong_shape(backend, cell, name, packed):
    module = _backends.get_backend(backend)
    a = make_kernel_args(cell, 3, 3, 2, 4, np.float32)
    options = {}
    if packed:  # lengths 3, 2, 1
        options["batch_sizes"] = np.array([3, 2, 1])
        for key in ("x", "dy"):
            a[key] = np.concatenate([a[key][0], a[key][1, :2], a[key][2, :1]])
    (a["y"], *_), saved = kernel_forward(module, cell, a, **options)
    a[name] = a[name][:-1]   # a row short
    with pytest.raises(ValueError, match=rf"\b{name} must have shape"):
        backward_call(module, cell, saved, a, **options)


# ------------------------------------------------------------ the workspace


@backends
@cells
def test_backward_without_a_training_forward_is_an_error(backend, cell):
    module = _backends.get_backend(backend)
    a = make_kernel_args(cell, 3, 2, 4, 5, np.float32)
    (a["y"], *_), saved = kernel_forward(module, cell, a, False)
    assert saved is None
    with pytest.raises(ValueError, match="needs the state saved by a training forward"):
        backward_call(module, cell, saved, a)


def other_cell(cell):
    return "gru" if cell != "gru" else "lstm"


# What a backward refuses of a workspace, and how it says so: the workspace comes
# from a forward of another kind than the backward's call.
FOREIGN = {
    "not_a_workspace": (TypeError, "saved must be the workspace returned by"),
    "other_cell": (ValueError, "saved comes from .*_forward"),
    "other_dtype": (TypeError, "another dtype"),
    "other_batch": (ValueError, r"h0 must have shape \(3, "),
    "other_input_size": (ValueError, r"w_ih must have shape \(\d+, 4\)"),
    "other_steps": (ValueError, r"\by must have shape \(3, 3, 5\)"),
    "other_batch_sizes": (ValueError, "batch_sizes differ from those of the forward"),
    "unpacked_forward": (ValueError, "batch_sizes differ from those of the forward"),
    "other_direction": (ValueError, "reverse=False, but the forward that saved it"),
    "other_backend": (TypeError, "saved must be the workspace returned by"),
}


def foreign_backward(module, cell, foreign):
    """(saved, arrays, options) of a backward call whose workspace comes from a forward
    unlike the call, as FOREIGN names it."""
    a = make_kernel_args(cell, 3, 3, 4, 5, np.float32)
    call, options = a, {}
    forward = {"module": module, "cell": cell, "a": a}
    if foreign == "other_cell":
        forward["cell"] = other_cell(cell)
        forward["a"] = make_kernel_args(other_cell(cell), 3, 3, 4, 5, np.float32)
    elif foreign == "other_dtype":
        forward["a"] = make_kernel_args(cell, 3, 3, 4, 5, np.float64)
    elif foreign == "other_backend":
        forward["module"] = _backends.get_backend(next(n for n in BACKENDS if n != module.name))
    elif foreign == "other_direction":
        forward["reverse"] = True
    elif foreign == "other_batch":
        call = make_kernel_args(cell, 3, 2, 4, 5, np.float32)
    elif foreign == "other_input_size":
        call = make_kernel_args(cell, 3, 3, 3, 5, np.float32)
    elif foreign == "other_steps":
        call = make_kernel_args(cell, 2, 3, 4, 5, np.float32)
    elif foreign in ("other_batch_sizes", "unpacked_forward"):
        call = dict(a, x=a["x"].reshape(9, 4)[:7], dy=a["dy"].reshape(9, 5)[:7])
        options = {"batch_sizes": np.array([3, 3, 1])}
        if foreign == "other_batch_sizes":  # 7 rows too, in other steps
            forward.update(a=call, batch_sizes=np.array([3, 2, 2]))
    _, saved = kernel_forward(forward.pop("module"), forward.pop("cell"), forward.pop("a"),
                              **forward)
    if foreign == "not_a_workspace":
        saved = (np.zeros(3), np.zeros(3))
    return saved, dict(call, y=np.zeros_like(call["dy"])), options


@backends
@pytest.mark.parametrize("foreign", sorted(FOREIGN))
@cells
def test_backward_refuses_a_foreign_workspace(backend, cell, foreign):
    if foreign == "other_backend" and len(BACKENDS) == 1:
        pytest.skip("one backend here")
    module = _backends.get_backend(backend)
    saved, a, options = foreign_backward(module, cell, foreign)
    error, message = FOREIGN[foreign]
    with pytest.raises(error, match=message):
        backward_call(module, cell, saved, a, **options)


@backends
@cells
def test_reverse_with_a_packed_batch_is_refused(backend, cell):
    module = _backends.get_backend(backend)
    a = make_kernel_args(cell, 2, 2, 3, 4, np.float32)
    a["x"] = a["x"].reshape(4, 3)
    with pytest.raises(ValueError, match="reverse=True runs full-length sequences only"):
        kernel_forward(module, cell, a, batch_sizes=np.array([2, 2]), reverse=True)


@backends
@pytest.mark.parametrize("bad", ["shape", "dtype", "not_an_array"])
@cells
def test_out_must_be_an_array_like_y(backend, cell, bad):
    module = _backends.get_backend(backend)
    a = make_kernel_args(cell, 3, 2, 4, 5, np.float32)
    out = {"shape": np.zeros((3, 2, 6), np.float32), "dtype": np.zeros((3, 2, 5)),
           "not_an_array": [[[0.0] * 5] * 2] * 3}[bad]
    error = ValueError if bad == "shape" else TypeError
    with pytest.raises(error, match="out"):
        kernel_forward(module, cell, a, out=out)
