"""The Python around a training step's kernels: SequenceClassifier.loss_and_grads with the
kernels' outputs replayed.

    python scripts/python_overhead.py                  # LSTM at the origin shape
    python scripts/python_overhead.py --cell rnn --repeats 9

Each compiled kernel the step calls (the cell's forward and backward, the classifier
head) runs once for real while its outputs are recorded; from then on it returns those
outputs at once, so what is left of a step is the Python and NumPy around the kernels:
argument checks, layouts, states, gradients. Prints the time per step (microseconds) of
each repeat, on this thread's CPU clock (what a loaded machine disturbs least: time
spent waiting for a core is not counted) and on the wall clock, with their min, median
and max: the minimum is the figure to compare, the spread says how far to trust it.
"""

import argparse
import statistics
import time

import numpy as np

import fastrnn
from fastrnn import _backends


class _Replayed:
    """A kernel that runs for real until `replay` is set, then returns its last outputs."""

    def __init__(self, kernel):
        self.kernel, self.replay, self.outputs, self.call = kernel, False, None, None

    def __call__(self, *args, **kwargs):
        if not self.replay:
            self.outputs = self.kernel(*args, **kwargs)
            self.call = (args, kwargs)
        return self.outputs


def stand_in_seconds(replayed, repeats=200000):
    """What calling the replayed kernels once each costs by itself (on the thread's
    clock): the stand-ins' share of a step, which is not Python around the kernels."""
    total = 0.0
    for kernel in replayed.values():
        if kernel.call is None:
            continue
        args, kwargs = kernel.call
        start = time.thread_time()
        for _ in range(repeats):
            kernel(*args, **kwargs)
        total += (time.thread_time() - start) / repeats
    return total


def replay_kernels(core, names):
    """Put a _Replayed in place of each of `names` in the compiled module."""
    replayed = {name: _Replayed(getattr(core, name)) for name in names if hasattr(core, name)}
    for name, kernel in replayed.items():
        setattr(core, name, kernel)
    return replayed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", default="lstm", choices=["lstm", "gru", "rnn"])
    parser.add_argument("--T", type=int, default=28)
    parser.add_argument("--B", type=int, default=100)
    parser.add_argument("--I", type=int, default=28)
    parser.add_argument("--H", type=int, default=128)
    parser.add_argument("--steps", type=int, default=2000, help="steps per repeat")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)

    core = _backends.compiled_module()
    if core is None:
        raise SystemExit("the compiled backend does not load here: nothing to measure")
    kernel = "rnn" if args.cell == "rnn" else args.cell
    # Before the model exists: a layer may look its kernels up once, when it is built.
    replayed = replay_kernels(core, [f"{kernel}_forward", f"{kernel}_backward",
                                     "classifier_head"])
    model = fastrnn.SequenceClassifier(args.I, args.H, 10, cell=args.cell, backend="cpp",
                                       seed=0)
    rng = np.random.default_rng(0)
    x = rng.random((args.B, args.T, args.I), dtype=np.float32)
    y = rng.integers(0, 10, args.B)
    model.loss_and_grads(x, y)          # the kernels run, their outputs are recorded
    for kernel in replayed.values():
        kernel.replay = True
    for _ in range(200):                # warm the caches and the allocator
        model.loss_and_grads(x, y)

    timings = {"cpu": [], "wall": []}
    for _ in range(args.repeats):
        wall, cpu = time.perf_counter(), time.thread_time()
        for _ in range(args.steps):
            model.loss_and_grads(x, y)
        timings["cpu"].append((time.thread_time() - cpu) / args.steps * 1e6)
        timings["wall"].append((time.perf_counter() - wall) / args.steps * 1e6)
    stand_ins = stand_in_seconds(replayed) * 1e6
    print(f"{args.cell} T={args.T} B={args.B} I={args.I} H={args.H}: Python around "
          f"the kernels of loss_and_grads, us per step, {args.repeats} repeats of "
          f"{args.steps} steps")
    for clock, per_step in timings.items():
        print(f"  {clock:4}  min {min(per_step):6.1f}  median {statistics.median(per_step):6.1f}"
              f"  max {max(per_step):6.1f}   ({' '.join(f'{t:.1f}' for t in per_step)})")
    print(f"  of which the stand-in kernel calls themselves: {stand_ins:.2f} us (cpu)")


if __name__ == "__main__":
    main()
