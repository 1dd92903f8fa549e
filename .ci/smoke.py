"""Smoke test of an installed fastrnn: import, info, one forward and backward against the
reference; where onnx and onnxruntime are installed, one model exported and run in ONNX Runtime.

Usage: python smoke.py EXPECTED_BACKEND   (run from outside the source tree)
"""

import os
import sys
import tempfile

import numpy as np

import fastrnn

expected = sys.argv[1]
facts = fastrnn.info()
print(facts)
assert fastrnn.__file__ and "site-packages" in fastrnn.__file__, fastrnn.__file__
assert facts["default_backend"] == expected, (facts["default_backend"], expected)

rng = np.random.default_rng(0)
x = rng.standard_normal((3, 5, 4)).astype(np.float32)
dy = rng.standard_normal((3, 5, 6)).astype(np.float32)
for cls in (fastrnn.RNN, fastrnn.LSTM):
    fast = cls(4, 6, seed=0)
    ref = cls(4, 6, seed=0, backend="numpy")
    y, _ = fast.forward(x)
    y_ref, _ = ref.forward(x)
    dx, _ = fast.backward(dy)
    dx_ref, _ = ref.backward(dy)
    assert np.abs(y - y_ref).max() < 1e-5, cls.__name__
    assert np.abs(dx - dx_ref).max() < 1e-4 * np.abs(dx_ref).max(), cls.__name__
    for key, grad in ref.grads.items():
        assert np.abs(fast.grads[key] - grad).max() < 1e-4 * np.abs(grad).max(), key

try:
    import onnx  # noqa: F401  (export_onnx needs it)
    import onnxruntime
except ImportError as exc:
    print(f"skipped the ONNX export check: {exc.name} is not installed")
else:
    model = fastrnn.SequenceClassifier(4, 6, 3, seed=0)
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "model.onnx")
        fastrnn.export_onnx(model, path)
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    for B, T in ((3, 5), (1, 2)):   # one file, two batch sizes and lengths
        x_bt = rng.standard_normal((B, T, 4)).astype(np.float32)
        (logits,) = session.run(None, {"x": x_bt})
        assert np.abs(logits - model.logits(x_bt)).max() <= 1e-4, (B, T)
    print(f"ONNX export ran in ONNX Runtime {onnxruntime.__version__} with fastrnn's logits")
print(f"smoke test passed on {expected}")
