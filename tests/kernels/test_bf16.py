"""precision="bf16": the rounding, the reference's products, and every backend against them.

With bf16 every matrix product of a kernel takes both operands rounded to
bfloat16 and sums in float32 (fastrnn/_reference.py's docstring). The rounding
is checked bit by bit against a definition of its own here; the reference's
products against float64 math on the same rounded operands; every fast
backend, on every kernel path (amx_bf16's tiles included), against the reference,
with tolerances derived below; the AVX512_BF16 path and the portable one against
each other.
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
    b = a["b_ih"] + a["b_hh"]   # summed in float32 by the kernels
    pre = r["x"][0] @ r["w_ih"].T + r["h0"] @ r["w_hh"].T + b
    K = 6 + 5
    # float32 sums (gamma_K of the magnitudes), one rounding of the bias sum and of
    # tanh, whose slope is at most 1
    bound = (K + 2) * U32 * (np.abs(r["x"][0]) @ np.abs(r["w_ih"].T)
                             + np.abs(r["h0"]) @ np.abs(r["w_hh"].T) + np.abs(b)) + U32
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


# -------------------------------------------------- every backend, every path
#
# Tolerances. u = 2^-8 is bfloat16's unit roundoff (8 significant bits): a
# rounded operand is v (1 + d), |d| <= u. A bf16 product sum_k r(a_k) r(b_k)
# thus differs from the exact one by at most 2u sum_k |a_k b_k| (to first
# order), plus float32's summation error, at most gamma_K sum_k |r(a_k) r(b_k)|
# with gamma_K = K u32 / (1 - K u32), u32 = 2^-24, for a sum of K terms. That
# bound holds for every order of the sum with each addition rounded to float32
# (or held wider, as a fused pair): vdpbf16ps's and the portable path's order,
# AMX's tdpbf16ps (the amx_bf16 path) summing its own way, and the reference's.
#
# 1. One step (T = 1). Every operand of the forward's products is an input (x,
#    h0, the weights), rounded to the same bits by every backend: the
#    pre-activations differ only by summation, 2 gamma_K S (S the row's sum of
#    |r(a_k) r(b_k)|, K = I + H, both backends within gamma_K of exact). The
#    cells' outputs move at most twice their inputs' change (slopes: tanh 1,
#    sigmoid 1/4; the LSTM's h through its four gates at most 1.75, the GRU's
#    at most 1 + |hn| / 4 + |h0 - n| / 4 <= 2 here), plus float32's own
#    rounding of the elementwise math (a few u32; the compiled exp is within
#    2 ulp): |dy| <= 2 * 2 gamma_K S + 1e-6.
# 2. Many steps. After the first step the backends round values that differ by
#    float32 noise, and where such a value lies within that noise of a
#    rounding boundary they round it to neighbouring bfloat16 values: a jump of
#    one bfloat16 spacing (2u relative) in one term of a sum, which later steps
#    carry on. No bound tighter than each one's own distance from exact
#    arithmetic holds for that: with F the float32 reference (exact on this
#    scale: its error is 2^16 times smaller), |backend - reference| <=
#    |backend - F| + |reference - F|. Both apply the same rounding (u) to
#    operands of the same magnitudes in sums of the same lengths K, so their
#    distances from F are alike; allowing the backend's to be twice the
#    reference's, |backend - reference| <= 3 |reference - F|, per array and
#    measured on the problem itself (max abs; relative to the array's largest
#    value for gradients, as the tolerance table does), plus float32's own
#    tolerance. That |reference - F| is bfloat16's size and no more is checked
#    above (test_bf16_moves_the_reference_...).

from helpers import (FAST_BACKENDS, GRAD_NAMES, TOLERANCES, kernel_backward, kernel_forward,
                     make_kernel_args, relative_error)

FP32 = TOLERANCES[np.dtype(np.float32)]

SHAPES = [  # T, B, I, H
    (1, 1, 1, 1),
    (1, 3, 5, 7),
    (5, 1, 3, 9),        # a single sequence, odd sizes everywhere (pairs padded)
    (4, 13, 6, 130),     # H on both sides of a tile's width, edge rows
    (3, 9, 40, 650),
    (2, 50, 300, 33),
    (28, 100, 28, 128),  # the origin shape
]
shapes = pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "T{}-B{}-I{}-H{}".format(*s))
cells = pytest.mark.parametrize("cell", CELLS)


def results(kernels, cell, a, precision, **options):
    """[outputs..., gradients...] of a training forward and its backward."""
    outputs, saved = kernel_forward(kernels, cell, a, True, precision=precision, **options)
    grads = kernel_backward(kernels, cell, saved, a, outputs, precision=precision, **options)
    return outputs, grads


def error(got, want, kind):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if kind == "output":
        return float(np.abs(got - want).max())
    return relative_error(got, want)


def check_against_the_reference(got, cell, a, **options):
    """Each array of `got` within 3 |reference - F| + float32's tolerance (above)."""
    want = results(reference, cell, a, "bf16", **options)
    fp32 = results(reference, cell, a, "fp32", **options)
    names = ["y", "cT"][:len(want[0])] + GRAD_NAMES[cell]
    for name, g, w, f, kind in zip(
            names, [*got[0], *got[1]], [*want[0], *want[1]], [*fp32[0], *fp32[1]],
            ["output"] * len(want[0]) + ["grad"] * len(want[1])):
        assert g.dtype == np.float32, name
        assert np.isfinite(g).all() == np.isfinite(w).all(), name
        tol = 3 * error(w, f, kind) + FP32[kind]
        assert error(g, w, kind) <= tol, f"{name}: {error(g, w, kind):.3g} > {tol:.3g}"


