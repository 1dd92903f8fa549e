"""The compiled classifier head (fastrnn._core.classifier_head) against the NumPy head.

SequenceClassifier.loss_and_grads uses it on the cpp backend; the NumPy head
(SequenceClassifier._head, the reference, itself checked against torch in
test_torch_oracle.py) runs on the others.
"""

import numpy as np
import pytest

import fastrnn
from helpers import assert_close

core = pytest.importorskip("fastrnn._core")


def numpy_head(h, weight, bias, labels):
    model = fastrnn.SequenceClassifier(1, h.shape[1], weight.shape[0], backend="numpy")
    model.fc_weight, model.fc_bias = weight, bias   # _head reads only these
    loss, predictions, dlogits, dh = model._head(h, labels)
    return loss, predictions, dh, dlogits.T @ h, dlogits.sum(axis=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("B,H,C,scale", [(1, 1, 2, 1.0), (3, 13, 2, 1.0), (100, 128, 10, 1.0),
                                         (7, 33, 5, 1e4), (5, 17, 3, 1e-30)],
                         ids=["ones", "odd", "origin", "saturated", "tiny"])
def test_compiled_head_matches_the_numpy_head(isa, dtype, B, H, C, scale):
    rng = np.random.default_rng(B * H + C)
    h = (scale * rng.standard_normal((B, H))).astype(dtype)
    weight = rng.standard_normal((C, H)).astype(dtype)
    bias = rng.standard_normal(C).astype(dtype)
    labels = rng.integers(0, C, B)
    expected = numpy_head(h, weight, bias, labels)
    got = core.classifier_head(h, weight, bias, labels.astype(np.int64))
    assert np.isfinite(got[0])
    loss_tol = 1e-6 if dtype == np.float32 else 1e-13
    assert abs(got[0] - expected[0]) <= loss_tol * max(1.0, abs(expected[0]))
    assert got[1].dtype == np.int64 and np.array_equal(got[1], expected[1])
    for what, ours, theirs in zip(("dh", "dweight", "dbias"), got[2:], expected[2:]):
        assert ours.dtype == dtype
        assert_close(ours, theirs, "grad", dtype, what)


def test_nan_spreads_like_numpy():
    rng = np.random.default_rng(0)
    h = rng.standard_normal((4, 9)).astype(np.float32)
    h[2, 3] = np.nan
    weight = rng.standard_normal((3, 9)).astype(np.float32)
    bias = np.zeros(3, np.float32)
    labels = np.array([0, 1, 2, 1])
    loss, predictions, dh, dw, db = core.classifier_head(h, weight, bias, labels)
    _, expected_predictions, expected_dh, _, _ = numpy_head(h, weight, bias, labels)
    assert np.isnan(loss)
    assert np.array_equal(predictions, expected_predictions)
    assert np.isnan(dh[2]).all() and np.isfinite(dh[[0, 1, 3]]).all()
    assert np.isnan(dw).all() and np.isnan(db).all()


def test_bad_arguments_raise():
    h = np.zeros((4, 5), np.float32)
    w = np.zeros((3, 5), np.float32)
    b = np.zeros(3, np.float32)
    labels = np.array([0, 1, 2, 1], np.int64)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\), got range \[0, 3\]"):
        core.classifier_head(h, w, b, np.array([0, 1, 3, 1], np.int64))
    with pytest.raises(ValueError, match=r"got range \[-1, 2\]"):
        core.classifier_head(h, w, b, np.array([0, -1, 2, 1], np.int64))
    with pytest.raises(TypeError, match="labels has dtype"):
        core.classifier_head(h, w, b, labels.astype(np.float64))
    with pytest.raises(ValueError, match="labels must have shape"):
        core.classifier_head(h, w, b, labels[:3])
    with pytest.raises(TypeError, match="weight has dtype"):
        core.classifier_head(h, w.astype(np.float64), b, labels)
    with pytest.raises(ValueError, match="weight must have shape"):
        core.classifier_head(h, w[:, :4], b, labels)
    with pytest.raises(ValueError, match="bias must have shape"):
        core.classifier_head(h, w, b[:2], labels)
    with pytest.raises(ValueError, match="h must be 2-D"):
        core.classifier_head(h[0], w, b, labels)
    with pytest.raises(ValueError, match="h must be 2-D"):
        core.classifier_head(h[:0], w, b, labels[:0])
    with pytest.raises(TypeError, match="h must have dtype"):
        core.classifier_head(h.astype(np.float16), w, b, labels)
    with pytest.raises(ValueError, match="C-contiguous"):
        core.classifier_head(np.zeros((5, 4), np.float32).T, w, b, labels)


def test_classifier_on_cpp_gives_the_numpy_classifier_gradients():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 5, 4)).astype(np.float32)
    y = rng.integers(0, 3, 6).astype(np.int32)
    results = {}
    for backend in ("cpp", "numpy"):
        model = fastrnn.SequenceClassifier(4, 7, 3, backend=backend, seed=1)
        results[backend] = model.loss_and_grads(x, y), model.last_predictions
    (loss, grads), predictions = results["cpp"]
    (expected_loss, expected_grads), expected_predictions = results["numpy"]
    assert abs(loss - expected_loss) <= 1e-6
    assert np.array_equal(predictions, expected_predictions)
    for key, value in expected_grads.items():
        assert_close(grads[key], value, "grad", np.float32, key)
    model = fastrnn.SequenceClassifier(4, 7, 3, backend="cpp", seed=1)
    with pytest.raises(ValueError, match="labels must lie in"):
        model.loss_and_grads(x, np.full(6, 3))
    with pytest.raises(TypeError, match="integers"):
        model.loss_and_grads(x, y.astype(np.float32))
    with pytest.raises(ValueError, match="shape"):
        model.loss_and_grads(x, y[:5])
