"""Every fast backend's raw kernels refuse what they cannot compute, before a kernel runs.

Whatever arguments a caller hands over, a kernel either computes what the
reference computes or raises TypeError / ValueError; a backward needs the
workspace of a training forward of the same sizes. The compiled module's own
messages for each argument are checked in test_core.py.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastrnn import _backends, _reference
from helpers import FAST_BACKENDS, make_kernel_args

CELLS = ["rnn", "lstm"]


@st.composite
def raw_kernel_calls(draw):
    """Arguments for <cell>_forward with random sizes, dtypes, layouts and mismatches."""
    cell = draw(st.sampled_from(CELLS))
    T, B, I, H = (draw(st.integers(1, 5)) for _ in range(4))
    G = 4 if cell == "lstm" else 1
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    shapes = {"x": (T, B, I), "h0": (B, H), "c0": (B, H),
              "w_ih": (G * H, I), "w_hh": (G * H, H), "b": (G * H,)}
    if draw(st.booleans()):  # break one shape
        name = draw(st.sampled_from(sorted(shapes)))
        shape = list(shapes[name])
        shape[draw(st.integers(0, len(shape) - 1))] += draw(st.sampled_from([-1, 1, 3]))
        shapes[name] = tuple(max(0, n) for n in shape)
    arrays = {}
    for name, shape in shapes.items():
        dtype = draw(st.sampled_from([np.float32, np.float32, np.float64, np.int64, np.float16]))
        a = rng.uniform(-1, 1, shape).astype(dtype)
        if a.ndim >= 2 and draw(st.integers(0, 4)) == 0:
            a = np.asfortranarray(a)
        arrays[name] = a
    return cell, arrays


def _reference_forward(cell, arrays):
    a = {k: np.asarray(v, np.float64) for k, v in arrays.items()}
    if cell == "lstm":
        y, cT, _ = _reference.lstm_forward(a["x"], a["h0"], a["c0"], a["w_ih"], a["w_hh"],
                                           a["b"], False)
        return y, cT
    y, _ = _reference.rnn_forward(a["x"], a["h0"], a["w_ih"], a["w_hh"], a["b"], False)
    return y, y[-1]


# Mismatches hypothesis once found the numba backend reading past (an empty b):
# every fast backend must refuse them before a kernel runs.
BROKEN_FORWARD = {"b": np.zeros(0, np.float32), "w_hh": np.zeros((4, 2), np.float32),
                  "w_ih": np.zeros((4, 3), np.float32), "c0": np.zeros((2, 2), np.float32)}


@pytest.mark.parametrize("backend", FAST_BACKENDS or ["numpy"])
@pytest.mark.parametrize("broken", sorted(BROKEN_FORWARD))
def test_raw_kernels_refuse_mismatched_shapes(backend, broken):
    module = _backends.get_backend(backend)
    a = {"x": np.zeros((2, 3, 2), np.float32), "h0": np.zeros((3, 1), np.float32),
         "c0": np.zeros((3, 1), np.float32), "w_ih": np.zeros((4, 2), np.float32),
         "w_hh": np.zeros((4, 1), np.float32), "b": np.zeros(4, np.float32)}
    a[broken] = BROKEN_FORWARD[broken]
    with pytest.raises(ValueError, match=broken):
        module.lstm_forward(a["x"], a["h0"], a["c0"], a["w_ih"], a["w_hh"], a["b"], True)
    if broken != "c0":  # the RNN: one gate, so the intact weights keep their first row
        rnn = {k: v[:1] if k in ("w_ih", "w_hh", "b") and k != broken else v
               for k, v in a.items()}
        with pytest.raises(ValueError, match=broken):
            module.rnn_forward(rnn["x"], rnn["h0"], rnn["w_ih"], rnn["w_hh"], rnn["b"], True)


@pytest.mark.parametrize("backend", FAST_BACKENDS or ["numpy"])
def test_lstm_backward_without_saved_state_is_an_error(backend):
    module = _backends.get_backend(backend)
    a = make_kernel_args("lstm", 3, 2, 4, 5, np.float32)
    fwd_args = (a["x"], a["h0"], a["c0"], a["w_ih"], a["w_hh"], a["b"])
    y, _, saved = module.lstm_forward(*fwd_args, False)
    with pytest.raises(ValueError, match="training forward"):
        module.lstm_backward(saved, *fwd_args[:5], y, None, a["dhT"], a["dcT"], True)


@pytest.mark.parametrize("backend", FAST_BACKENDS or ["numpy"])
@pytest.mark.parametrize("other", ["batch", "steps"])
def test_backward_refuses_a_workspace_of_other_sizes(backend, other):
    module = _backends.get_backend(backend)
    z = np.zeros
    _, _, saved = module.lstm_forward(z((2, 3, 2), np.float32), z((3, 1), np.float32),
                                      z((3, 1), np.float32), z((4, 2), np.float32),
                                      z((4, 1), np.float32), z(4, np.float32), True)
    T, B = (2, 5) if other == "batch" else (4, 3)  # not the forward's 2 steps of batch 3
    x, h0, y = z((T, B, 2), np.float32), z((B, 1), np.float32), z((T, B, 1), np.float32)
    with pytest.raises(ValueError, match="other sizes"):
        module.lstm_backward(saved, x, h0, h0, z((4, 2), np.float32), z((4, 1), np.float32),
                             y, None, h0, h0, True)


@pytest.mark.parametrize("backend", FAST_BACKENDS or ["numpy"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(call=raw_kernel_calls())
def test_raw_kernel_either_agrees_with_reference_or_raises(backend, call):
    module = _backends.get_backend(backend)
    cell, a = call
    try:
        if cell == "lstm":
            y, cT, _ = module.lstm_forward(a["x"], a["h0"], a["c0"], a["w_ih"], a["w_hh"],
                                           a["b"], False)
            last = cT
        else:
            y, _ = module.rnn_forward(a["x"], a["h0"], a["w_ih"], a["w_hh"], a["b"], False)
            last = y[-1]
    except (TypeError, ValueError):
        return  # refused clearly: fine
    # accepted: then it must have computed the right thing
    y_ref, last_ref = _reference_forward(cell, a)
    low = min(np.finfo(v.dtype).eps if v.dtype.kind == "f" else 1e-16 for v in a.values())
    tol = 1e-5 if low <= np.finfo(np.float32).eps else 5e-3
    assert y.shape == y_ref.shape
    assert np.abs(np.asarray(y, np.float64) - y_ref).max() <= tol
    assert np.abs(np.asarray(last, np.float64) - last_ref).max() <= tol