@shapes
@cells
def test_each_backend_matches_the_bf16_reference(bf16_kernels, cell, shape):
    a = make_kernel_args(cell, *shape, np.float32, seed=sum(shape))
    check_against_the_reference(results(bf16_kernels, cell, a, "bf16"), cell, a)


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (1, 7, 9, 33), (1, 100, 28, 128),
                                   (1, 9, 300, 650)], ids=lambda s: "B{1}-I{2}-H{3}".format(*s))
@cells
def test_one_bf16_step_matches_the_reference_to_float32_sums(bf16_kernels, cell, shape):
    a = make_kernel_args(cell, *shape, np.float32, seed=sum(shape))
    got, _ = kernel_forward(bf16_kernels, cell, a, True, precision="bf16")
    want, _ = kernel_forward(reference, cell, a, True, precision="bf16")
    r = {k: np.abs(round_to_bf16(a[k])).astype(np.float64) for k in ("x", "h0", "w_ih", "w_hh")}
    S = r["x"][0] @ r["w_ih"].T + r["h0"] @ r["w_hh"].T   # (B, G*H)
    K = shape[2] + shape[3]
    gamma = K * U32 / (1 - K * U32)
    bound = 2 * 2 * gamma * S.max() + 1e-6
    for g, w in zip(got, want):
        assert np.abs(g - w).max() <= bound


def packed_args(cell, lengths, I, H, seed):
    """Kernel arguments of a packed batch with these lengths (longest first) and its
    batch_sizes: x (N, I) and dy (N, H) in packed rows."""
    lengths = np.asarray(lengths)
    T, B = int(lengths.max()), len(lengths)
    a = make_kernel_args(cell, T, B, I, H, np.float32, seed=seed)
    batch_sizes = np.array([np.sum(lengths > t) for t in range(T)], dtype=np.int64)
    for name in ("x", "dy"):
        a[name] = np.concatenate([a[name][t, :n] for t, n in enumerate(batch_sizes)])
    return a, batch_sizes


@cells
def test_packed_batches_match_the_bf16_reference(bf16_kernels, cell):
    a, batch_sizes = packed_args(cell, [9, 7, 7, 3, 1], 5, 37, seed=4)
    got = results(bf16_kernels, cell, a, "bf16", batch_sizes=batch_sizes)
    check_against_the_reference(got, cell, a, batch_sizes=batch_sizes)


