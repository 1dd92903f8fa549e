"""Time this install of fastrnn against another one, side by side, taking turns.

    python scripts/compare_builds.py --other /path/to/other/venv/bin/python \
        --cases lstm-train-origin,gru-inference-medium --threads 2 --seconds 20

Each build serves one rival (`--rival`, default cpp) in its own process, with
`fastrnn bench`'s isolated protocol (fastrnn/bench/isolated.py); the two
processes time blocks of calls in turn, so a change in the machine's load falls
on both alike. For each case it prints both builds' best, 10th-percentile and
median call, and this build's time as a fraction of the other's (below 1:
this build is faster). Run it on an idle machine and read differences smaller
than the spread of repeated runs as noise.
"""

import argparse
import sys
import tempfile

import numpy as np

from fastrnn.bench.isolated import Child, child_command
from fastrnn.bench.timing import take_turns


def serving_command(python, rival, cases, threads):
    return [python] + child_command(rival, cases, threads)[1:]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--other", required=True, help="the other build's python")
    parser.add_argument("--cases", required=True, help="comma-separated `fastrnn bench` cases")
    parser.add_argument("--rival", default="cpp", help="the backend both builds serve")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=20.0, help="time budget per case")
    parser.add_argument("--block", type=float, default=0.3, help="seconds of calls per block")
    args = parser.parse_args(argv)
    cases = args.cases.split(",")
    builds = {"this": sys.executable, "other": args.other}
    with tempfile.TemporaryDirectory(prefix="fastrnn-compare-") as workdir:
        children = {}
        try:
            for name, python in builds.items():
                child = Child(name, serving_command(python, args.rival, cases, args.threads),
                              workdir)
                children[name] = child
                ready = set(child.receive()["ready"])
                missing = [case for case in cases if case not in ready]
                if missing:
                    sys.exit(f"the {name} build cannot run {missing}")
            print(f"{'case':36} {'build':6} {'best us':>10} {'p10 us':>10} {'median us':>10}")
            for case in cases:
                keys = [(case, name) for name in builds]
                samples = take_turns(lambda key: children[key[1]].request(key[0], args.block),
                                     keys, args.seconds, 3, 0.15)
                stats = {}
                for _, name in keys:
                    times = np.array(samples[(case, name)]) * 1e6
                    stats[name] = (times.min(), np.percentile(times, 10), np.median(times))
                    print(f"{case:36} {name:6} {stats[name][0]:10.1f} {stats[name][1]:10.1f} "
                          f"{stats[name][2]:10.1f}")
                ratios = [this / other for this, other in zip(stats["this"], stats["other"])]
                print(f"{case:36} {'ratio':6} {ratios[0]:10.3f} {ratios[1]:10.3f} "
                      f"{ratios[2]:10.3f}", flush=True)
        finally:
            for child in children.values():
                child.close()


if __name__ == "__main__":
    main()
