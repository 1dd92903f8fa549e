"""Shared test helpers: the one tolerance table, problem builders, backends."""

import tempfile

import numpy as np
import pytest

import fastrnn

# Every backend comparison uses this table. "output": max absolute error of
# y and the final state; "grad": max error relative to the largest magnitude
# of the expected gradient (so an all-zero gradient is compared absolutely).
TOLERANCES = {
    np.dtype(np.float32): {"output": 1e-5, "grad": 1e-4},
    np.dtype(np.float64): {"output": 1e-12, "grad": 1e-10},
}

# A fresh interpreter started in the source tree imports its fastrnn (no compiled
# extension) before the installed one: tests start subprocesses from here instead.
OUTSIDE_REPO = tempfile.gettempdir()

BACKENDS = fastrnn.available_backends()
FAST_BACKENDS = [name for name in BACKENDS if name != "numpy"]


def relative_error(actual, expected):
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    if actual.size == 0:
        return 0.0
    scale = max(float(np.abs(expected).max()), 1e-6)
    return float(np.abs(actual - expected).max()) / scale


def assert_close(actual, expected, kind, dtype, what=""):
    tol = TOLERANCES[np.dtype(dtype)][kind]
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert np.all(np.isfinite(actual)) == np.all(np.isfinite(expected)), f"{what}: finiteness differs"
    if kind == "output":
        err = float(np.abs(actual - expected).max()) if actual.size else 0.0
    else:
        err = relative_error(actual, expected)
    assert err <= tol, f"{what}: {kind} error {err:.3g} > {tol:g}"
    return err


def make_layer(cell, I, H, *, backend, dtype=np.float32, batch_first=True, seed=0):
    if cell == "lstm":
        return fastrnn.LSTM(I, H, backend=backend, dtype=dtype, batch_first=batch_first, seed=seed)
    return fastrnn.RNN(I, H, backend=backend, dtype=dtype, batch_first=batch_first, seed=seed)


def make_problem(cell, T, B, I, H, *, dtype=np.float32, batch_first=True, seed=0, scale=1.0):
    """Inputs, a nonzero initial state and loss weights on every output."""
    rng = np.random.default_rng(seed)
    shape = (B, T, I) if batch_first else (T, B, I)
    x = (scale * rng.standard_normal(shape)).astype(dtype)
    state = rng.uniform(-0.5, 0.5, (B, H)).astype(dtype)
    dy = rng.standard_normal(shape[:2] + (H,)).astype(dtype)
    dstate = rng.standard_normal((B, H)).astype(dtype)
    if cell == "lstm":
        state = (state, rng.uniform(-1, 1, (B, H)).astype(dtype))
        dstate = (dstate, rng.standard_normal((B, H)).astype(dtype))
    return x, state, dy, dstate


def flat_state(state):
    return list(state) if isinstance(state, tuple) else [state]


@pytest.fixture(params=["rnn", "lstm"])
def cell(request):
    return request.param


@pytest.fixture
def keep_thread_settings():
    """Put every library's thread settings back after a test that changes them."""
    import sys

    from threadpoolctl import threadpool_limits
    threads = fastrnn.get_num_threads()
    torch_threads = sys.modules["torch"].get_num_threads() if "torch" in sys.modules else None
    limits = threadpool_limits(limits=None)  # restores what it saw, on request
    yield
    fastrnn.set_num_threads(threads)
    if torch_threads is not None:
        sys.modules["torch"].set_num_threads(torch_threads)
    limits.restore_original_limits()


try:  # the kernel paths of the compiled backend this CPU runs
    from fastrnn import _core as _compiled
    _ISAS = _compiled.build_info()["isa_supported"]
except ImportError:
    _compiled, _ISAS = None, []


@pytest.fixture(params=_ISAS or ["none"])
def isa(request):
    """Runs the test once on every kernel path of the compiled backend."""
    if _compiled is None:
        pytest.skip("the compiled backend is not built here")
    before = _compiled.build_info()["kernel_path"]
    _compiled._set_isa(request.param)
    yield request.param
    _compiled._set_isa(before)
