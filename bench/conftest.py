"""The suites' options, cases and rivals, and the fixture that times a case honestly.

    pytest bench/ --benchmark-group-by=group           every case, rivals side by side
    pytest bench/ -k "lstm and origin"                 one shape of one cell
    pytest bench/ --bench-cases lstm-train-origin      cases by name, as `fastrnn bench --cases`
    pytest bench/ --bench-in-process                   every rival in pytest's process
    pytest bench/ --bench-tiny --benchmark-disable     smoke run: tiny sizes, nothing timed

By default each rival runs in its own process and the rivals take turns, as in
`fastrnn bench` (see fastrnn/bench/suite.py); --bench-in-process times them all
in this process with pytest-benchmark's own timer instead, where their thread
pools compete for the cores.
"""

import pytest

import fastrnn
from fastrnn.bench import suite
from fastrnn.bench.cases import case_by_name, require_runnable
from fastrnn.bench.runners import PEERS, limit_threads, peer_unavailable_reason, warmed_runner

# Every fastrnn backend that loads here, then the peers (skipped when not installed).
RIVALS = fastrnn.available_backends() + list(PEERS)


def pytest_addoption(parser):
    group = parser.getgroup("fastrnn bench")
    group.addoption("--bench-threads", type=int, default=None,
                    help="threads for every rival (default: fastrnn.get_num_threads())")
    group.addoption("--bench-cases", default=None, metavar="NAME,...",
                    help="the cases to time, by the names `fastrnn bench --list-cases` shows "
                         "(default: every suite case that runs here)")
    group.addoption("--bench-seconds", type=float, default=3.0,
                    help="time budget of each case, its rivals taking turns (default 3)")
    group.addoption("--bench-in-process", action="store_true",
                    help="time every rival in this process with pytest-benchmark's timer: "
                         "their thread pools compete, so the figures do not compare")
    group.addoption("--bench-tiny", action="store_true",
                    help="tiny sizes: checks the suites run, their times mean nothing")


@pytest.hookimpl(tryfirst=True)   # before pytest-benchmark reads its timer
def pytest_configure(config):
    if config.getoption("--bench-in-process"):
        return
    timer = config.getoption("benchmark_timer", default=None)
    if timer not in (None, "time.perf_counter", suite.CLOCK):
        raise pytest.UsageError("the suites time each rival in its own process with "
                                "time.perf_counter; --benchmark-timer needs --bench-in-process")
    config.option.benchmark_timer = suite.CLOCK


def _cases(config):
    names = config.getoption("--bench-cases")
    if names is None:
        return suite.suite_cases(tiny=config.getoption("--bench-tiny"))
    try:
        cases = [case_by_name(name.strip()) for name in names.split(",") if name.strip()]
        require_runnable(cases)
    except ValueError as exc:
        raise pytest.UsageError(f"--bench-cases: {exc}") from None
    return cases


def pytest_generate_tests(metafunc):
    if {"case", "rival"} <= set(metafunc.fixturenames):
        pairs = suite.suite_pairs(_cases(metafunc.config), RIVALS)
        metafunc.parametrize("case, rival", [
            pytest.param(case, rival, id=f"{case.name}-{rival}",
                         marks=pytest.mark.benchmark(group=suite.benchmark_group(case)))
            for case, rival in pairs])


@pytest.fixture(scope="session")
def threads(request):
    """The one thread count every rival gets; NumPy's BLAS is limited to it too."""
    n = request.config.getoption("--bench-threads")
    if n is None:
        n = fastrnn.get_num_threads()
    if n < 1:
        raise pytest.UsageError(f"--bench-threads must be positive, got {n}")
    limits = limit_threads(n)
    yield n
    if limits is not None:
        limits.restore_original_limits()


@pytest.fixture(scope="session")
def isolated_timings(request, threads):
    """The rivals' own processes, serving the (case, rival) pairs this session selected."""
    config = request.config
    pairs = [(item.callspec.params["case"], item.callspec.params["rival"])
             for item in request.session.items
             if "case" in getattr(getattr(item, "callspec", None), "params", {})]
    smoke = config.getoption("benchmark_disable", default=False)
    timings = suite.IsolatedTimings(
        pairs, threads, budget=0.0 if smoke else config.getoption("--bench-seconds"),
        min_rounds=1 if smoke else 3)
    yield timings
    timings.close()


@pytest.fixture
def time_case(request, benchmark, threads):
    """time(case, rival) -> summary of the rival's output, its timings given to `benchmark`."""
    in_process = request.config.getoption("--bench-in-process")

    def time(case, rival):
        if rival in PEERS and peer_unavailable_reason(rival) is not None:
            pytest.skip(peer_unavailable_reason(rival))
        benchmark.extra_info.update(suite.extra_info(
            case, threads, "in-process" if in_process else "isolated"))
        if in_process:
            run, summary, skip = warmed_runner(rival, case, threads)
            if skip is not None:
                (pytest.fail if skip["failed"] else pytest.skip)(skip["reason"])
            limit_threads(threads)  # again: the libraries run() loaded are limited only now
            benchmark(run)
            return summary
        try:
            times, summary = request.getfixturevalue("isolated_timings").result(case, rival)
        except suite.RivalSkipped as skip:
            (pytest.fail if skip.failed else pytest.skip)(str(skip))
        suite.replay_into(benchmark, times)
        return summary
    return time
