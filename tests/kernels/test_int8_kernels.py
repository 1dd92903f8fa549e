"""The int8 products of frozen models: every kernel path (vpdpbusd, vpmaddubsw on
AVX512BW and AVX2, portable) gives fastrnn/_quantize.py's integers and its float32
gate sums, bit for bit."""

import numpy as np
import pytest

from fastrnn import _quantize

core = pytest.importorskip("fastrnn._core")

ONES = np.ones


def exact_products(q_a, q_w):
    return q_a.astype(np.int64) @ q_w.astype(np.int64).T


def unit_scaled_products(q_a, q_w):
    """The kernels' integer sums: with every scale 1 the sums come back as floats, exact
    while they stay below 2^24."""
    M, N = q_a.shape[0], q_w.shape[0]
    out = core._int8_products(q_a, ONES(M, np.float32), q_w, ONES(N, np.float32))
    return out.astype(np.int64)


# M rows around the tiles' 4 and 8, K around the groups of 4, N around the panels' 16 and 32.
SHAPES = [(1, 1, 1), (1, 28, 512), (2, 3, 17), (3, 5, 33), (4, 8, 16), (5, 13, 31),
          (8, 156, 64), (9, 7, 65), (17, 129, 40), (100, 28, 100)]


@pytest.mark.parametrize("M, K, N", SHAPES)
def test_integer_sums_are_exact_on_every_path(isa, M, K, N):
    rng = np.random.default_rng(M * 1000 + K + N)
    q_a = rng.integers(-127, 128, (M, K)).astype(np.int8)
    q_w = rng.integers(-127, 128, (N, K)).astype(np.int8)
    assert np.array_equal(unit_scaled_products(q_a, q_w), exact_products(q_a, q_w))


@pytest.mark.parametrize("a, w", [(127, 127), (-127, 127), (127, -127), (-127, -127)])
def test_saturating_codes_sum_exactly_where_vpmaddubsw_pairs_would_saturate(isa, a, w):
    # 255 * 127 * 2 overflows int16: the offset codes of vpdpbusd must not reach
    # vpmaddubsw, and no pair of its products may exceed 32767.
    M, K, N = 3, 64, 33
    q_a, q_w = np.full((M, K), a, np.int8), np.full((N, K), w, np.int8)
    assert np.array_equal(unit_scaled_products(q_a, q_w), exact_products(q_a, q_w))
    assert abs(int(exact_products(q_a, q_w)[0, 0])) == K * 127 * 127


def quantized_problem(rng, M, I, H, N):
    x = (rng.standard_normal((M, I)) * rng.uniform(0.1, 30, (M, 1))).astype(np.float32)
    h = np.tanh(rng.standard_normal((M, H))).astype(np.float32)
    q_ih, s_ih = _quantize.quantize_weights(rng.standard_normal((N, I)) * 0.2)
    q_hh, s_hh = _quantize.quantize_weights(rng.standard_normal((N, H)) * 0.2)
    return _quantize.quantize_rows(x), (q_ih, s_ih), _quantize.quantize_rows(h), (q_hh, s_hh)


@pytest.mark.parametrize("M, I, H", [(1, 28, 128), (3, 5, 9), (9, 31, 17), (100, 28, 128)])
def test_gate_sums_match_the_reference_bit_for_bit(isa, M, I, H):
    rng = np.random.default_rng(I + H)
    N = 4 * H
    (q_x, s_x), (q_ih, s_ih), (q_h, s_h), (q_hh, s_hh) = quantized_problem(rng, M, I, H, N)
    both = core._int8_products(q_x, s_x, q_ih, s_ih, q_h, s_h, q_hh, s_hh)
    x_term = _quantize.dequantized_product(q_x, s_x, q_ih, s_ih)
    h_term = _quantize.dequantized_product(q_h, s_h, q_hh, s_hh)
    assert np.array_equal(both, x_term + h_term)
    # the GRU's n gate takes each term apart
    assert np.array_equal(core._int8_products(q_x, s_x, q_ih, s_ih), x_term)
    assert np.array_equal(core._int8_products(None, None, None, None, q_h, s_h, q_hh, s_hh),
                          h_term)


def rows_to_quantize():
    rng = np.random.default_rng(5)
    rows = (rng.standard_normal((12, 37)) * np.logspace(-20, 20, 12)[:, None]).astype(np.float32)
    rows[0] = 0.0                                       # scale 0
    rows[1, :] = 1e-35                                  # below 2^-100: counts as zero
    rows[2, 3] = np.nan                                 # NaN propagates through the scale
    rows[3, 30] = -np.inf
    rows[4] = np.float32(127.0) / 254 * np.arange(-18, 19)   # half-way codes: ties to even
    rows[4, -1] = 127
    rows[5] = np.float32(1.0)                           # every code 127
    return rows


def test_activation_codes_and_scales_match_the_reference_bit_for_bit(isa):
    rows = rows_to_quantize()
    codes, scales = core._int8_quantize_rows(rows)
    want_codes, want_scales = _quantize.quantize_rows(rows)
    assert np.array_equal(codes, want_codes)
    assert np.array_equal(scales, want_scales, equal_nan=True)
    assert np.all(np.abs(codes.astype(int)) <= 127)
    assert scales[0] == 0 and scales[1] == 0 and not codes[:2].any()
    assert np.isnan(scales[2]) and np.isnan(scales[3]) and not codes[2:4].any()
    assert np.all(codes[5] == 127)


@pytest.mark.parametrize("K", [1, 3, 4, 15, 16, 17, 33])
def test_rows_of_any_width_quantize_like_the_reference(isa, K):
    rows = np.random.default_rng(K).standard_normal((3, K)).astype(np.float32)
    codes, scales = core._int8_quantize_rows(rows)
    want_codes, want_scales = _quantize.quantize_rows(rows)
    assert np.array_equal(codes, want_codes) and np.array_equal(scales, want_scales)


def test_ties_round_half_to_even():
    codes, _ = _quantize.quantize_rows(np.array([[0.5, 1.5, 2.5, -0.5, 127.0]],
                                                np.float32) / np.float32(1.0))
    assert codes.tolist() == [[0, 2, 2, 0, 127]]


def test_weights_quantize_symmetrically_per_row_and_dequantize_within_half_a_step():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 10)).astype(np.float32)
    w[2] = 0.0
    q, s = _quantize.quantize_weights(w)
    assert q.dtype == np.int8 and np.abs(q.astype(int)).max() == 127
    assert s[2] == 0 and not q[2].any()
    assert np.all(np.abs(q * s[:, None] - w) <= s[:, None] / 2 * (1 + 1e-6))
    with pytest.raises(ValueError, match="NaN or infinity"):
        _quantize.quantize_weights(np.array([[1.0, np.nan]]))


def test_the_int8_hooks_refuse_bad_arrays_with_a_clear_error():
    q = np.zeros((2, 4), np.int8)
    s = np.ones(2, np.float32)
    with pytest.raises(TypeError, match="q_x has dtype float32, expected int8"):
        core._int8_products(q.astype(np.float32), s, q, s)
    with pytest.raises(ValueError, match=r"q_w_x must have shape \(n, 4\)"):
        core._int8_products(q, s, np.zeros((2, 5), np.int8), s)
    with pytest.raises(ValueError, match="q_x or q_h"):
        core._int8_products(None, None, None, None)
    with pytest.raises(TypeError, match="a has dtype float64"):
        core._int8_quantize_rows(np.zeros((2, 3)))
