"""precision="bf16": the rounding, the reference's products, and every backend against them.

With bf16 every matrix product of a kernel takes both operands rounded to
bfloat16 and sums in float32 (fastrnn/_reference.py's docstring). The rounding
is checked bit by bit against a definition of its own here; the reference's
products against float64 math on the same rounded operands; every fast
backend, on every kernel path, against the reference, with tolerances derived
below; the AVX512_BF16 path and the portable one against each other.
"""

import numpy as np
import pytest

from fastrnn import _reference as reference
from fastrnn._reference import round_to_bf16

U32 = 2.0 ** -24   # float32's unit roundoff


def bits(a):
    return np.asarray(a, dtype=np.float32).view(np.uint32)


def floats(b):
    return np.asarray(b, dtype=np.uint32).view(np.float32)


def nearest_bf16_by_distance(b):
    """bfloat16 rounding of the float32 bit patterns b (finite, normal), defined by
    distance: of the two bfloat16 values around v, the nearer one, on a tie the one
    whose last kept bit is 0; past the largest finite bfloat16, infinity."""
    b = np.asarray(b, dtype=np.uint32)
    low = b & np.uint32(0xFFFF0000)                        # toward zero
    high = (low + np.uint32(0x10000)).astype(np.uint32)    # away from zero
    v, lo, hi = (floats(x).astype(np.float64) for x in (b, low, high))
    hi = np.where(np.isinf(hi), np.copysign(2.0 ** 128, hi), hi)   # IEEE's overflow threshold
    d_lo, d_hi = np.abs(v - lo), np.abs(hi - v)            # exact in float64
    take_high = (d_hi < d_lo) | ((d_hi == d_lo) & (((low >> 16) & 1) == 1))
    return np.where(take_high, high, low)


# ------------------------------------------------------------ the rounding


def test_rounding_matches_the_distance_definition_on_every_bfloat16_boundary():
    # Every upper half (all signs and exponents), with the lower halves that sit on,
    # just below and just above a rounding boundary, and random ones.
    upper = np.arange(1 << 16, dtype=np.uint32) << 16
    rng = np.random.default_rng(0)
    lower = np.concatenate([np.array([0, 1, 0x7FFF, 0x8000, 0x8001, 0xFFFF], np.uint32),
                            rng.integers(0, 1 << 16, 10, dtype=np.uint32)])
    b = (upper[:, None] | lower[None, :]).reshape(-1)
    exponent = b & 0x7F800000
    normal = (exponent != 0) & (exponent != 0x7F800000)
    got = bits(round_to_bf16(floats(b[normal])))
    want = nearest_bf16_by_distance(b[normal])
    assert np.array_equal(got, want)
    assert np.all(got & 0xFFFF == 0)


def test_rounding_ties_go_to_the_even_neighbour():
    one_plus = np.float32(1.0) + np.float32(2.0 ** -8) * np.array([1, 3, 5], np.float32)
    # halfway between 1 and 1 + 2^-7 -> 1; between 1 + 2^-7 and 1 + 2^-6 -> 1 + 2^-6; ...
    assert round_to_bf16(one_plus).tolist() == [1.0, 1.0 + 2.0 ** -6, 1.0 + 2.0 ** -6]
    assert round_to_bf16(-one_plus).tolist() == [-1.0, -1.0 - 2.0 ** -6, -1.0 - 2.0 ** -6]


def test_rounding_keeps_nan_and_infinity_and_overflows_to_infinity():
    specials = floats([0x7FC00000, 0xFFC00000, 0x7F800001, 0xFF80FFFF, 0x7F800000, 0xFF800000])
    got = round_to_bf16(specials)
    assert np.all(np.isnan(got[:4])) and np.signbit(got[:4]).tolist() == [False, True, False, True]
    assert got[4:].tolist() == [np.inf, -np.inf]
    largest = floats(0x7F7F0000)   # the largest finite bfloat16
    assert round_to_bf16(largest) == largest
    assert round_to_bf16(floats(0x7F7F7FFF)) == largest          # below the tie: stays finite
    assert round_to_bf16(floats([0x7F7F8000, 0x7F7FFFFF, 0xFF7FFFFF])).tolist() == \
        [np.inf, np.inf, -np.inf]                                 # the tie and beyond: Inf


def test_rounding_turns_subnormals_into_zeros_of_their_sign():
    tiny = floats([0x00000001, 0x007FFFFF, 0x80000001, 0x807FFFFF, 0x00000000, 0x80000000])
    got = round_to_bf16(tiny)
    assert got.tolist() == [0.0] * 6
    assert np.signbit(got).tolist() == [False, False, True, True, False, True]
    assert round_to_bf16(floats(0x00800000)) == floats(0x00800000)  # the smallest normal stays


