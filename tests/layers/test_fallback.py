"""Without the compiled extension, fastrnn runs on Numba and says so once.

Each test runs a fresh interpreter in which importing fastrnn._core fails (a
meta-path finder raises ImportError, as a broken or missing build would), so
it checks what a user of such an install sees, whether or not the extension
is built here.
"""

import os
import subprocess
import sys
import textwrap

import pytest

import fastrnn
from helpers import BACKENDS, OUTSIDE_REPO

pytestmark = pytest.mark.skipif("numba" not in BACKENDS, reason="Numba is not installed")

BLOCK_EXTENSION = textwrap.dedent("""
    import sys

    class BlockExtension:
        def find_spec(self, name, path=None, target=None):
            if name == "fastrnn._core":
                raise ImportError("simulated: fastrnn._core failed to load")

    sys.meta_path.insert(0, BlockExtension())
    import fastrnn
""")

# A few Adam steps of the sequence classifier on one small batch, plus a second
# layer (still one warning): the loss must fall.
TRAIN = textwrap.dedent("""
    import numpy as np
    import fastrnn.optim

    print("backends", fastrnn.available_backends())
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 8, 4)).astype(np.float32)
    labels = rng.integers(0, 3, 16)
    model = fastrnn.SequenceClassifier(4, 8, 3, seed=0)
    fastrnn.RNN(4, 5, seed=0)
    optimizer = fastrnn.optim.Adam(model.parameters(), lr=0.05)
    losses = []
    for step in range(20):
        loss, grads = model.loss_and_grads(x, labels)
        optimizer.step(grads)
        losses.append(float(loss))
    print("backend", model.layer.backend)
    print("loss", losses[0], losses[-1])
""")


def run_python(code, **env_overrides):
    """Run `code` in a fresh interpreter that imports this same fastrnn."""
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(fastrnn.__file__)))
    env = dict(os.environ)
    env.pop("FASTRNN_BACKEND", None)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in [package_parent, env.get("PYTHONPATH")] if p)
    env.update(env_overrides)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=900, cwd=OUTSIDE_REPO)


def lines_starting(stdout, word):
    return [line.split()[1:] for line in stdout.splitlines() if line.startswith(word + " ")]


def test_falls_back_to_numba_with_one_warning_and_trains():
    result = run_python(BLOCK_EXTENSION + TRAIN)
    assert result.returncode == 0, result.stderr
    backends = result.stdout.split("backends ", 1)[1].splitlines()[0]
    assert "'cpp'" not in backends and "'numba'" in backends
    assert lines_starting(result.stdout, "backend") == [["numba"]]
    warning_lines = [line for line in result.stderr.splitlines() if "Warning" in line]
    assert len(warning_lines) == 1, result.stderr
    assert "compiled backend unavailable" in warning_lines[0]
    assert "simulated: fastrnn._core failed to load" in warning_lines[0]  # it says why
    assert "using 'numba'" in warning_lines[0]
    [(first, last)] = lines_starting(result.stdout, "loss")
    assert float(last) < 0.5 * float(first), result.stdout


@pytest.mark.parametrize("how", ["env", "argument"])
def test_choosing_numba_explicitly_is_silent(how):
    code = BLOCK_EXTENSION + (
        "print('backend', fastrnn.LSTM(2, 3, backend='numba').backend)" if how == "argument"
        else "print('backend', fastrnn.LSTM(2, 3).backend)")
    env = {"FASTRNN_BACKEND": "numba"} if how == "env" else {}
    result = run_python(code, **env)
    assert result.returncode == 0, result.stderr
    assert lines_starting(result.stdout, "backend") == [["numba"]]
    assert "Warning" not in result.stderr, result.stderr


def test_asking_for_the_missing_extension_is_a_clear_error():
    code = BLOCK_EXTENSION + textwrap.dedent("""
        try:
            fastrnn.LSTM(2, 3, backend="cpp")
        except ValueError as exc:
            print("error", exc)
    """)
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    [message] = [line for line in result.stdout.splitlines() if line.startswith("error ")]
    assert "'cpp' is not available" in message
    assert "simulated: fastrnn._core failed to load" in message
