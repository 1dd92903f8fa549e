"""Where a fastrnn.torch training step's time goes, beside torch.nn's step, in one process.

    python scripts/torch_step_parts.py [--case lstm-train-origin] [--threads 2]
                                       [--rounds 9] [--steps 20]

The case is a `fastrnn bench` training case (its model: the recurrent module, a Linear
head on the last layer's final state, cross-entropy, torch.optim.Adam; a lengths case
goes in as a PackedSequence). Five ways take turns, round after round, so that the
machine's other load falls on each alike:

    torch.nn        the step with torch.nn's module
    fastrnn.torch   the step with fastrnn.torch's module
    no kernels      fastrnn.torch's step with the kernels replayed (each returns its
                    last outputs at once): everything around the kernels
    torch only      fastrnn.torch's step with the recurrence replaced by a stand-in
                    whose outputs cost a few tiny torch operators on the parameters:
                    what the head, the loss, autograd and Adam cost by themselves
    numpy world     fastrnn's own model of the case (`fastrnn bench`'s cpp rival: its
                    head, loss and Adam in C++), in this process

The kernels' share of the fastrnn.torch and numpy-world steps is timed inside them (the
wall time of the forward and backward kernel calls).
Prints each one's median over rounds of the round's median wall time per step, the
spread of the round medians, and the process's CPU time per step (every thread's,
spinning included); then, by wall time and by CPU time (with one thread, the figure a
loaded machine disturbs least; the kernels' CPU is the calling thread's),
torch.nn / fastrnn.torch, and torch.nn / (kernels + torch only): the ratio a module with
these kernels and no cost of its own would reach beside torch's head, loss and Adam.
"""

import argparse
import time

import numpy as np
import torch

from fastrnn import _backends
from fastrnn.bench.cases import case_by_name
from fastrnn.bench.runners import limit_threads, make_runner
from fastrnn.cells import CELLS, KERNELS
from fastrnn.torch import _ops


class KernelClock:
    """Stands in for a stack's kernel: runs it and adds up its wall time, or (replay)
    returns the outputs it last gave for arguments of the same shapes."""

    def __init__(self, kernel):
        self.kernel, self.replay, self.outputs = kernel, False, {}
        self.seconds = self.cpu_seconds = 0.0

    def __call__(self, *args, **kwargs):
        key = tuple(getattr(a, "shape", None) for a in args) + tuple(kwargs)
        if self.replay and key in self.outputs:
            return self.outputs[key]
        start, cpu_start = time.perf_counter(), time.thread_time()
        outputs = self.kernel(*args, **kwargs)
        self.seconds += time.perf_counter() - start
        self.cpu_seconds += time.thread_time() - cpu_start
        self.outputs[key] = outputs
        return outputs


def clock_kernels(case):
    """KernelClocks in place of the compiled backend's kernels of the case's cell (before
    any stack takes them: fastrnn.torch's and the numpy world's both run them)."""
    core = _backends.compiled_module()
    kernel = CELLS[case.cell].kernels["tanh"]
    clocks = []
    for stage in ("forward", "backward"):
        clock = KernelClock(getattr(core, f"{kernel}_{stage}"))
        setattr(core, f"{kernel}_{stage}", clock)
        clocks.append(clock)
    return clocks


def stand_in_recurrent(kernel, x, states, weights, batch_sizes, num_layers, bidirectional,
                       bias, dropout, precision="fp32"):
    """_ops.recurrent's outputs in shape, at the cost of a few tiny operators that give
    every parameter a gradient."""
    H = weights[1].shape[1]
    D = 2 if bidirectional else 1
    B = int(batch_sizes[0]) if batch_sizes is not None else x.shape[1]
    touch = sum(w[:1].sum() for w in weights) * 0.0
    y = x.new_zeros(x.shape[:-1] + (D * H,))
    finals = tuple(x.new_zeros((num_layers * D, B, H)) + touch
                   for _ in KERNELS[kernel].states)
    return y, finals


def timed_round(run, steps):
    """(median wall seconds per step, CPU seconds per step) over `steps` steps."""
    run()
    times = []
    cpu_start = time.process_time()
    for _ in range(steps):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), (time.process_time() - cpu_start) / steps


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--case", default="lstm-train-origin")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--steps", type=int, default=20)
    args = p.parse_args()
    case = case_by_name(args.case)
    if case.mode != "train":
        raise SystemExit("--case: a training case (cell-train-shape[-variant])")
    clocks = clock_kernels(case)
    torch_step = make_runner("torch", case, args.threads)
    fastrnn_step = make_runner("fastrnn.torch", case, args.threads)
    numpy_step = make_runner("cpp", case, args.threads)
    for step in (torch_step, fastrnn_step, numpy_step):
        step()
    # after the runners loaded what they use: the numba backend, loaded to list the
    # backends, sets the OpenMP threads of the process (torch's too) to fastrnn's count
    limit_threads(args.threads)
    real_recurrent = _ops.recurrent

    def way(replay=False, stand_in=False):
        def run():
            for clock in clocks:
                clock.replay = replay
            _ops.recurrent = stand_in_recurrent if stand_in else real_recurrent
            try:
                fastrnn_step()
            finally:
                _ops.recurrent = real_recurrent
        return run

    ways = {"torch.nn": torch_step, "fastrnn.torch": way(), "no kernels": way(replay=True),
            "torch only": way(stand_in=True), "numpy world": numpy_step}
    wall = {name: [] for name in ways}
    cpu = {name: [] for name in ways}
    kernel_share = {"fastrnn.torch": [], "numpy world": []}
    for _ in range(args.rounds):
        for name, run in ways.items():
            for clock in clocks:
                clock.seconds = clock.cpu_seconds = 0.0
            median, cpu_per_step = timed_round(run, args.steps)
            wall[name].append(median)
            cpu[name].append(cpu_per_step)
            if name in kernel_share:
                kernel_share[name].append([sum(c.seconds for c in clocks) / (args.steps + 1),
                                           sum(c.cpu_seconds for c in clocks) / (args.steps + 1)])
    med = {name: np.median(values) * 1e3 for name, values in wall.items()}
    print(f"{case.name}, {args.threads} threads, {args.rounds} rounds of {args.steps} steps: "
          f"ms per step, median of round medians [min, max]; CPU ms per step")
    for name in ways:
        print(f"  {name:14s} {med[name]:8.2f}  [{min(wall[name]) * 1e3:.2f}, "
              f"{max(wall[name]) * 1e3:.2f}]   CPU {np.median(cpu[name]) * 1e3:8.2f}")
    for name, shares in kernel_share.items():
        shares = np.median(shares, axis=0) * 1e3
        print(f"  {name}'s kernels (inside its step): {shares[0]:.2f} ms, calling thread's "
              f"CPU {shares[1]:.2f} ms (means per step, medians over rounds)")
    kernels = np.median(kernel_share["fastrnn.torch"], axis=0) * 1e3
    cpu_med = {name: np.median(values) * 1e3 for name, values in cpu.items()}
    for what, times, kernel_time in (("wall", med, kernels[0]), ("CPU", cpu_med, kernels[1])):
        print(f"  by {what} time: torch.nn / fastrnn.torch "
              f"{times['torch.nn'] / times['fastrnn.torch']:.2f}x; torch.nn / (kernels + "
              f"torch only) {times['torch.nn'] / (kernel_time + times['torch only']):.2f}x; "
              f"torch.nn / numpy world {times['torch.nn'] / times['numpy world']:.2f}x")


if __name__ == "__main__":
    main()
