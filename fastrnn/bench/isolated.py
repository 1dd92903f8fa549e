"""The isolated mode, `fastrnn bench`'s default: each rival in its own process, taking turns.

The parent starts one serving child per rival, one at a time (their warm-ups
must not overlap either):

    python -m fastrnn.bench --serve --rivals NAME --cases NAME,... --threads N

A child builds and warms its runners, then prints one JSON line

    {"ready": [case names], "skipped": [{"case", "rival", "reason", "failed"}],
     "outputs": {case name: summary of the warm-up call's output}}

and answers each request line {"case": name, "block_seconds": s} with
{"times": [seconds of each timed call]}, until its input ends. The parent asks
the children for blocks in turn (timing.take_turns), each block followed by
a pause longer than the libraries' thread pools spin before they sleep
(OpenBLAS's about 50 ms here), so the next rival has the cores to itself and
no two thread pools ever share a process. A child that fails skips its rival
on every case, with the last line of its stderr.
"""

import json
import os
import subprocess
import sys
import tempfile

from .cases import timing_groups
from .report import build_report, group_rows
from .runners import limit_threads, warmed_runner
from .timing import Blocks, machine_load, take_turns


def child_command(rival, case_names, threads):
    """The command serving `rival` alone on `case_names`."""
    return [sys.executable, "-m", "fastrnn.bench", "--serve", "--rivals", rival,
            "--cases", ",".join(case_names), "--threads", str(threads)]


def serve(cases, rival, threads, infile=None, outfile=None):
    """The child's side: warm up `rival` on `cases`, then time blocks on request."""
    infile = sys.stdin if infile is None else infile
    outfile = sys.stdout if outfile is None else outfile
    runners, outputs, skipped = {}, {}, []
    for case in cases:
        run, summary, skip = warmed_runner(rival, case, threads)
        if run is None:
            skipped.append({"case": case.name, "rival": rival, **skip})
        else:
            runners[case.name], outputs[case.name] = run, summary
    limit_threads(threads)
    blocks = {name: Blocks(run) for name, run in runners.items()}
    print(json.dumps({"ready": list(runners), "skipped": skipped, "outputs": outputs}),
          file=outfile, flush=True)
    for line in infile:
        request = json.loads(line)
        times = blocks[request["case"]].time(request["block_seconds"])
        print(json.dumps({"times": times}), file=outfile, flush=True)


class Child:
    """One rival's serving process; its stderr goes to a file, so it can never block."""

    def __init__(self, rival, command, workdir):
        self.rival = rival
        self.stderr = open(os.path.join(workdir, f"{rival}.stderr"), "w+")
        # cwd: not a source tree, whose fastrnn would shadow the installed one
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self.stderr, text=True, cwd=workdir)

    def receive(self):
        line = self.process.stdout.readline()
        if not line:
            raise OSError(self.failure())
        return json.loads(line)

    def request(self, case_name, block_seconds):
        self.process.stdin.write(json.dumps({"case": case_name, "block_seconds": block_seconds})
                                 + "\n")
        self.process.stdin.flush()
        return self.receive()["times"]

    def failure(self):
        code = self.process.wait()
        self.stderr.seek(0)
        lines = self.stderr.read().strip().splitlines()
        return f"failed in its own process (exit {code}): {lines[-1] if lines else 'no message'}"

    def close(self):
        try:
            self.process.stdin.close()  # end of input: the child returns
        except BrokenPipeError:
            pass
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()
        self.stderr.close()


class Servers:
    """The serving children, one per rival; use it in a `with` block, which ends them."""

    def __init__(self, threads, progress=None):
        self.threads = threads
        self.progress = progress
        self.children = {}      # rival -> Child
        self.ready = {}         # rival -> names of the cases it serves
        self.outputs = {}       # (case name, rival) -> summary of the warm-up output
        self.skipped = []
        self._workdir = tempfile.TemporaryDirectory(prefix="fastrnn-bench-")

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def start(self, rival, case_names):
        """Start `rival`'s child on `case_names` and wait until it is warm."""
        if self.progress:
            self.progress(f"starting {rival} in its own process ...")
        child = Child(rival, child_command(rival, case_names, self.threads), self._workdir.name)
        try:
            hello = child.receive()
        except OSError as exc:
            self.skipped.extend({"case": name, "rival": rival, "reason": str(exc), "failed": True}
                                for name in case_names)
            self.ready[rival] = set()
            child.close()
            return
        self.children[rival] = child
        self.ready[rival] = set(hello["ready"])
        self.outputs.update({(name, rival): output for name, output in hello["outputs"].items()})
        self.skipped.extend(hello["skipped"])

    def take_turns(self, case_names, budget, min_rounds, block_seconds=0.3, pause=0.15):
        """{(case name, rival): [seconds]}: every ready child's blocks of `case_names`, in turn."""
        keys = [(name, rival) for name in case_names for rival in self.children
                if name in self.ready[rival]]
        if not keys:
            return {}
        if self.progress:
            self.progress(f"timing {' and '.join(case_names)}: "
                          f"{', '.join(dict.fromkeys(rival for _, rival in keys))} in turns")
        return take_turns(lambda key: self.children[key[1]].request(key[0], block_seconds),
                          keys, budget, min_rounds, pause)

    def close(self):
        for child in self.children.values():
            child.close()
        self.children = {}
        self._workdir.cleanup()


def run_isolated(cases, rivals, threads, peak, budget=3.0, min_rounds=3, progress=None,
                 block_seconds=0.3, pause=0.15):
    """Time each rival in its own process, the processes taking turns; the report's dict."""
    load_at_start = machine_load()
    groups = timing_groups(cases)
    every_case = [case for group in groups for case in group]
    results = []
    with Servers(threads, progress) as servers:
        for rival in rivals:
            servers.start(rival, [case.name for case in every_case])
        for group in groups:
            samples = servers.take_turns([case.name for case in group], budget, min_rounds,
                                         block_seconds, pause)
            results.extend(group_rows(group, samples, peak))
    order = {case.name: n for n, case in enumerate(every_case)}
    skipped = sorted(servers.skipped, key=lambda skip: order.get(skip["case"], len(order)))
    return build_report("isolated", every_case, threads, peak, results, skipped, load_at_start)
