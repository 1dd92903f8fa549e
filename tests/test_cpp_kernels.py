"""The raw kernels of fastrnn._core against the NumPy reference, on every ISA path this CPU runs.

The layer tests already cover the cpp backend through fastrnn.LSTM/RNN; these
call the kernel contract directly, so awkward shapes, saturation, float64,
dy=None, need_dx=False, threads and argument checks are hit on each path.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import OUTSIDE_REPO, assert_close
from fastrnn import _reference as ref

core = pytest.importorskip("fastrnn._core")

ISAS = core.build_info()["isa_supported"]
DTYPES = [np.float32, np.float64]

SHAPES = [  # T, B, I, H: ones, H not a multiple of the vector width, edge rows
    (1, 1, 1, 1),
    (1, 3, 5, 7),
    (6, 1, 4, 7),
    (5, 4, 3, 1),
    (3, 7, 5, 129),
    (4, 13, 6, 130),
    (28, 5, 28, 16),
    (2, 50, 300, 33),  # T*B and I beyond one cache block of the GEMM
    (3, 9, 40, 650),  # I + H in three K blocks of the recurrent forward
]


@pytest.fixture(params=[1, 2], ids=lambda n: f"threads{n}")
def threads(request):
    before = core.get_num_threads()
    core.set_num_threads(request.param)
    yield request.param
    core.set_num_threads(before)


def shape_id(shape):
    return "T{}-B{}-I{}-H{}".format(*shape)


def problem(cell, T, B, I, H, dtype, *, seed=0, scale=1.0):
    """Kernel arguments: weights like torch's init, nonzero states, loss on every step."""
    rng = np.random.default_rng(seed)
    G = 4 if cell == "lstm" else 1
    k = 1.0 / np.sqrt(H)

    def u(*shape, lo=-k, hi=k):
        return rng.uniform(lo, hi, shape).astype(dtype)

    args = {
        "x": (scale * rng.standard_normal((T, B, I))).astype(dtype),
        "h0": u(B, H, lo=-0.5, hi=0.5),
        "c0": u(B, H, lo=-1, hi=1),
        "w_ih": u(G * H, I),
        "w_hh": u(G * H, H),
        "b": u(G * H),
        "dy": rng.standard_normal((T, B, H)).astype(dtype),
        "dhT": rng.standard_normal((B, H)).astype(dtype),
        "dcT": rng.standard_normal((B, H)).astype(dtype),
    }
    if cell == "rnn":
        del args["c0"], args["dcT"]
    return args


def run(module, cell, a, *, with_dy=True, need_dx=True):
    """Forward then backward on one backend: (forward outputs, backward outputs)."""
    dy = a["dy"] if with_dy else None
    if cell == "rnn":
        y, saved = module.rnn_forward(a["x"], a["h0"], a["w_ih"], a["w_hh"], a["b"], True)
        grads = module.rnn_backward(saved, a["x"], a["h0"], a["w_ih"], a["w_hh"], y, dy,
                                    a["dhT"], need_dx)
        return [y], list(grads)
    y, cT, saved = module.lstm_forward(a["x"], a["h0"], a["c0"], a["w_ih"], a["w_hh"], a["b"],
                                       True)
    grads = module.lstm_backward(saved, a["x"], a["h0"], a["c0"], a["w_ih"], a["w_hh"], y, dy,
                                 a["dhT"], a["dcT"], need_dx)
    return [y, cT], list(grads)


GRAD_NAMES = {"rnn": ["dx", "dh0", "dw_ih", "dw_hh", "db"],
              "lstm": ["dx", "dh0", "dc0", "dw_ih", "dw_hh", "db"]}


