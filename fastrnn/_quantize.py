"""int8 inference arithmetic, spelled out: the reference every int8 kernel matches.

Sizes as in _reference.py: T, B, I, H, G; N output rows of a product (G*H), K its depth.

Weights (once, when a model is frozen). W_ih and W_hh are quantized apart, each
symmetrically with one scale per output row j:

    s_w[j] = max_k |W[j, k]| / 127,    q_w[j, k] = rint(W[j, k] / s_w[j])   in [-127, 127]

(a row of zeros gets s_w = 0 and codes 0). -128 is never used, so a code's
magnitude always fits 7 bits (see "AVX2" below).

Activations (at every step, inside the kernels). Each product's input rows are
quantized apart: x_t and h_{t-1}, each with a dynamic scale per row b:

    m[b] = max_k |a[b, k]|
    s_a[b] = m[b] / 127,  q_a[b, k] = clip(rint(a[b, k] * (127 / m[b])), -127, 127)

all in float32, rint rounding half to even. Two rows get no codes: a row holding
NaN or an infinity gets s_a = NaN and codes 0 (its gate sums, and so that step's
outputs, are NaN: NaN propagates as it does in float32), and a row whose largest
magnitude is below 2^-100 gets s_a = 0 and codes 0 (127 / m would overflow).

Why h gets a dynamic scale, though h_t of a tanh or sigmoid cell lies in [-1, 1]
and could take the fixed scale 1/127: every row's scale is at most 1/127 then, so
no coarser; it keeps NaN propagating through the state (a fixed scale would turn
a NaN h into a code); it serves an initial state outside [-1, 1] and the ReLU RNN,
whose h is unbounded; and it costs nothing extra, because the kernels quantize
each step's whole [x_t | h_{t-1}] anyway, one pass over B*(I + H) values next to
a product of B*(I + H)*G*H. Why x and h keep apart scales instead of one for the
row of [x_t | h_{t-1}]: x can be larger than h by orders of magnitude (audio
features), and one scale would leave h a few codes.

Products. Integer sums, exact (int32 cannot overflow: K <= MAX_DEPTH), then each
dequantized once, in float32, in this order:

    acc_x[b, j] = sum_k q_x[b, k] q_ih[j, k],   acc_h[b, j] = sum_k q_h[b, k] q_hh[j, k]
    sums[b, j]  = f32(acc_x) * (s_x[b] * s_ih[j]) + f32(acc_h) * (s_h[b] * s_hh[j])

A gate that takes x and h apart (the GRU's n gate) gets the two terms apart. The
biases and the cell's elementwise math follow in float32, as in the float32 cell.

Unsigned times signed. AVX512_VNNI's vpdpbusd multiplies unsigned bytes by
signed ones. The VNNI kernels therefore store activation codes offset by 128
(u = q_a + 128 in [1, 255]) and subtract 128 * sum_k q_w[j, k], summed once per
weight row when the weights are packed:
sum_k u[k] q_w[j, k] - 128 sum_k q_w[j, k] = sum_k q_a[k] q_w[j, k], exactly.

AVX2 has no vpdpbusd: vpmaddubsw multiplies unsigned by signed bytes and adds
pairs into int16 with saturation, which 255 * 127 * 2 would exceed. Its kernels
feed it |q_a| (at most 127) and q_w with q_a's sign moved onto it (vpsignb;
exact, since |q_w| <= 127), so a pair sums to at most 2 * 127 * 127 = 32258 and
never saturates; vpmaddwd then adds pairs of those into int32. The portable
kernels multiply in int32. Every path computes the same integers, so every path
gives the same gate sums, bit for bit.
"""

import numpy as np

CODE_MAX = 127
# Deeper products could overflow int32 on the VNNI path: K * 255 * 127 < 2^31.
MAX_DEPTH = (2**31 - 1) // (255 * CODE_MAX)
# Rows whose largest magnitude is below this get codes 0 and scale 0.
TINY = np.float32(2.0**-100)


def quantize_weights(w):
    """(q int8 (N, K), s float32 (N,)): `w` (N, K) symmetric, one scale per row."""
    w = np.asarray(w, dtype=np.float32)
    m = np.abs(w).max(axis=1) if w.shape[1] else np.zeros(w.shape[0], np.float32)
    if not np.all(np.isfinite(m)):
        raise ValueError("cannot quantize weights holding NaN or infinity")
    scales = m / np.float32(CODE_MAX)
    safe = np.where(scales > 0, scales, np.float32(1))
    codes = np.clip(np.rint(w / safe[:, None]), -CODE_MAX, CODE_MAX).astype(np.int8)
    return codes, scales.astype(np.float32)


def quantize_rows(a):
    """(q int8 (B, K), s float32 (B,)): each row of `a` (B, K) with its own scale, as
    the kernels quantize x_t and h_{t-1} at every step (see the module docstring)."""
    a = np.asarray(a, dtype=np.float32)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        m = np.abs(a).max(axis=1)     # NaN where a row holds NaN
        finite = np.isfinite(m)
        coded = finite & (m >= TINY)
        inverse = np.where(coded, np.float32(CODE_MAX) / np.where(coded, m, 1), 0)
        codes = np.rint(a * inverse.astype(np.float32)[:, None])
        codes = np.where(coded[:, None], codes, 0)
    codes = np.clip(codes, -CODE_MAX, CODE_MAX).astype(np.int8)
    scales = np.where(finite, np.where(coded, m / np.float32(CODE_MAX), 0), np.nan)
    return codes, scales.astype(np.float32)


