"""The compiled one-pass Adam update gives the same bits as the NumPy ufunc sequence.

fastrnn.optim.Adam uses fastrnn._core.adam_update where the arrays allow it and
NumPy otherwise; which one runs must never change a result.
"""

import numpy as np
import pytest

from fastrnn import _backends
from fastrnn.optim import Adam

core = pytest.importorskip("fastrnn._core")

SIZES = {"weight": (37, 11), "bias": (13,), "one": (1,), "empty": (0,)}


def gradient_stream(rng, dtype, steps):
    for step in range(steps):
        grads = {k: (10.0 ** rng.integers(-6, 4) * rng.standard_normal(s)).astype(dtype)
                 for k, s in SIZES.items()}
        grads["weight"][0, :3] = 0.0
        if step == 3:  # a huge gradient, then a NaN in one coordinate
            grads["bias"][1] = 1e30 if dtype == np.float64 else 1e18
            grads["weight"][2, 2] = np.nan
        yield grads


def run_adam(dtype, fused, steps=8, **hyper):
    rng = np.random.default_rng(1)
    params = {k: rng.standard_normal(s).astype(dtype) for k, s in SIZES.items()}
    opt = Adam(params, fused=None if fused else False, **hyper)
    for grads in gradient_stream(rng, dtype, steps):
        opt.step(grads)
    return params, opt


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("hyper", [{}, {"lr": 0.05, "betas": (0.5, 0.9), "eps": 1e-3}],
                         ids=["defaults", "custom"])
def test_fused_update_is_bitwise_the_numpy_update(isa, dtype, hyper):
    fused, fused_opt = run_adam(dtype, True, **hyper)
    plain, plain_opt = run_adam(dtype, False, **hyper)
    assert fused_opt._fused_update is not None
    for key in SIZES:
        for ours, theirs in ((fused[key], plain[key]),
                             (fused_opt.exp_avg[key], plain_opt.exp_avg[key]),
                             (fused_opt.exp_avg_sq[key], plain_opt.exp_avg_sq[key])):
            assert ours.tobytes() == theirs.tobytes(), key
    assert np.isnan(fused["weight"][2, 2]) and np.isfinite(fused["bias"]).all()


def test_adam_update_declines_what_it_cannot_do_in_one_pass():
    p, g, m, v = (np.ones(6, np.float32) for _ in range(4))
    scalars = (0.9, 0.999, 1e-3, 1.0, 1e-8)
    assert core.adam_update(p, g, m, v, *scalars)
    before = p.copy()
    assert not core.adam_update(p, g, m, v[:5], *scalars)                  # sizes differ
    assert not core.adam_update(p, g.astype(np.float64), m, v, *scalars)   # dtypes differ
    assert not core.adam_update(p, p, m, v, *scalars)                      # grad is param
    assert not core.adam_update(p.astype(np.float16), g, m, v, *scalars)   # no float16 kernel
    wide = np.ones(12, np.float32)
    assert not core.adam_update(wide[::2], g, m, v, *scalars)              # strided
    frozen = np.ones(6, np.float32)
    frozen.flags.writeable = False
    assert not core.adam_update(frozen, g, m, v, *scalars)                 # read-only
    assert not core.adam_update([1.0] * 6, g, m, v, *scalars)              # not an array
    assert np.array_equal(p, before)


def test_adam_falls_back_for_strided_and_aliased_arrays():
    # Parameters that are views, and a gradient that is the parameter itself:
    # NumPy does these, with the same result as for plain copies.
    rng = np.random.default_rng(2)
    base = rng.standard_normal((8, 6)).astype(np.float32)
    view = base[:, ::2]
    copy, others = view.copy(), base[:, 1::2].copy()
    grad = rng.standard_normal(view.shape).astype(np.float32)
    Adam({"w": view}, lr=0.1).step({"w": grad})
    reference = Adam({"w": copy}, lr=0.1, fused=False)
    reference.step({"w": grad})
    assert np.array_equal(view, copy)
    assert np.array_equal(base[:, 1::2], others)  # the columns between stay as they were
    w = np.linspace(-1, 1, 5).astype(np.float32)
    w_plain = w.copy()
    Adam({"w": w}, lr=0.1).step({"w": w})
    plain = Adam({"w": w_plain}, lr=0.1, fused=False)
    plain.step({"w": w_plain})
    assert np.array_equal(w, w_plain)


def test_fused_option(monkeypatch):
    w = np.ones(3, np.float32)
    assert Adam({"w": w}, fused=True)._fused_update is not None
    assert Adam({"w": w}, fused=False)._fused_update is None
    with pytest.raises(ValueError, match="fused"):
        Adam({"w": w}, fused="yes")
    monkeypatch.setattr(_backends, "compiled_module", lambda: None)
    assert Adam({"w": w})._fused_update is None   # NumPy, silently: same results
    with pytest.raises(ValueError, match="compiled backend"):
        Adam({"w": w}, fused=True)
