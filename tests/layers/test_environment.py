"""In CI the oracle and the compiled backend must be present, so nothing is skipped silently."""

import os
import subprocess
import sys

import pytest

import fastrnn
from helpers import OUTSIDE_REPO

in_ci = pytest.mark.skipif(not os.environ.get("CI"), reason="only enforced in CI (CI=true)")


@in_ci
def test_ci_has_the_torch_oracle():
    import torch  # noqa: F401  (the torch comparison tests must run, not skip)


def test_info_lists_backends_and_threads():
    facts = fastrnn.info()
    assert facts["backends"] == fastrnn.available_backends()
    assert facts["backends"][-1] == "numpy"
    assert facts["threads"] == fastrnn.get_num_threads() >= 1


def test_info_command_runs(capsys):
    from fastrnn.cli import main
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "backends" in out and "numpy" in out


def test_set_num_threads_reaches_the_blas_of_the_numpy_and_numba_backends():
    from threadpoolctl import threadpool_info
    n = fastrnn.get_num_threads()
    try:
        fastrnn.set_num_threads(1)
        blas = [lib for lib in threadpool_info() if lib["user_api"] == "blas"]
        assert blas and all(lib["num_threads"] == 1 for lib in blas)
    finally:
        fastrnn.set_num_threads(n)


@pytest.mark.skipif("cpp" not in fastrnn.available_backends(),
                    reason="the compiled backend is not built here")
def test_a_layer_on_the_compiled_backend_loads_neither_numba_nor_scipy():
    # Loading the Numba backend compiles and imports SciPy: about 0.2 s that a user
    # of the compiled kernels never needs.
    code = ("import sys, fastrnn; layer = fastrnn.LSTM(2, 3); "
            "print(layer.backend, 'numba' in sys.modules, 'scipy' in sys.modules)")
    env = {key: value for key, value in os.environ.items() if key != "FASTRNN_BACKEND"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, cwd=OUTSIDE_REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["cpp", "False", "False"]
