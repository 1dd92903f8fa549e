"""A model (not a measurement) of data-parallel fastrnn training across machines.

    python scripts/distributed_scaling.py --step-ms 18.5 --batch 100

Per step every node computes its B/N rows, then the nodes sum the gradients
in one ring Allreduce; fastrnn does not overlap the two, so

    step time       = compute(B/N) + allreduce(N)
    compute(b)      = b * step_ms / batch           (linear in the rows: the
                      measured step time of one node at `batch` rows)
    allreduce(N)    = 2 (N - 1) * latency + 2 (N - 1) / N * S / bandwidth
    efficiency      = compute(B/N) / step time      (speed-up over one node / N)

with S the bytes of the gradient buffer (float32, every parameter once). The
global batch below which efficiency falls under 90% is where compute(B/N) =
9 * allreduce(N), rounded up to whole rows per node. Prints a Markdown table for the links and node counts given.
"""

import argparse
import math

import fastrnn

# (name, bits per second, latency per message in seconds): assumed, typical values.
LINKS = [("10 Gb/s Ethernet", 10e9, 20e-6), ("100 Gb/s InfiniBand", 100e9, 2e-6)]


def ring_allreduce_seconds(nodes, size_bytes, bits_per_second, latency):
    if nodes == 1:
        return 0.0
    steps = 2 * (nodes - 1)   # reduce-scatter, then allgather, one chunk a step
    return steps * latency + steps / nodes * size_bytes * 8 / bits_per_second


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--step-ms", type=float, default=18.5,
                        help="measured time of one training step on one node (18.5 ms: "
                             "54.1 steps/s of `fastrnn train` on 2 threads, README)")
    parser.add_argument("--batch", type=int, default=100, help="rows of that step (100)")
    parser.add_argument("--global-batch", type=int, nargs="+", default=[128, 1024, 8192])
    parser.add_argument("--nodes", type=int, nargs="+", default=[2, 8, 32])
    parser.add_argument("--hidden", type=int, default=128)
    args = parser.parse_args()

    model = fastrnn.SequenceClassifier(28, args.hidden, 10, seed=0)
    count = sum(p.size for p in model.parameters().values())
    size = 4 * count
    row_seconds = args.step_ms / 1e3 / args.batch
    print("A model, not a measurement (see the top of this script for its assumptions).")
    print(f"LSTM I=28 H={args.hidden}, 10 classes: {count:,} parameters, {size:,} bytes "
          f"summed per step; compute {row_seconds * 1e3:.3f} ms per row on one node\n")
    header = ["link", "nodes", "allreduce", "bytes sent per node"]
    header += [f"efficiency at B={batch:,}" for batch in args.global_batch]
    header += ["B for 90%"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, bandwidth, latency in LINKS:
        for nodes in args.nodes:
            reduce = ring_allreduce_seconds(nodes, size, bandwidth, latency)
            cells = [name, str(nodes), f"{reduce * 1e3:.3f} ms",
                     f"{2 * (nodes - 1) / nodes * size:,.0f}"]
            for batch in args.global_batch:
                compute = batch / nodes * row_seconds
                cells.append(f"{100 * compute / (compute + reduce):.0f}%")
            cells.append(f"{nodes * math.ceil(9 * reduce / row_seconds):,}")
            print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