@pytest.mark.parametrize("scale", [30.0, 1e4, 1e30], ids=lambda s: f"x{s:g}")
@cells
def test_saturating_inputs_match_the_bf16_reference(bf16_kernels, cell, scale):
    a = make_kernel_args(cell, 6, 3, 4, 9, np.float32, seed=2, scale=scale)
    got = results(bf16_kernels, cell, a, "bf16")
    if scale > 1e4 and cell == "rnn_relu":   # relu's outputs are as huge as x: compare finiteness
        assert np.isfinite(got[0][0]).all()
        return
    check_against_the_reference(got, cell, a)


@cells
def test_bf16_kernels_give_the_same_bits_twice_for_a_thread_count(bf16_kernels, threads, cell):
    a = make_kernel_args(cell, 7, 37, 20, 130, np.float32, seed=5)
    first = results(bf16_kernels, cell, a, "bf16")
    second = results(bf16_kernels, cell, a, "bf16")
    for x, y in zip([*first[0], *first[1]], [*second[0], *second[1]]):
        assert np.array_equal(x, y)


def test_precision_names_and_dtypes_are_checked_by_every_backend(bf16_kernels):
    a = make_kernel_args("lstm", 2, 3, 4, 5, np.float32)
    with pytest.raises(ValueError, match="precision must be 'fp32' or 'bf16', got 'fp16'"):
        kernel_forward(bf16_kernels, "lstm", a, True, precision="fp16")
    outputs, saved = kernel_forward(bf16_kernels, "lstm", a, True)
    with pytest.raises(ValueError, match="precision must be 'fp32' or 'bf16', got None"):
        kernel_backward(bf16_kernels, "lstm", saved, a, outputs, precision=None)
    a64 = make_kernel_args("gru", 2, 3, 4, 5, np.float64)
    with pytest.raises(TypeError, match="precision='bf16' takes float32 arrays.*float64"):
        kernel_forward(bf16_kernels, "gru", a64, True, precision="bf16")


# ----------------------------------------------- the compiled backend's paths

try:
    from fastrnn import _core
    BUILD = _core.build_info()
except ImportError:
    _core, BUILD = None, {}

needs_both_bf16_paths = pytest.mark.skipif(
    "avx512_bf16" not in BUILD.get("isa_supported", []),
    reason="this CPU has no AVX512_BF16: only the portable bf16 path runs here")


@pytest.fixture
def on_isa():
    """Switches the compiled backend's kernel path; puts it back after the test."""
    before = BUILD["kernel_path"]
    yield _core._set_isa
    _core._set_isa(before)


@needs_both_bf16_paths
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (5, 1, 3, 9), (4, 13, 6, 130),
                                   (28, 100, 28, 128)],
                         ids=lambda s: "T{}-B{}-I{}-H{}".format(*s))
@cells
def test_vdpbf16ps_and_the_portable_products_give_the_same_bits(on_isa, cell, shape):
    # The same ISA copy but for the products: the avx512 copy's portable products sum
    # in vdpbf16ps's order, so the two paths agree bit for bit (the hardware's
    # flush of subnormal partial sums aside, which these values never reach).
    a = make_kernel_args(cell, *shape, np.float32, seed=7)
    runs = []
    for isa in ("avx512_bf16", "avx512"):
        on_isa(isa)
        assert _core.build_info()["bf16_path"] == ("avx512_bf16" if isa == "avx512_bf16"
                                                   else "portable")
        runs.append(results(_core, cell, a, "bf16"))
    for x, y in zip([*runs[0][0], *runs[0][1]], [*runs[1][0], *runs[1][1]]):
        assert np.array_equal(x, y)


@pytest.mark.skipif("amx_bf16" not in BUILD.get("isa_supported", []),
                    reason="this CPU (or OS) gives no AMX tiles")
