"""Timing primitives shared by both modes: blocks of calls, rivals taking turns, the peak.

A block is about `block_seconds` of calls of one rival (1 to 100 calls, as
many as the median call of its last block fits), each timed alone; a rival
faster than the block first gets one untimed call, which wakes its library's
thread pool after the pause before the block. The rivals
take turns a block at a time, the order rotating each round, so a change in
the machine's load during the run falls on every rival alike.

What peak means: the rate of one 2048x2048x2048 float32 matrix product in
NumPy (its OpenBLAS), measured in a fresh subprocess with the same thread
count and without OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE, so OpenBLAS picks
this CPU's best kernels; median of several runs. It is what a good SGEMM
achieves here, not the CPU's theoretical peak. The bf16 cases are held to the
bf16 peak instead: the same product in torch.bfloat16 (oneDNN, which takes
AMX, AVX512_BF16 or neither, as the CPU has), measured the same way.
"""

import importlib.util
import json
import os
import subprocess
import sys
import time

import numpy as np

PEAK_MEANING = (
    "peak = median rate of a {n}^3 float32 numpy matmul ({blas}) in a subprocess "
    "with the same threads and without OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE.")
BF16_PEAK_MEANING = (
    "% peak of a bf16 case = of the bf16 peak: median rate of a {n}^3 torch.bfloat16 "
    "matmul ({library}) in a subprocess with the same threads.")


def one_call_seconds(run):
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


class Blocks:
    """Blocks of one runner's calls, each sized from the median call of the block before."""

    def __init__(self, run):
        self.run = run
        self.per_call = one_call_seconds(run)

    def time(self, block_seconds):
        times = time_block(self.run, self.per_call, block_seconds)
        self.per_call = float(np.median(times))
        return times


def time_block(run, per_call, block_seconds):
    """Seconds of each call in one block of about `block_seconds` (1 to 100 calls)."""
    calls = max(1, min(100, int(block_seconds / max(per_call, 1e-9))))
    if per_call < block_seconds:
        run()
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return times


def take_turns(time_one_block, keys, budget, min_rounds, pause):
    """{key: [seconds of each timed call]}: blocks of every key in turn, rotating.

    `time_one_block(key)` times one block and returns its calls' seconds.
    Rounds run until `budget` seconds have passed and at least `min_rounds`
    are done; a pause of `pause` seconds follows each block.
    """
    samples = {key: [] for key in keys}
    start, rounds = time.perf_counter(), 0
    while rounds < min_rounds or time.perf_counter() - start < budget:
        shift = rounds % len(keys)
        for key in keys[shift:] + keys[:shift]:
            samples[key].extend(time_one_block(key))
            time.sleep(pause)
        rounds += 1
    return samples


def usable_cpus():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def machine_load():
    """The 1-minute load average (None where the OS does not tell)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


# The child's timing of a @ b, after its set-up has made a, b and `facts`.
_TIME_PRODUCT = r"""
a @ b
times = []
for _ in range(repeats):
    start = time.perf_counter()
    a @ b
    times.append(time.perf_counter() - start)
print(json.dumps({"times": times, **facts}))
"""

PEAK_SCRIPT = r"""
import json, sys, time
import numpy as np
threads, n, repeats = (int(v) for v in sys.argv[1:4])
blas = None
try:
    from threadpoolctl import threadpool_info, threadpool_limits
except ImportError:
    limiter = None
else:
    limiter = threadpool_limits(limits=threads, user_api="blas")
    blas = [{k: lib.get(k) for k in ("internal_api", "version", "architecture",
                                     "num_threads", "threading_layer")}
            for lib in threadpool_info() if lib.get("user_api") == "blas"]
rng = np.random.default_rng(0)
a = rng.standard_normal((n, n), dtype=np.float32)
b = rng.standard_normal((n, n), dtype=np.float32)
facts = {"blas": blas}
""" + _TIME_PRODUCT

BF16_PEAK_SCRIPT = r"""
import json, sys, time
import torch
threads, n, repeats = (int(v) for v in sys.argv[1:4])
torch.set_num_threads(threads)
torch.manual_seed(0)
a = torch.randn(n, n).to(torch.bfloat16)
b = torch.randn(n, n).to(torch.bfloat16)
facts = {"library": f"torch {torch.__version__}, oneDNN"}
""" + _TIME_PRODUCT


def _time_product(script, what, threads, size, repeats, timeout, env=None):
    """Run a peak script in a fresh subprocess: its JSON, and the GFLOP/s of its median."""
    try:
        done = subprocess.run([sys.executable, "-c", script, str(threads), str(size),
                               str(repeats)], env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        raise OSError(f"the {what} peak measurement took over {timeout} s") from None
    if done.returncode != 0:
        raise OSError(f"the {what} peak measurement failed: {done.stderr.strip()[-500:]}")
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    return measured, 2.0 * size ** 3 / float(np.median(measured["times"])) / 1e9


def measure_peak(threads, size=2048, repeats=5, timeout=300):
    """SGEMM rate of numpy's BLAS here, measured in a fresh subprocess.

    OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are removed from the child's
    environment so OpenBLAS picks its kernels for this CPU; its threads are
    set to `threads`. Returns a dict: gflops (median), times, size, kernel
    (OpenBLAS' architecture from threadpoolctl, or "unknown"), blas.
    """
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    env["OPENBLAS_NUM_THREADS"] = str(threads)
    measured, gflops = _time_product(PEAK_SCRIPT, "SGEMM", threads, size, repeats, timeout, env)
    blas = measured["blas"]
    kernel = "unknown"
    if blas:
        kernel = ", ".join(str(lib.get("architecture") or lib.get("internal_api"))
                           for lib in blas)
    return {"gflops": gflops, "times": measured["times"],
            "size": size, "threads": threads, "kernel": kernel, "blas": blas}


def measure_bf16_peak(threads, size=2048, repeats=5, timeout=300):
    """bfloat16 GEMM rate of torch here (oneDNN), measured in a fresh subprocess; None
    without torch. A dict: gflops (median), times, size, threads, library."""
    if importlib.util.find_spec("torch") is None:
        return None
    measured, gflops = _time_product(BF16_PEAK_SCRIPT, "bf16", threads, size, repeats, timeout)
    return {"gflops": gflops, "times": measured["times"],
            "size": size, "threads": threads, "library": measured["library"]}
