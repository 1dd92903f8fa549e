"""fastrnn's kernels and torch's threads in one process: a training step side by side.

    python scripts/torch_threads.py [--cell lstm] [--rounds 15] [--steps 20] [--threads 2]

The model is the origin's (T=28, B=100, I=28, H=128) with a torch front end (Linear +
ReLU on every step) and head (Linear on the last output, cross-entropy), one Adam step;
`+op` runs a small torch operator before each step (a 512x512 Linear's forward and
backward), as a model's other parts do. Three ways run in alternating rounds, so that
the machine's other load falls on each alike:

    torch.nn       the model with torch.nn's module
    own pool       fastrnn.torch, fastrnn's kernels on fastrnn's own thread pool
    shared team    fastrnn.torch, the kernels' jobs on torch's OpenMP team (the default)

Prints, for each, the median over rounds of each round's median step time and the
spread (min and max of the round medians), and the CPU time the process spent per step
(every thread's, spinning included): on a machine busy with other work the wall times
say little, the CPU time per step still shows threads burning cores while they wait.
"""

import argparse
import time

import numpy as np
import torch

import fastrnn
import fastrnn.torch
from fastrnn import _backends
from fastrnn.torch import _threads

T, B, I, H = 28, 100, 28, 128


def make_model(cell, kind):
    torch.manual_seed(0)
    module = getattr(torch.nn if kind == "torch.nn" else fastrnn.torch, cell.upper())
    rnn = module(I, H, batch_first=True)
    front, head = torch.nn.Linear(I, I), torch.nn.Linear(H, 10)
    model = torch.nn.ModuleList([front, rnn, head])
    return model, torch.optim.Adam(model.parameters(), lr=1e-3)


def training_step(model, optimizer, x, labels):
    front, rnn, head = model
    optimizer.zero_grad()
    y, _ = rnn(torch.relu(front(x)))
    torch.nn.functional.cross_entropy(head(y[:, -1]), labels).backward()
    optimizer.step()


def use_team(shared):
    core = _backends.compiled_module()
    if shared:
        _threads.share_torch_openmp.cache_clear()
        assert _threads.share_torch_openmp(), "torch's OpenMP runtime was not found"
    else:
        core._use_openmp_runtime(0, 0, 0)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--cell", choices=["lstm", "gru", "rnn"], default="lstm")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    fastrnn.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(B, T, I, generator=gen)
    labels = torch.randint(0, 10, (B,), generator=gen)
    other = torch.nn.Linear(512, 512)
    other_input = torch.randn(512, 512, generator=gen)

    def other_op():
        other(other_input).square().mean().backward()

    ways = {"torch.nn": make_model(args.cell, "torch.nn"),
            "own pool": make_model(args.cell, "fastrnn"),
            "shared team": make_model(args.cell, "fastrnn")}
    medians = {(way, op): [] for way in ways for op in (False, True)}
    cpu = {key: [] for key in medians}
    for _ in range(args.rounds):
        for way, (model, optimizer) in ways.items():
            use_team(way == "shared team")
            for op in (False, True):
                training_step(model, optimizer, x, labels)   # warm
                times, cpu_times = [], []
                for _ in range(args.steps):
                    if op:
                        other_op()
                    start, cpu_start = time.perf_counter(), time.process_time()
                    training_step(model, optimizer, x, labels)
                    times.append(time.perf_counter() - start)
                    cpu_times.append(time.process_time() - cpu_start)
                medians[way, op].append(np.median(times) * 1e3)
                cpu[way, op].append(np.median(cpu_times) * 1e3)
    print(f"{args.cell}, T={T} B={B} I={I} H={H}, {args.threads} threads, "
          f"{args.rounds} rounds of {args.steps} steps: ms per training step, median of "
          f"round medians [min, max]; CPU ms per step, likewise")
    for (way, op), values in medians.items():
        print(f"  {way:12s} {'+op' if op else '   '}  {np.median(values):7.2f}  "
              f"[{min(values):.2f}, {max(values):.2f}]    CPU {np.median(cpu[way, op]):7.2f}  "
              f"[{min(cpu[way, op]):.2f}, {max(cpu[way, op]):.2f}]")


if __name__ == "__main__":
    main()