@pytest.mark.usefixtures("keep_thread_settings")
def test_amx_tiles_keep_their_shapes_when_torch_configures_its_own_in_the_same_thread(on_isa):
    # The amx_bf16 path loads its tile configuration only when the thread's differs;
    # oneDNN (torch's bfloat16 matmul on this CPU) configures the same registers its
    # own way (and releases them after). On one thread every tile runs in this thread,
    # between torch's; an LSTM's panels all read [x_t | h_{t-1}] and with B = 8 (one row
    # panel) all its forward's tiles take one configuration, so the second forward would
    # run on torch's if the thread's were not read back.
    torch = pytest.importorskip("torch")
    on_isa("amx_bf16")
    _core.set_num_threads(1)
    torch.set_num_threads(1)
    a = make_kernel_args("lstm", 3, 8, 40, 33, np.float32, seed=3)
    alone, _ = kernel_forward(_core, "lstm", a, False, precision="bf16")
    m = torch.ones(96, 96, dtype=torch.bfloat16)
    (m @ m).sum()
    between, _ = kernel_forward(_core, "lstm", a, False, precision="bf16")
    for x, y in zip(alone, between):
        assert np.array_equal(x, y)
    check_against_the_reference(results(_core, "lstm", a, "bf16"), "lstm", a)


@pytest.mark.skipif(_core is None, reason="the compiled backend is not built here")
def test_build_info_names_the_bf16_path_of_the_kernel_path(on_isa):
    for isa in BUILD["isa_supported"]:
        on_isa(isa)
        want = isa if isa in ("avx512_bf16", "amx_bf16") else "portable"
        assert _core.build_info()["bf16_path"] == want


# ------------------------------------------------------------------ torch

from helpers import needs_torch  # noqa: E402


@needs_torch
@pytest.mark.parametrize("shape", [(6, 5, 7, 33), (28, 100, 28, 128)],
                         ids=lambda s: "T{}-B{}-I{}-H{}".format(*s))
def test_the_bf16_lstm_matches_torchs_bf16_lstm_at_bfloat16_precision(bf16_kernels, shape):
    # torch's bfloat16 LSTM (oneDNN's) rounds its weights, inputs, states and outputs to
    # bfloat16. Here its inputs, states and weights are bfloat16 already and b_hh is zero,
    # so the biases agree too; fastrnn's outputs are compared rounded. torch also keeps
    # c_t in bfloat16 between steps, which fastrnn does not (its state is float32): c_t
    # (|c| < 2) then differs by up to one spacing, 2^-7, and h = o tanh(c) follows with
    # slope <= 1, plus each side's rounding of its output, half a spacing of values
    # below 1 each: |dy|, |dcT| <= 2^-7 + 2^-8, within 2^-6.
    import torch
    T, B, I, H = shape
    torch.manual_seed(0)
    module = torch.nn.LSTM(I, H).to(torch.bfloat16)
    with torch.no_grad():
        module.bias_hh_l0.zero_()
    rng = np.random.default_rng(0)
    x = round_to_bf16(rng.standard_normal((T, B, I)).astype(np.float32))
    h0 = round_to_bf16(rng.uniform(-0.5, 0.5, (B, H)).astype(np.float32))
    c0 = round_to_bf16(rng.uniform(-1, 1, (B, H)).astype(np.float32))
    with torch.no_grad():
        y_t, (hT_t, cT_t) = module(torch.tensor(x).bfloat16(),
                                   (torch.tensor(h0)[None].bfloat16(),
                                    torch.tensor(c0)[None].bfloat16()))
    w = {k: v.detach().float().numpy() for k, v in module.named_parameters()}
    y, cT, _ = bf16_kernels.lstm_forward(x, h0, c0, w["weight_ih_l0"], w["weight_hh_l0"],
                                         w["bias_ih_l0"], w["bias_hh_l0"], False,
                                         precision="bf16")
    for got, want in ((y, y_t), (y[-1], hT_t[0]), (cT, cT_t[0])):
        difference = np.abs(round_to_bf16(got) - want.float().numpy())
        assert difference.max() <= 2.0 ** -6
    # the first step's operands are the same bfloat16 on both sides: it agrees to the bit
    # but for ties of float32 sums (one element in thousands)
    first = round_to_bf16(y[0]) != y_t[0].float().numpy()
    assert first.mean() < 1e-3
