"""In CI the oracle and the compiled backend must be present, so nothing is skipped silently."""

import json
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


def test_info_reports_the_backend_that_FASTRNN_BACKEND_gives_layers(monkeypatch):
    monkeypatch.setenv("FASTRNN_BACKEND", "numpy")
    facts = fastrnn.info()
    assert facts["default_backend"] == fastrnn.LSTM(2, 3).backend == "numpy"
    assert "backend_error" not in facts
    monkeypatch.delenv("FASTRNN_BACKEND")
    assert fastrnn.info()["default_backend"] == fastrnn.available_backends()[0]


def test_info_under_an_invalid_FASTRNN_BACKEND_names_the_error_and_the_command_fails(
        monkeypatch, capsys):
    from fastrnn.cli import main
    monkeypatch.setenv("FASTRNN_BACKEND", "bogus")
    with pytest.raises(ValueError, match="unknown backend 'bogus' \\(from FASTRNN_BACKEND\\)"):
        fastrnn.LSTM(2, 3)
    facts = fastrnn.info()
    assert facts["default_backend"] is None
    assert "'bogus' (from FASTRNN_BACKEND)" in facts["backend_error"]
    assert main(["info"]) == 2
    out, err = capsys.readouterr()
    assert "default_backend  None" in out
    assert err.splitlines() == [f"fastrnn info: error: {facts['backend_error']}"]
    assert main(["info", "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["backend_error"] == facts["backend_error"]


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
