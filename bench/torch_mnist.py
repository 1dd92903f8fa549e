"""The origin experiment in PyTorch, as the wall-time peer of `fastrnn train`.

    python bench/torch_mnist.py [--cell lstm|gru|rnn] [--steps 5000] [--lr 0.01] [--clip NORM]
                                [--seed 0] [--threads N] [--fastrnn]

Same data (fastrnn.datasets.load_mnist), batch 100, Adam, forget bias 1.0 for
the LSTM, shuffled epochs; prints test accuracy, wall time and steps/s.
--fastrnn converts the model with fastrnn.torch.convert (the same weights, the
rest of the script unchanged): the same experiment with fastrnn's kernels inside.
"""

import argparse
import time

import numpy as np
import torch

from fastrnn.datasets import load_mnist


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--cell", choices=["lstm", "gru", "rnn"], default="lstm")
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--clip", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--fastrnn", action="store_true",
                   help="swap the recurrent module for fastrnn.torch's (fastrnn.torch.convert)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    x_train, y_train, x_test, y_test = load_mnist()
    H = 128
    rnn = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[args.cell](28, H, batch_first=True)
    if args.cell == "lstm":
        with torch.no_grad():
            rnn.bias_ih_l0[H:2 * H] += 1.0
    if args.fastrnn:
        import fastrnn.torch
        rnn = fastrnn.torch.convert(rnn)
    fc = torch.nn.Linear(H, 10)
    params = list(rnn.parameters()) + list(fc.parameters())
    opt = torch.optim.Adam(params, lr=args.lr)
    rng = np.random.default_rng(args.seed)
    order, pos = rng.permutation(len(x_train)), 0
    start = time.perf_counter()
    for _ in range(args.steps):
        if pos + 100 > len(order):
            order, pos = rng.permutation(len(x_train)), 0
        idx = order[pos:pos + 100]
        pos += 100
        xb, yb = torch.from_numpy(x_train[idx]), torch.from_numpy(y_train[idx])
        opt.zero_grad()
        out, _ = rnn(xb)
        loss = torch.nn.functional.cross_entropy(fc(out[:, -1]), yb)
        loss.backward()
        if args.clip:
            torch.nn.utils.clip_grad_norm_(params, args.clip)
        opt.step()
    seconds = time.perf_counter() - start
    with torch.no_grad():
        out, _ = rnn(torch.from_numpy(x_test))
        acc = (fc(out[:, -1]).argmax(1).numpy() == y_test).mean()
    print(f"{'fastrnn.torch' if args.fastrnn else 'torch'} {args.cell}: test accuracy {acc:.4f}, {args.steps} steps in {seconds:.1f} s "
          f"({args.steps / seconds:.1f} steps/s), threads {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
