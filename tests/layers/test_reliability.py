"""Reliability: awkward arrays, saturation, threads and memory never break a layer."""

import os
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import fastrnn
from fastrnn.optim import clip_grad_norm

from helpers import (BACKENDS, FAST_BACKENDS, assert_close, fastrnn_results, flat_state,
                     make_layer, make_problem, make_stack, stack_problem)

CELLS = list(fastrnn.cells.CELLS)


# -- any array a user may hand over: agree with the reference or raise ------------

@st.composite
def layouts(draw):
    """An input array with random sizes, dtype and memory layout, plus its layer sizes."""
    T, B, I, H = (draw(st.integers(1, 6)) for _ in range(4))
    dtype = draw(st.sampled_from([np.float32, np.float64, np.float16, np.int32, np.int64]))
    x = np.random.default_rng(draw(st.integers(0, 2**16))).uniform(-3, 3, (B, T, I))
    layout = draw(st.sampled_from(["c", "fortran", "strided", "transposed"]))
    if layout == "fortran":
        x = np.asfortranarray(x)
    elif layout == "strided":
        x = np.repeat(x, 2, axis=2)[:, :, ::2]
    elif layout == "transposed":
        x = np.ascontiguousarray(x.transpose(2, 1, 0)).transpose(2, 1, 0)
    return draw(st.sampled_from(CELLS)), H, x.astype(dtype, copy=False)