def test_rounding_keeps_shape_and_takes_scalars():
    assert round_to_bf16(np.float32(1.5)) == 1.5
    assert round_to_bf16(np.zeros((2, 0, 3), np.float32)).shape == (2, 0, 3)
    assert round_to_bf16(np.ones((3, 4), np.float32)).shape == (3, 4)


# ------------------------------------------------ the reference's products

CELLS = ["rnn", "rnn_relu", "lstm", "gru"]


def bf16_kernel_args(cell, T, B, I, H, *, seed=0, scale=1.0):
    from helpers import make_kernel_args
    return make_kernel_args(cell, T, B, I, H, np.float32, seed=seed, scale=scale)


def run_reference(cell, a, precision, *, need_dx=True):
    from helpers import kernel_backward, kernel_forward
    outputs, saved = kernel_forward(reference, cell, a, True, precision=precision)
    grads = kernel_backward(reference, cell, saved, a, outputs, need_dx=need_dx,
                            precision=precision)
    return outputs, grads


@pytest.mark.parametrize("cell", CELLS)
def test_every_reference_product_takes_bfloat16_operands_and_sums_like_float64(
        monkeypatch, cell):
    # Each product of a bf16 forward and backward, recorded, against float64 math on
    # the same rounded operands: they differ only by float32 summation, at most
    # gamma_K * sum_k |a_ik b_kj| (gamma_K = K u / (1 - K u), u = 2^-24).
    products = []
    original = reference._matmul

    def recording(a, b, bf16):
        c = original(a, b, bf16)
        products.append((a.copy(), b.copy(), bf16, c))   # h and dh change in place later
        return c

    monkeypatch.setattr(reference, "_matmul", recording)
    run_reference(cell, bf16_kernel_args(cell, 5, 3, 7, 9, seed=1), "bf16")
    # forward: the projection and T recurrent products; backward: T recurrent ones,
    # dW_ih, dW_hh and dx
    assert len(products) == 1 + 5 + 5 + 3
    for a, b, bf16, c in products:
        assert bf16
        ra, rb = round_to_bf16(a).astype(np.float64), round_to_bf16(b).astype(np.float64)
        K = a.shape[1]
        gamma = K * U32 / (1 - K * U32)
        bound = gamma * (np.abs(ra) @ np.abs(rb))
        assert c.dtype == np.float32
        assert np.all(np.abs(c - ra @ rb) <= bound)


def test_one_bf16_rnn_step_is_float64_math_on_rounded_operands():
    a = bf16_kernel_args("rnn", 1, 4, 6, 5, seed=2)
    (y,), _ = run_reference("rnn", a, "bf16")
    r = {k: round_to_bf16(a[k]).astype(np.float64) for k in ("x", "h0", "w_ih", "w_hh")}
    pre = r["x"][0] @ r["w_ih"].T + r["h0"] @ r["w_hh"].T + a["b"]
    K = 6 + 5
    # float32 sums (gamma_K of the magnitudes), one rounding of the bias sum and of
    # tanh, whose slope is at most 1
    bound = (K + 2) * U32 * (np.abs(r["x"][0]) @ np.abs(r["w_ih"].T)
                             + np.abs(r["h0"]) @ np.abs(r["w_hh"].T) + np.abs(a["b"])) + U32
    assert np.all(np.abs(y[0] - np.tanh(pre)) <= bound)


@pytest.mark.parametrize("cell", CELLS)
def test_bf16_moves_the_reference_by_about_bfloat16s_rounding_and_no_more(cell):
    a = bf16_kernel_args(cell, 6, 5, 7, 9, seed=3)
    fp32_outputs, fp32_grads = run_reference(cell, a, "fp32")
    bf16_outputs, bf16_grads = run_reference(cell, a, "bf16")
    for got, want in zip(bf16_outputs + bf16_grads, fp32_outputs + fp32_grads):
        scale = np.abs(want).max()
        difference = np.abs(got - want).max() / scale
        # something was rounded (u = 2^-8 per operand), but nothing went astray
        assert 1e-5 < difference < 0.05


@pytest.mark.parametrize("kernel", ["rnn_forward", "lstm_backward", "gru_forward"])
def test_reference_refuses_unknown_precisions_and_float64_with_bf16(kernel):
    from helpers import kernel_backward, kernel_forward
    cell = kernel.split("_")[0]

    def call(dtype, precision):
        from helpers import make_kernel_args
        a = make_kernel_args(cell, 2, 3, 4, 5, dtype)
        if kernel.endswith("forward"):
            return kernel_forward(reference, cell, a, True, precision=precision)
        outputs, saved = kernel_forward(reference, cell, a, True)
        return kernel_backward(reference, cell, saved, a, outputs, precision=precision)

    with pytest.raises(ValueError, match="precision must be 'fp32' or 'bf16', got 'fp16'"):
        call(np.float32, "fp16")
    with pytest.raises(TypeError, match="precision='bf16' takes float32 arrays.*float64"):
        call(np.float64, "bf16")
