"""Two fastrnn backends' CPU time per call of `fastrnn bench`'s cases, on one thread.

    python scripts/backend_cpu_time.py --backends numba,numpy \
        --cases rnn-train-medium,lstm-inference-origin --rounds 3

On a machine other work shares, wall-clock times measure the others as much as
fastrnn; the CPU time of the calling thread (time.thread_time: on one thread
BLAS runs in it) does not count the time other processes hold the core. Each
round starts one process per backend, in alternating order, which times the
bench's call of every case (warmed up, then `--calls` calls, best kept). Prints
each backend's best time over the rounds, the first backend's speedup over the
second (the ratio of those bests) and the ratio in each round.
"""

import argparse
import subprocess
import sys


def time_in_this_process(backend, cases, calls):
    """Prints `case best_seconds` for each case, for `backend` on one thread."""
    import time

    from fastrnn.bench import cases as bench_cases, runners

    for name in cases:
        call = runners.fastrnn_runner(backend, bench_cases.case_by_name(name), 1, 0)
        runners.limit_threads(1)   # again: the call loaded the BLAS libraries
        for _ in range(3):
            call()
        times = []
        for _ in range(calls):
            start = time.thread_time()
            call()
            times.append(time.thread_time() - start)
        print(name, min(times), flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="numba,numpy")
    parser.add_argument("--cases", required=True, help="comma-separated bench case names")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--child", help=argparse.SUPPRESS)   # the backend a child times
    args = parser.parse_args(argv)
    cases = args.cases.split(",")
    if args.child:
        time_in_this_process(args.child, cases, args.calls)
        return
    first, second = args.backends.split(",")
    best = {(case, backend): [] for case in cases for backend in (first, second)}
    for round_ in range(args.rounds):
        for backend in (first, second) if round_ % 2 == 0 else (second, first):
            out = subprocess.run(
                [sys.executable, __file__, "--child", backend, "--cases", args.cases,
                 "--calls", str(args.calls)], capture_output=True, text=True, check=True)
            for line in out.stdout.splitlines():
                case, seconds = line.split()
                best[(case, backend)].append(float(seconds))
    for case in cases:
        a, b = best[(case, first)], best[(case, second)]
        rounds = ", ".join(f"{y / x:.2f}" for x, y in zip(a, b))
        print(f"{case:24s} {first} {min(a) * 1e3:9.2f} ms  {second} {min(b) * 1e3:9.2f} ms  "
              f"{first} {min(b) / min(a):.2f}x faster (rounds: {rounds})")


if __name__ == "__main__":
    main()