def compare(cell, a, dtype, **kw):
    outs, grads = run(core, cell, a, **kw)
    outs_ref, grads_ref = run(ref, cell, a, **kw)
    for name, got, want in zip(["y", "cT"], outs, outs_ref):
        assert got.dtype == dtype and got.flags.c_contiguous
        assert_close(got, want, "output", dtype, name)
    for name, got, want in zip(GRAD_NAMES[cell], grads, grads_ref):
        if want is None:
            assert got is None, name
            continue
        assert got.dtype == dtype
        assert_close(got, want, "grad", dtype, name)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_rnn_backward(isa, threads, shape, dtype):
    compare("rnn", problem("rnn", *shape, dtype, seed=sum(shape)), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_lstm_backward(isa, threads, shape, dtype):
    compare("lstm", problem("lstm", *shape, dtype, seed=sum(shape)), dtype)


@pytest.mark.parametrize("need_dx", [True, False], ids=["dx", "no_dx"])
@pytest.mark.parametrize("with_dy", [True, False], ids=["dy", "dy_none"])
def test_backward_without_dy_or_dx(isa, cell, with_dy, need_dx):
    a = problem(cell, 7, 5, 6, 19, np.float32, seed=3)
    compare(cell, a, np.float32, with_dy=with_dy, need_dx=need_dx)


def test_lstm_wide_hidden(isa):
    """4H = 4120 columns: more than one column block of the GEMM."""
    compare("lstm", problem("lstm", 2, 3, 4, 1030, np.float32, seed=5), np.float32)


@pytest.mark.parametrize("scale", [1e2, 1e4, 1e6, 1e30])
def test_saturating_inputs_stay_finite(isa, cell, scale):
    """Huge pre-activations saturate the gates cleanly: no inf/inf, no NaN.

    One input feature (I=1) keeps the outputs well-conditioned: a sum of
    several huge terms that cancel would differ in any two summation orders.
    Beyond 1e4 nearly every gate is saturated, the few gradients left come
    from 1 - h^2 of an h one ulp below 1, and two correct float32 codes
    disagree there; so only the outputs are compared.
    """
    a = problem(cell, 6, 4, 1, 23, np.float32, seed=11, scale=scale)
    outs, grads = run(core, cell, a)
    for array in outs + grads:
        assert np.all(np.isfinite(array))
    assert np.abs(outs[0]).max() <= 1.0
    if scale <= 1e4:
        compare(cell, a, np.float32)
    else:
        for got, want in zip(outs, run(ref, cell, a)[0]):
            assert_close(got, want, "output", np.float32)


@pytest.mark.parametrize("training", [True, False])
def test_lstm_forward_inference_matches_training(isa, training):
    a = problem("lstm", 9, 1, 28, 128, np.float32, seed=1)
    y, cT, saved = core.lstm_forward(a["x"], a["h0"], a["c0"], a["w_ih"], a["w_hh"], a["b"],
                                     training)
    y_ref, cT_ref, _ = ref.lstm_forward(a["x"], a["h0"], a["c0"], a["w_ih"], a["w_hh"], a["b"])
    assert (saved is None) != training
    assert_close(y, y_ref, "output", np.float32, "y")
    assert_close(cT, cT_ref, "output", np.float32, "cT")


def test_rnn_forward_inference_keeps_nothing(isa):
    a = problem("rnn", 3, 2, 4, 5, np.float32)
    y, saved = core.rnn_forward(a["x"], a["h0"], a["w_ih"], a["w_hh"], a["b"], False)
    assert saved is None
    assert_close(y, ref.rnn_forward(a["x"], a["h0"], a["w_ih"], a["w_hh"], a["b"])[0],
                 "output", np.float32, "y")


def test_bitwise_deterministic_across_runs_and_threads(isa, cell):
    a = problem(cell, 11, 37, 19, 70, np.float32, seed=2)
    results = []
    for n in (1, 2, 2, 1):
        core.set_num_threads(n)
        outs, grads = run(core, cell, a)
        results.append(outs + grads)
    core.set_num_threads(2)
    for other in results[1:]:
        for got, want in zip(other, results[0]):
            np.testing.assert_array_equal(got, want)


def strided_views(x):
    """x's values in other memory layouts the kernels read in place (last axis contiguous)."""
    T, B, I = x.shape
    batch_first = np.ascontiguousarray(x.transpose(1, 0, 2))    # (B, T, I) memory
    wide = np.zeros((2 * T, B + 3, I), x.dtype)
    wide[::2, 1:B + 1] = x                                       # gaps between steps and rows
    return {"batch_first": batch_first.transpose(1, 0, 2), "gaps": wide[::2, 1:B + 1]}


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
@pytest.mark.parametrize("need_dx", [False, True])
def test_strided_x_gives_the_bits_of_a_contiguous_copy(isa, threads, cell, need_dx):
    a = problem(cell, 5, 13, 7, 20, np.float32, seed=4)
    outs, grads = run(core, cell, a, need_dx=need_dx)
    for layout, view in strided_views(a["x"]).items():
        assert not view.flags.c_contiguous
        got_outs, got_grads = run(core, cell, dict(a, x=view), need_dx=need_dx)
        for got, want in zip(got_outs + got_grads, outs + grads):
            if want is None:
                assert got is None
            else:
                np.testing.assert_array_equal(got, want, err_msg=layout)
    # T = 1 and B = 1: axes of one entry, whose strides numpy leaves free
    for T, B in ((1, 4), (4, 1)):
        b = problem(cell, T, B, 3, 5, np.float32, seed=5)
        outs, grads = run(core, cell, b)
        got_outs, got_grads = run(core, cell, dict(b, x=strided_views(b["x"])["batch_first"]))
        for got, want in zip(got_outs + got_grads, outs + grads):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("make_view", [lambda x: x[:, :, ::-1], lambda x: x[::-1],
                                       lambda x: np.repeat(x, 2, axis=2)[:, :, ::2]],
                         ids=["reversed-last-axis", "negative-step", "strided-last-axis"])
def test_x_with_unreadable_strides_is_rejected(make_view):
    args = lstm_args()
    args[0] = make_view(np.ascontiguousarray(np.arange(24, dtype=np.float32).reshape(3, 2, 4)))
    with pytest.raises(ValueError, match="contiguous last axis and non-negative strides"):
        core.lstm_forward(*args, True)


# ------------------------------------------------------------- argument checks


def lstm_args(dtype=np.float32, T=3, B=2, I=4, H=5):
    a = problem("lstm", T, B, I, H, dtype)
    return [a[k] for k in ("x", "h0", "c0", "w_ih", "w_hh", "b")]


@pytest.mark.parametrize("position, bad, error, match", [
    (0, np.zeros((3, 2, 4), np.float16), TypeError, "float32 or float64"),
    (0, np.zeros((3, 2, 4), np.int64), TypeError, "float32 or float64"),
    (0, [[[0.0]]], TypeError, "numpy.ndarray"),
    (0, np.zeros((2, 4), np.float32), ValueError, "3-D"),
    (0, np.zeros((0, 2, 4), np.float32), ValueError, "at least one"),
    (1, np.zeros((2, 5), np.float64), TypeError, "h0 has dtype float64"),
    (1, np.zeros((3, 5), np.float32), ValueError, r"h0 must have shape \(2, "),
    (1, np.zeros((2, 0), np.float32), ValueError, "at least one hidden"),
    (2, None, TypeError, "c0 must be a numpy.ndarray"),
    (3, np.zeros((20, 3), np.float32), ValueError, r"w_ih must have shape \(20, 4\)"),
    (4, np.zeros((5, 5), np.float32), ValueError, r"w_hh must have shape \(20, 5\)"),
    (5, np.zeros((20, 1), np.float32), ValueError, r"b must have shape \(20,\)"),
    (3, np.zeros((4, 20), np.float32).T, ValueError, "C-contiguous"),
])
def test_lstm_forward_rejects(position, bad, error, match):
    args = lstm_args()
    args[position] = bad
    with pytest.raises(error, match=match):
        core.lstm_forward(*args, True)


def test_unaligned_array_is_rejected():
    raw = np.zeros(3 * 2 * 4 * 4 + 1, np.uint8)[1:]
    x = raw.view(np.float32).reshape(3, 2, 4)
    assert not x.flags.aligned
    args = lstm_args()
    args[0] = x
    with pytest.raises(ValueError, match="aligned"):
        core.lstm_forward(*args, True)


def lstm_backward_args(**kw):
    x, h0, c0, w_ih, w_hh, b = lstm_args(**kw)
    y, cT, saved = core.lstm_forward(x, h0, c0, w_ih, w_hh, b, True)
    return [saved, x, h0, c0, w_ih, w_hh, y, None, np.zeros_like(h0), np.zeros_like(c0), True]


def test_lstm_backward_accepts_its_workspace():
    args = lstm_backward_args()
    assert "lstm float32 T=3 B=2 I=4 H=5" in repr(args[0])
    assert len(core.lstm_backward(*args)) == 6


@pytest.mark.parametrize("saved, error, match", [
    (None, ValueError, "training forward"),
    ((np.zeros(3), np.zeros(3)), TypeError, "workspace"),
    ("rnn", ValueError, "rnn_forward"),
    ("float64", TypeError, "another dtype"),
    ("sizes", ValueError, "other sizes"),
])
def test_lstm_backward_rejects_foreign_saved(saved, error, match):
    args = lstm_backward_args()
    if saved == "rnn":
        a = problem("rnn", 3, 2, 4, 5, np.float32)
        saved = core.rnn_forward(a["x"], a["h0"], a["w_ih"], a["w_hh"], a["b"], True)[1]
    elif saved == "float64":
        saved = lstm_backward_args(dtype=np.float64)[0]
    elif saved == "sizes":
        saved = lstm_backward_args(T=4)[0]
    args[0] = saved
    with pytest.raises(error, match=match):
        core.lstm_backward(*args)


@pytest.mark.parametrize("position, bad, match", [
    (6, np.zeros((3, 2, 6), np.float32), r"y must have shape \(3, 2, 5\)"),
    (7, np.zeros((3, 2), np.float32), r"dy must have shape \(3, 2, 5\)"),
    (8, np.zeros((2, 5, 1), np.float32), r"dhT must have shape \(2, 5\)"),
    (9, np.zeros((1, 5), np.float32), r"dcT must have shape \(2, 5\)"),
])
def test_lstm_backward_rejects_bad_arrays(position, bad, match):
    args = lstm_backward_args()
    args[position] = bad
    with pytest.raises(ValueError, match=match):
        core.lstm_backward(*args)


def test_rnn_backward_rejects_lstm_workspace():
    a = problem("rnn", 3, 2, 4, 5, np.float32)
    y, _ = core.rnn_forward(a["x"], a["h0"], a["w_ih"], a["w_hh"], a["b"], True)
    saved = lstm_backward_args()[0]
    with pytest.raises(ValueError, match="lstm_forward"):
        core.rnn_backward(saved, a["x"], a["h0"], a["w_ih"], a["w_hh"], y, None, a["dhT"], True)


def test_workspace_cannot_be_made_from_python():
    with pytest.raises(TypeError):
        core.Workspace()


@pytest.mark.parametrize("n, error", [(0, ValueError), (-1, ValueError), (10**6, ValueError),
                                      (2.0, TypeError), (True, TypeError), ("2", TypeError)])
def test_set_num_threads_rejects(n, error):
    with pytest.raises(error):
        core.set_num_threads(n)


def test_set_num_threads_round_trip():
    before = core.get_num_threads()
    try:
        core.set_num_threads(3)
        assert core.get_num_threads() == 3
        assert core.build_info()["threads"] == 3
    finally:
        core.set_num_threads(before)


def test_build_info_names_the_kernel_path():
    info = core.build_info()
    assert info["kernel_path"] in info["isa_supported"]
    assert info["isa_supported"][0] == "generic"
    assert set(info["isa_supported"]) <= set(info["isa_compiled"])
    assert isinstance(info["cpu_features"], list)


def test_set_isa_rejects_unknown():
    with pytest.raises(ValueError, match="unknown FASTRNN_ISA value 'sse9'"):
        core._set_isa("sse9")


def import_with_isa(value):
    env = dict(os.environ, FASTRNN_ISA=value)
    code = "import fastrnn._core as c; print(c.build_info()['kernel_path'])"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          cwd=OUTSIDE_REPO)


@pytest.mark.parametrize("value", ISAS)
def test_fastrnn_isa_forces_a_path(value):
    done = import_with_isa(value)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == value


@pytest.mark.parametrize("value", ["avx1024", "AVX2 "] +
                         [isa for isa in core.build_info()["isa_compiled"] if isa not in ISAS])
def test_fastrnn_isa_beyond_the_cpu_is_an_error(value):
    done = import_with_isa(value)
    assert done.returncode != 0
    assert "ValueError: " in done.stderr and repr(value) in done.stderr.replace('"', "'")
    assert "supports generic" in done.stderr


def test_fastrnn_isa_error_is_not_a_silent_fallback():
    env = dict(os.environ, FASTRNN_ISA="avx1024")
    code = "import fastrnn; fastrnn.available_backends()"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          cwd=OUTSIDE_REPO)
    assert done.returncode != 0
    assert "ValueError: unknown FASTRNN_ISA value 'avx1024'" in done.stderr