def dequantized_product(q_a, s_a, q_w, s_w):
    """f32(q_a q_w^T) * (s_a[b] s_w[j]): one product's term of the gate sums. Its
    integer sums are exact in float64 (below K * 127^2 < 2^53), which lets BLAS do them."""
    acc = q_a.astype(np.float64) @ q_w.astype(np.float64).T
    return acc.astype(np.float32) * (s_a[:, None] * s_w[None, :])


class QuantizedWeights:
    """One layer direction's weights as int8 codes with per-row scales, and its biases
    in float32: what a frozen int8 model keeps of w_ih, w_hh, b_ih, b_hh."""

    def __init__(self, w_ih, w_hh, b_ih, b_hh):
        self.q_ih, self.s_ih = quantize_weights(w_ih)
        self.q_hh, self.s_hh = quantize_weights(w_hh)
        self.b_ih = np.array(b_ih, dtype=np.float32)   # copies: later changes stay out
        self.b_hh = np.array(b_hh, dtype=np.float32)

    def input_sums(self, x):
        """x (B, I) -> x W_ih^T as the int8 kernels compute it (no bias)."""
        return dequantized_product(*quantize_rows(x), self.q_ih, self.s_ih)

    def recurrent_sums(self, h):
        """h (B, H) -> h W_hh^T as the int8 kernels compute it (no bias)."""
        return dequantized_product(*quantize_rows(h), self.q_hh, self.s_hh)

    def dequantized(self):
        """(w_ih, w_hh) as float32 arrays: the weights the int8 model effectively has."""
        return (self.q_ih * self.s_ih[:, None]).astype(np.float32), \
            (self.q_hh * self.s_hh[:, None]).astype(np.float32)


# -- one time step of each cell on int8 products; the rest in float32 -------------------
# Each takes x_t (B, I) and the states before it, returns the states after it.


def _sigmoid(a):
    e = np.exp(-np.abs(a))
    return np.where(a >= 0, 1 / (1 + e), e / (1 + e)).astype(np.float32)


def lstm_step(weights, x_t, h, c):
    """a = [x W_ih^T + h W_hh^T] + b_ih + b_hh, then the LSTM's gates i, f, g, o."""
    H = h.shape[1]
    a = weights.input_sums(x_t) + weights.recurrent_sums(h) + (weights.b_ih + weights.b_hh)
    i, f = _sigmoid(a[:, :H]), _sigmoid(a[:, H:2 * H])
    g, o = np.tanh(a[:, 2 * H:3 * H]), _sigmoid(a[:, 3 * H:])
    c = f * c + i * g
    return o * np.tanh(c), c


def gru_step(weights, x_t, h):
    """r, z on the two products' sum; n = tanh(gx_n + b_in + r * (gh_n + b_hn)), the
    biases summed in the C++ cell's order."""
    H = h.shape[1]
    gx, gh = weights.input_sums(x_t), weights.recurrent_sums(h)
    b_ih, b_hh = weights.b_ih, weights.b_hh
    rz = _sigmoid((gx[:, :2 * H] + gh[:, :2 * H]) + (b_ih[:2 * H] + b_hh[:2 * H]))
    r, z = rz[:, :H], rz[:, H:]
    hn = gh[:, 2 * H:] + b_hh[2 * H:]
    n = np.tanh(gx[:, 2 * H:] + b_ih[2 * H:] + r * hn)
    return ((1 - z) * n + z * h,)


def rnn_step(weights, x_t, h, activation=np.tanh):
    a = weights.input_sums(x_t) + weights.recurrent_sums(h) + (weights.b_ih + weights.b_hh)
    return (activation(a).astype(np.float32),)


def relu(a):
    return np.maximum(a, 0)


STEPS = {"lstm": lstm_step, "gru": gru_step, "rnn": rnn_step,
         "rnn_relu": lambda weights, x_t, h: rnn_step(weights, x_t, h, relu)}


def forward(cell, weights, x, states, batch_sizes=None):
    """x through one int8 layer direction from `states` (a tuple of (B, H)), laid out as
    the kernels take it: (T, B, I), or packed (N, I) with batch_sizes (step t runs the
    first batch_sizes[t] sequences). Returns (y like x with H features, the states
    after each sequence's own last step)."""
    step = STEPS[cell]
    states = [np.array(s, dtype=np.float32) for s in states]
    B, H = states[0].shape
    rows = np.asarray(x, dtype=np.float32).reshape(-1, x.shape[-1])
    y = np.empty((rows.shape[0], H), dtype=np.float32)
    start = 0
    for n in ([B] * x.shape[0] if batch_sizes is None else batch_sizes.tolist()):
        new = step(weights, rows[start:start + n], *(s[:n] for s in states))
        for state, value in zip(states, new):
            state[:n] = value
        y[start:start + n] = new[0]
        start += n
    return y.reshape(x.shape[:-1] + (H,)), tuple(states)
