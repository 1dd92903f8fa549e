"""The in-process mode (`fastrnn bench --in-process`): every rival in this one process.

The rivals of a case take turns in alternating blocks (see timing.py), with a
short pause between blocks so one library's spinning workers do not steal the
next one's cores. Their thread pools still share the process: on few cores
torch's and fastrnn's starve each other, and torch's multi-threaded figures
can come out many times too slow. The isolated mode is the default for that.
"""

from .cases import timing_groups
from .report import build_report, group_rows
from .runners import limit_threads, warmed_runner
from .timing import Blocks, machine_load, take_turns


def run_in_process(cases, rivals, threads, budget, min_rounds, peak, progress=None,
                   block_seconds=0.2, pause=0.02):
    """Time every rival on every case, taking turns in this process; the report's dict."""
    load_at_start = machine_load()
    groups = timing_groups(cases)
    results, skipped = [], []
    for group in groups:
        runners = {}
        for case in group:
            for rival in rivals:
                run, _, skip = warmed_runner(rival, case, threads)
                if run is None:
                    skipped.append({"case": case.name, "rival": rival, **skip})
                else:
                    runners[case.name, rival] = run
        if not runners:
            continue
        limit_threads(threads)  # after the warm-up: reaches the libraries it loaded
        if progress:
            progress(f"timing {' and '.join(c.name for c in group)}: "
                     f"{', '.join(dict.fromkeys(rival for _, rival in runners))} in turns")
        blocks = {key: Blocks(run) for key, run in runners.items()}
        samples = take_turns(lambda key: blocks[key].time(block_seconds), list(blocks), budget,
                             min_rounds, pause)
        results.extend(group_rows(group, samples, peak))
    return build_report("in-process", [case for group in groups for case in group], threads,
                        peak, results, skipped, load_at_start)
