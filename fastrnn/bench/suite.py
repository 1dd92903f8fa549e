"""What the pytest-benchmark suites in bench/ take from the harness: cases, and honest timing.

By default the suites time as `fastrnn bench` does: each rival in its own
process, the processes taking turns (isolated.py). The first test of a timing
group has every rival selected for that group's cases time it in turns; each
test then hands its rival's timed calls to pytest-benchmark through
`benchmark.pedantic` and a replayed clock (`replay_clock`, which bench/conftest.py
makes pytest-benchmark's timer), one round per call. So pytest-benchmark's
min, median, mean and rounds are exactly the calls timed in the rival's own
process, and its tables, JSON and comparisons work on them as on any other.
"""

from .cases import CELLS, FROZEN_MODES, MODES, case_flops, make_cases, missing_features, timing_groups
from .isolated import Servers
from .runners import PEERS, not_applicable, peer_unavailable_reason

SHAPES = ("origin", "medium", "large")
VARIANT_SHAPE = "medium"      # the stacked and lengths cases, at issue 15's shape
BF16_SHAPES = ("origin", "medium")    # bf16 layers and classifiers, at issue 23's shapes
CLOCK = "fastrnn.bench.suite.replay_clock"


def suite_cases(tiny=False):
    """The suites' cases that run on the installed fastrnn (tiny: the same on tiny sizes)."""
    cases = make_cases(["tiny"] if tiny else SHAPES, CELLS, MODES)
    cases += make_cases(["tiny" if tiny else VARIANT_SHAPE], CELLS, ["inference", "train"],
                        ["2layer-bidir", "lengths"])
    cases += make_cases(["tiny" if tiny else "origin"], CELLS, FROZEN_MODES, ["bf16", "int8"])
    cases += make_cases(["tiny"] if tiny else BF16_SHAPES, CELLS, ["inference", "train"], ["bf16"])
    return [case for case in cases if missing_features(case) is None]


def suite_pairs(cases, rivals):
    """(case, rival) for every rival that can run each case at all."""
    return [(case, rival) for case in cases for rival in rivals
            if not_applicable(rival, case) is None]


def benchmark_group(case):
    """pytest-benchmark's group: a lengths or bf16 case shares its twin's table."""
    return (case.twin or case).name


def extra_info(case, threads, timing):
    """What pytest-benchmark's JSON keeps beside each benchmark's figures."""
    return {"case": case.name, "threads": threads, "timing": timing, "flops": case_flops(case),
            "shape": dict(case.shape._asdict()), "variant": case.variant,
            "sequences_per_call": case.shape.B}


# ------------------------------------------------------------ the replayed clock

_replayed = [0.0]


def replay_clock():
    """pytest-benchmark's timer in the isolated mode: stands still but where a call is replayed."""
    return _replayed[0]


def replay_into(benchmark, times):
    """Record `times` (seconds of calls timed elsewhere) as `benchmark`'s rounds."""
    calls = iter(times)

    def start_at_zero():
        _replayed[0] = 0.0

    def replayed_call():
        _replayed[0] += next(calls)

    benchmark.pedantic(replayed_call, setup=start_at_zero, rounds=len(times), iterations=1,
                       warmup_rounds=0)
    stats = benchmark.stats.stats if benchmark.enabled else None
    if stats is not None and stats.min != min(times):
        raise RuntimeError(f"pytest-benchmark did not time with {CLOCK} (it measured a "
                           f"minimum of {stats.min} s where the rival's process timed "
                           f"{min(times)} s): leave out --benchmark-timer, or time with "
                           f"--bench-in-process")


# -------------------------------------------------------- rivals in their processes


class RivalSkipped(Exception):
    """The rival did not run the case; `failed` when it broke rather than cannot run it here."""

    def __init__(self, reason, failed):
        super().__init__(reason)
        self.failed = failed


class IsolatedTimings:
    """The isolated mode for a session's selected (case, rival) pairs; close() ends it."""

    def __init__(self, pairs, threads, budget, min_rounds):
        self.pairs = [(case, rival) for case, rival in pairs
                      if rival not in PEERS or peer_unavailable_reason(rival) is None]
        self.budget, self.min_rounds = budget, min_rounds
        self.servers = Servers(threads)
        self.times = {}         # (case name, rival) -> seconds of each timed call

    def result(self, case, rival):
        """(seconds of each timed call, summary of the output) of `rival` on `case`."""
        key = (case.name, rival)
        if key not in self.times:
            self._time_group_of(case)
        skip = next((s for s in self.servers.skipped if (s["case"], s["rival"]) == key), None)
        if skip is not None:
            raise RivalSkipped(skip["reason"], skip["failed"])
        return self.times[key], self.servers.outputs[key]

    def _time_group_of(self, case):
        cases = list({c.name: c for c, _ in self.pairs}.values())
        group = next(g for g in timing_groups(cases, add_twins=False) if case in g)
        names = [c.name for c in group]
        for rival in dict.fromkeys(r for c, r in self.pairs if c.name in names):
            if rival not in self.servers.ready:
                self.servers.start(rival, [c.name for c, r in self.pairs if r == rival])
        self.times.update(self.servers.take_turns(names, self.budget, self.min_rounds))
        for c, r in self.pairs:     # a rival that did not run a case is still answered
            if c.name in names:
                self.times.setdefault((c.name, r), [])

    def close(self):
        self.servers.close()