@pytest.mark.parametrize("backend", FAST_BACKENDS or ["numpy"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=layouts())
def test_any_layout_and_dtype_agrees_with_reference(backend, case):
    cell, H, x = case
    I = x.shape[2]
    layer = make_layer(cell, I, H, backend=backend)
    ref = make_layer(cell, I, H, backend="numpy")
    y, final = layer.forward(x)
    y_ref, final_ref = ref.forward(np.ascontiguousarray(x, dtype=np.float32))
    assert_close(y, y_ref, "output", np.float32, "y")
    # Where |h| is within 1e-3 of 1, 1 - h^2 of a float32 h keeps too few digits for
    # two correct tanh implementations to agree to 1e-4 in the gradient (one ulp of
    # h moves it by 1e-4 relative): that regime is test_saturating_inputs_... below.
    assume(float(np.abs(y_ref).max()) < 0.999)
    dy = np.ones(y.shape, np.float32)
    dx, _ = layer.backward(dy)
    dx_ref, _ = ref.backward(dy)
    # Each gradient against the largest (x's or a parameter's), and no smaller than
    # 0.01: the loss sums y (|y| < 1), whose float32 rounding leaves every gradient
    # absolute errors of about 1e-7 times |x| (up to 3) however small it is. With
    # every gate saturated they can all be tiny (an LSTM with H=1 and |x| near 2.5:
    # all below 3e-7, the two backends 2e-10 apart), where a relative check fails
    # two correct float32 implementations.
    scale = max(max(float(np.abs(g).max()) for g in (dx_ref, *ref.grads.values())), 1e-2)
    assert_close(dx, dx_ref, "grad", np.float32, "dx", scale)
    for key in ref.grads:
        assert_close(layer.grads[key], ref.grads[key], "grad", np.float32, key, scale)


# -- saturation -----------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("magnitude", [1e4, 1e15, 1e30])
def test_saturating_inputs_give_finite_outputs_and_gradients(cell, backend, dtype, magnitude):
    T, B, I, H = 7, 3, 5, 9
    layer = make_layer(cell, I, H, backend=backend, dtype=dtype)
    x, state, dy, dstate = make_problem(cell, T, B, I, H, dtype=dtype)
    x = (np.sign(x) * magnitude).astype(dtype)
    y, final = layer.forward(x, state)
    dx, dstate0 = layer.backward(dy, dstate)
    arrays = [y, dx, *flat_state(final), *flat_state(dstate0), *layer.grads.values()]
    assert all(np.all(np.isfinite(a)) for a in arrays)
    assert np.abs(y).max() <= 1.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_input_propagates_without_crashing(cell, backend):
    layer = make_layer(cell, 3, 4, backend=backend)
    x = np.zeros((2, 5, 3), np.float32)
    x[1, 2, 0] = np.nan
    y, _ = layer.forward(x)
    assert np.all(np.isfinite(y[0])) and np.isnan(y[1, 2:]).all()
    layer.backward(np.ones_like(y))  # documented: NaN flows through, nothing raises


def _gradient_steps_on_exploding_rnn(backend, clip, steps=20, lr=0.1):
    """Plain gradient steps on a tanh RNN whose recurrence amplifies gradients:
    W_hh = 3 x orthogonal over 60 steps, with inputs small enough that tanh
    stays near its linear part. Returns the first gradient norm, the losses and
    how far the parameters moved (L2, over all of them)."""
    rng = np.random.default_rng(0)
    model = fastrnn.SequenceClassifier(4, 16, 3, cell="rnn", backend=backend, seed=0)
    params = model.parameters()
    q, _ = np.linalg.qr(rng.standard_normal((16, 16)))
    params["weight_hh_l0"][...] = 3.0 * q
    x = 0.1 * rng.standard_normal((32, 60, 4))
    labels = rng.integers(0, 3, 32)
    start = {key: value.astype(np.float64) for key, value in params.items()}
    first_norm, losses = None, []
    for _ in range(steps):
        loss, grads = model.loss_and_grads(x, labels)
        norm = global_norm(grads)
        first_norm = norm if first_norm is None else first_norm
        if clip is not None:
            clip_grad_norm(grads, clip)
        for key, param in params.items():
            param -= np.float32(lr) * grads[key]
        losses.append(loss)
    moved = global_norm({key: params[key] - start[key] for key in params})
    assert all(np.all(np.isfinite(p)) for p in params.values())
    return first_norm, losses, moved


def global_norm(arrays):
    return float(np.sqrt(sum(float((np.asarray(a, np.float64) ** 2).sum())
                             for a in arrays.values())))


@pytest.mark.parametrize("backend", BACKENDS)
def test_clipping_bounds_training_where_gradients_explode(backend):
    steps, lr, max_norm = 20, 0.1, 1.0
    first_norm, _, moved = _gradient_steps_on_exploding_rnn(backend, None, steps, lr)
    # Unclipped, the exploding gradient throws the parameters far away.
    assert first_norm > 1e4 and moved > 1e3
    _, losses, moved = _gradient_steps_on_exploding_rnn(backend, max_norm, steps, lr)
    # Clipped, no step can move them by more than lr * max_norm.
    assert moved <= steps * lr * max_norm * (1 + 1e-5)
    assert np.all(np.isfinite(losses)) and max(losses) < 2 * np.log(3)


# -- threads ----------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_concurrent_layers_match_sequential_runs(backend):
    """Python threads running separate layers at once get exactly the sequential results."""
    T, B, I, H, workers = 12, 16, 10, 33, 4

    def run(k):
        cell = CELLS[k % len(CELLS)]
        layer = make_layer(cell, I, H, backend=backend, seed=k)
        x, state, dy, dstate = make_problem(cell, T, B, I, H, seed=k)
        results = []
        for _ in range(5):
            y, final = layer.forward(x, state)
            dx, dstate0 = layer.backward(dy, dstate)
            results.append([np.array(y), dx, *flat_state(dstate0), *layer.grads.values()])
        return results

    sequential = [run(k) for k in range(workers)]
    concurrent = [None] * workers
    errors = []

    def worker(k):
        try:
            concurrent[k] = run(k)
        except Exception as exc:  # reported below, so a failure is not lost in a thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for seq, conc in zip(sequential, concurrent):
        for rep_seq, rep_conc in zip(seq, conc):
            for a, b in zip(rep_seq, rep_conc):
                np.testing.assert_array_equal(a, b)


# (num_layers, bidirectional, lengths, dropout): one layer over full sequences (the
# driver's one-layer case), and a stack with every piece of bookkeeping
DETERMINISM_STACKS = {"one-layer": (1, False, None, 0.0),
                      "2-layer-bidir-lengths-dropout": (2, True, [9, 1, 4, 9, 2, 7], 0.3)}


@pytest.mark.parametrize("stack", DETERMINISM_STACKS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_the_same_call_gives_the_same_bits_for_a_thread_count(cell, backend, threads, stack):
    num_layers, bidirectional, lengths, dropout = DETERMINISM_STACKS[stack]
    T, B, I, H = 9, 6 if lengths else 17, 11, 70 if num_layers == 1 else 19
    x, state, dy, dstate = stack_problem(cell, T, B, I, H, num_layers, bidirectional,
                                         dtype=np.float32, seed=5)
    runs = []
    for _ in range(3):
        layer = make_stack(cell, I, H, num_layers, bidirectional, backend=backend,
                           dtype=np.float32, dropout=dropout, seed=1)
        got = fastrnn_results(layer, x, state, dy, dstate, lengths=lengths)
        runs.append([got["y"], got["dx"], *got["state_T"], *got["dstate0"],
                     *got["grads"].values()])
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            np.testing.assert_array_equal(a, b)


# -- memory -----------------------------------------------------------------------

def _resident_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/statm"), reason="Linux only")
@pytest.mark.parametrize("backend", BACKENDS)
def test_ten_thousand_calls_do_not_grow_memory(backend):
    layer = make_layer("lstm", 4, 8, backend=backend)
    x, state, dy, dstate = make_problem("lstm", 3, 2, 4, 8)

    def calls(n):
        for _ in range(n):
            layer.forward(x, state)
            layer.backward(dy, dstate)

    calls(500)  # warm caches, JIT and allocator pools
    before = _resident_bytes()
    calls(10_000)
    grown = _resident_bytes() - before
    assert grown < 8 * 2**20, f"resident memory grew by {grown / 2**20:.1f} MiB"


@pytest.mark.skipif("cpp" not in BACKENDS, reason="compiled backend not built")
def test_cached_buffers_are_reused_and_released():
    layer = make_layer("lstm", 64, 256, backend="cpp")
    x = np.random.default_rng(0).standard_normal((16, 64, 64)).astype(np.float32)
    for _ in range(3):  # the workspace (16 x 64 x 1280 floats, 5 MiB) comes back each call
        y, _ = layer.forward(x)
        layer.backward(np.ones_like(y))
    del y, layer  # workspace and outputs go back to the cache
    assert fastrnn.release_cached_memory() >= 5 * 2**20
    assert fastrnn.release_cached_memory() == 0
    y, _ = make_layer("lstm", 64, 256, backend="cpp").forward(x)  # and calls still work
    assert np.all(np.isfinite(y))


# More elements than a 32-bit index reaches (2^31 + 2^21 in x and in y): about
# 18 GB, so it runs only when asked for (FASTRNN_TEST_BIGMEM=1; see README).
@pytest.mark.bigmem
@pytest.mark.skipif(os.environ.get("FASTRNN_TEST_BIGMEM") != "1",
                    reason="needs about 18 GB; set FASTRNN_TEST_BIGMEM=1 to run it")
@pytest.mark.skipif("cpp" not in BACKENDS, reason="compiled backend not built")
def test_arrays_past_two_to_the_31_elements_are_indexed_in_full():
    import fastrnn._core as core

    T, B = 1025, 2**21
    x = np.empty((T, B, 1), np.float32)
    # A ramp over time: an offset that wrapped at 2^31 elements would land
    # 1024 steps back, where x (and so y) differ.
    x[:, :, 0] = (np.arange(T, dtype=np.float32) / T - np.float32(0.5))[:, None]
    one, zero = np.ones((1, 1), np.float32), np.zeros((1, 1), np.float32)
    # W_hh = 0: every step is y_t = tanh(x_t), whatever came before.
    y, _ = core.rnn_forward(x, np.zeros((B, 1), np.float32), one, zero,
                            np.zeros(1, np.float32), np.zeros(1, np.float32), False)
    del x
    for t in (0, T // 2, T - 1):
        expected = np.tanh((np.float32(t) / np.float32(T) - np.float32(0.5)).astype(np.float64))
        assert np.abs(y[t, :, 0] - expected).max() < 1e-6, f"step {t}"


# -- the input as the forward saw it ----------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("cell", CELLS)
def test_backward_uses_x_as_the_forward_saw_it(backend, batch_first, cell):
    # A caller may reuse its input buffer before backward; the gradients must
    # not change (the compiled backend keeps its own copy of x, the layer one
    # for the others).
    rng = np.random.default_rng(7)
    shape = (4, 6, 3) if batch_first else (6, 4, 3)
    x = rng.standard_normal(shape).astype(np.float32)
    grads = []
    for overwrite in (False, True):
        layer = make_layer(cell, 3, 5, backend=backend, batch_first=batch_first)
        buffer = x.copy()
        y, _ = layer.forward(buffer)
        if overwrite:
            buffer[...] = 1e3
        dx, _ = layer.backward(np.ones(y.shape, np.float32))
        grads.append([dx] + [layer.grads[k] for k in sorted(layer.grads)])
    for got, want in zip(*grads):
        np.testing.assert_array_equal(got, want)
