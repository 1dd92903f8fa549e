"""Frozen int8 models: every step is fastrnn/_quantize.py's arithmetic, and within a bound
derived from the quantization steps of the float32 model's step from the same state."""

import numpy as np
import pytest

import fastrnn
from fastrnn import _quantize, _reference
from helpers import CELL_VARIANTS, flat_state, make_stack

KERNELS = {"rnn": "rnn", "relu": "rnn_relu", "lstm": "lstm", "gru": "gru"}
# The float32 elementwise math of a cell step: the kernels' exp and tanh against NumPy's.
CELL_TOLERANCE = 1e-5


def int8_problem(variant, T=9, B=3, I=7, H=20, seed=0):
    layer = make_stack(variant, I, H, 1, backend=None, dtype=np.float32, seed=seed)
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((B, T, I)) * rng.uniform(0.2, 5, (B, 1, 1))).astype(np.float32)
    return layer, x


def quantized_weights(layer):
    return _quantize.QuantizedWeights(*(layer.parameters()[key] for key in
                                        ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0",
                                         "bias_hh_l0")))


def stepped(stream, x):
    """(state before, frame, output) of every step of x (B, T, I) through `stream`."""
    for t in range(x.shape[1]):
        before = stream.state
        frame = np.ascontiguousarray(x[:, t])
        yield [s[0] for s in flat_state(before)], frame, stream.step(frame)


@pytest.mark.parametrize("variant", CELL_VARIANTS)
def test_every_int8_step_is_the_reference_int8_arithmetic(variant):
    layer, x = int8_problem(variant)
    weights = quantized_weights(layer)
    step = _quantize.STEPS[KERNELS[variant]]
    for before, frame, h_t in stepped(layer.freeze("int8").stream(3), x):
        want = step(weights, frame, *before)[0]
        assert np.abs(h_t - want).max() <= CELL_TOLERANCE


@pytest.mark.parametrize("variant", ["lstm", "gru"])
def test_every_int8_step_is_the_reference_arithmetic_on_every_kernel_path(isa, variant):
    layer, x = int8_problem(variant, B=5, I=30, H=37)
    frozen = layer.freeze("int8")   # packed for this path
    assert frozen._prepared[0, 0].packed.kernel_path == isa
    weights = quantized_weights(layer)
    step = _quantize.STEPS[KERNELS[variant]]
    for before, frame, h_t in stepped(frozen.stream(5), x):
        assert np.abs(h_t - step(weights, frame, *before)[0]).max() <= CELL_TOLERANCE
    y, _ = frozen.forward(x)
    assert np.array_equal(h_t, y[:, -1])


def product_error_bound(a, q_w, s_w):
    """max over rounding of |a W^T - dq(q_a) dq(q_w)^T| per element (B, N): each code is
    within half a step of its value."""
    _, s_a = _quantize.quantize_rows(a)
    w_hat = q_w * s_w[:, None]
    return (np.abs(a).sum(1)[:, None] * s_w[None, :] / 2
            + s_a[:, None] / 2 * np.abs(w_hat).sum(1)[None, :])


def step_error_bound(cell, weights, x_t, states):
    """A bound on |h_int8 - h_float| after one step from the same `states`, through each
    gate's Lipschitz constant (sigmoid 1/4, tanh 1), with second-order terms."""
    H = states[0].shape[1]
    h = states[0]
    dx = product_error_bound(x_t, weights.q_ih, weights.s_ih)
    dh = product_error_bound(h, weights.q_hh, weights.s_hh)
    da = dx + dh
    if cell in ("rnn", "rnn_relu"):
        return da
    if cell == "lstm":
        c = states[1]
        di, df, dg, do = (da[:, :H] / 4, da[:, H:2 * H] / 4, da[:, 2 * H:3 * H],
                          da[:, 3 * H:] / 4)
        dc = df * np.abs(c) + di + dg + di * dg
        return do + dc + do * dc
    # GRU: n = tanh(gx_n + r * hn), h = (1 - z) n + z h
    hn = h @ weights.dequantized()[1][2 * H:].T + weights.b_hh[2 * H:]
    dr, dz = da[:, :H] / 4, da[:, H:2 * H] / 4
    dn = dx[:, 2 * H:] + dr * (np.abs(hn) + dh[:, 2 * H:]) + dh[:, 2 * H:]
    return dz * (2 + dn) + dn


@pytest.mark.parametrize("variant", CELL_VARIANTS)
def test_int8_stays_within_the_derived_bound_of_the_float_step_from_the_same_state(variant):
    layer, x = int8_problem(variant)
    cell = KERNELS[variant]
    weights = quantized_weights(layer)
    w_ih, w_hh, b_ih, b_hh = (layer.parameters()[key] for key in
                              ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"))
    float_kernel = getattr(_reference, f"{cell}_forward")
    worst = 0.0
    for before, frame, h_t in stepped(layer.freeze("int8").stream(3), x):
        want = float_kernel(frame[None], *before, w_ih, w_hh, b_ih, b_hh, False)[0][0]
        bound = step_error_bound(cell, weights, frame, before)
        assert np.all(np.abs(h_t - want) <= bound + CELL_TOLERANCE)
        worst = max(worst, float(np.abs(h_t - want).max()))
    # not a vacuous bound: int8 differs from float32, by little
    assert 1e-5 < worst < 0.05


def test_the_int8_error_of_a_trained_size_lstm_is_small_over_a_whole_sequence():
    model = fastrnn.SequenceClassifier(28, 128, 10, seed=0)
    x = np.random.default_rng(0).random((50, 28, 28), dtype=np.float32)
    error = np.abs(model.freeze("int8").logits(x) - model.logits(x)).max()
    assert error < 0.02
