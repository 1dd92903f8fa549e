"""Shared pieces of the benchmark suites: rivals, cases, equal threads, warmed runners.

    pytest bench/ --benchmark-group-by=group           every case, rivals side by side
    pytest bench/ -k "lstm and origin"                 one shape of one cell
    pytest bench/ --bench-tiny --benchmark-disable     smoke run: each function once, tiny sizes
"""

import pytest

import fastrnn
from fastrnn import bench

# Every fastrnn backend that loads here, then the peers (skipped when not installed).
RIVALS = fastrnn.available_backends() + list(bench.PEERS)
# ONNX Runtime's operators do not train.
TRAINERS = [rival for rival in RIVALS if rival != "onnxruntime"]


def pytest_addoption(parser):
    group = parser.getgroup("fastrnn bench")
    group.addoption("--bench-threads", type=int, default=None,
                    help="threads for every rival (default: fastrnn.get_num_threads())")
    group.addoption("--bench-tiny", action="store_true",
                    help="replace every shape by a tiny one: checks the suites run, "
                         "its times mean nothing")


def case_params(mode, shape_names):
    """(mode, cell, shape name) params, each in its own benchmark group."""
    return [pytest.param((mode, cell, shape), id=f"{cell}-{shape}",
                         marks=pytest.mark.benchmark(group=f"{cell} {mode} {shape}"))
            for cell in bench.CELLS for shape in shape_names]


@pytest.fixture(scope="session")
def threads(request):
    """The one thread count every rival gets; NumPy's BLAS is limited to it too."""
    n = request.config.getoption("--bench-threads")
    if n is None:
        n = fastrnn.get_num_threads()
    if n < 1:
        raise pytest.UsageError(f"--bench-threads must be positive, got {n}")
    limits = bench.limit_threads(n)
    yield n
    if limits is not None:
        limits.restore_original_limits()


@pytest.fixture
def warmed_runner(request, threads, benchmark):
    """make(rival, case) -> (run, shape): run already called once (JIT compiled, buffers made)."""
    tiny = request.config.getoption("--bench-tiny")

    def make(rival, case):
        mode, cell, shape_name = case
        shape = bench.LATENCY_SHAPE if mode == "latency" else bench.SHAPES[shape_name]
        if tiny:
            shape = bench.SHAPES["tiny"]
        try:
            run = bench.make_runner(rival, bench.Case(mode, cell, shape_name, shape), threads)
        except bench.Unavailable as exc:
            pytest.skip(str(exc))
        run()
        bench.limit_threads(threads)  # again: the libraries run() loaded are limited only now
        benchmark.extra_info.update(
            threads=threads, flops=bench.case_flops(mode, cell, shape),
            shape=dict(shape._asdict()), sequences_per_call=shape.B)
        return run, shape
    return make
