"""Side-by-side timings for the cpp backend vs torch and the NumPy reference (interleaved, medians).

usage: python scripts/bench_cpp.py [--threads N] [--reps R] [cases...]
cases: origin_lstm origin_rnn medium_lstm large_lstm infer1
"""
import argparse
import os
import subprocess
import sys
import statistics
import time

import numpy as np
import torch

import fastrnn._core as core
from fastrnn import _reference as ref

p = argparse.ArgumentParser()
p.add_argument("--threads", type=int, default=2)
p.add_argument("--reps", type=int, default=15)
p.add_argument("--no-numpy", action="store_true", help="leave the NumPy reference out of the race")
p.add_argument("cases", nargs="*", default=["origin_lstm", "origin_rnn", "medium_lstm", "infer1"])
args = p.parse_args()
core.set_num_threads(args.threads)
torch.set_num_threads(args.threads)


class Adam:
    def __init__(self, params, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8):
        self.p, self.lr, self.b1, self.b2, self.eps = params, lr, b1, b2, eps
        self.m = [np.zeros_like(x) for x in params]
        self.v = [np.zeros_like(x) for x in params]
        self.t = 0

    def step(self, grads):
        self.t += 1
        c1 = 1 - self.b1 ** self.t
        c2 = 1 - self.b2 ** self.t
        for p, g, m, v in zip(self.p, grads, self.m, self.v):
            m *= self.b1
            m += (1 - self.b1) * g
            v *= self.b2
            v += (1 - self.b2) * g * g
            p -= self.lr * (m / c1) / (np.sqrt(v / c2) + self.eps)


def make_np_step(backend, cell, T, B, I, H, C=10):
    rng = np.random.default_rng(0)
    G = 4 if cell == "lstm" else 1
    k = 1 / np.sqrt(H)
    w_ih = rng.uniform(-k, k, (G * H, I)).astype(np.float32)
    w_hh = rng.uniform(-k, k, (G * H, H)).astype(np.float32)
    b_ih = rng.uniform(-k, k, G * H).astype(np.float32)
    b_hh = rng.uniform(-k, k, G * H).astype(np.float32)
    fc_w = rng.uniform(-k, k, (C, H)).astype(np.float32)
    fc_b = np.zeros(C, np.float32)
    x = rng.random((B, T, I), dtype=np.float32)
    labels = rng.integers(0, C, B)
    opt = Adam([w_ih, w_hh, b_ih, b_hh, fc_w, fc_b])
    h0 = np.zeros((B, H), np.float32)

    def step():
        xt = np.ascontiguousarray(x.transpose(1, 0, 2))
        b = b_ih + b_hh
        if cell == "lstm":
            y, cT, saved = backend.lstm_forward(xt, h0, h0, w_ih, w_hh, b, True)
        else:
            y, saved = backend.rnn_forward(xt, h0, w_ih, w_hh, b, True)
        hT = y[-1]
        logits = hT @ fc_w.T + fc_b
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        prob = e / e.sum(axis=1, keepdims=True)
        dlogits = prob
        dlogits[np.arange(B), labels] -= 1
        dlogits /= B
        d_fc_w = dlogits.T @ hT
        d_fc_b = dlogits.sum(0)
        dhT = dlogits @ fc_w
        if cell == "lstm":
            _, _, _, dw_ih, dw_hh, db = backend.lstm_backward(
                saved, xt, h0, h0, w_ih, w_hh, y, None, dhT, np.zeros_like(dhT), False)
        else:
            _, _, dw_ih, dw_hh, db = backend.rnn_backward(
                saved, xt, h0, w_ih, w_hh, y, None, dhT, False)
        opt.step([dw_ih, dw_hh, db, db, d_fc_w, d_fc_b])
    return step


def make_torch_step(cell, T, B, I, H, C=10):
    torch.manual_seed(0)
    rnn = (torch.nn.LSTM if cell == "lstm" else torch.nn.RNN)(I, H, batch_first=True)
    fc = torch.nn.Linear(H, C)
    opt = torch.optim.Adam(list(rnn.parameters()) + list(fc.parameters()))
    x = torch.rand(B, T, I)
    y = torch.randint(0, C, (B,))

    def step():
        opt.zero_grad()
        out, _ = rnn(x)
        loss = torch.nn.functional.cross_entropy(fc(out[:, -1]), y)
        loss.backward()
        opt.step()
    return step


def make_fwbw(backend, T, B, I, H):
    rng = np.random.default_rng(0)
    k = 1 / np.sqrt(H)
    w_ih = rng.uniform(-k, k, (4 * H, I)).astype(np.float32)
    w_hh = rng.uniform(-k, k, (4 * H, H)).astype(np.float32)
    b = rng.uniform(-k, k, 4 * H).astype(np.float32)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    h0 = np.zeros((B, H), np.float32)
    dy = rng.standard_normal((T, B, H)).astype(np.float32)

    def step():
        y, cT, saved = backend.lstm_forward(x, h0, h0, w_ih, w_hh, b, True)
        backend.lstm_backward(saved, x, h0, h0, w_ih, w_hh, y, dy, h0, h0, False)
    return step


def make_torch_fwbw(T, B, I, H):
    rnn = torch.nn.LSTM(I, H)
    x = torch.randn(T, B, I)
    dy = torch.randn(T, B, H)

    def step():
        rnn.zero_grad()
        out, _ = rnn(x)
        out.backward(dy)
    return step


def make_infer(T, I, H):
    rng = np.random.default_rng(0)
    k = 1 / np.sqrt(H)
    w_ih = rng.uniform(-k, k, (4 * H, I)).astype(np.float32)
    w_hh = rng.uniform(-k, k, (4 * H, H)).astype(np.float32)
    b = rng.uniform(-k, k, 4 * H).astype(np.float32)
    x = rng.standard_normal((T, 1, I)).astype(np.float32)
    h0 = np.zeros((1, H), np.float32)
    return lambda: core.lstm_forward(x, h0, h0, w_ih, w_hh, b, False)


def make_torch_infer(T, I, H):
    rnn = torch.nn.LSTM(I, H)
    x = torch.randn(T, 1, I)

    def step():
        with torch.no_grad():
            rnn(x)
    return step


def make_ort_infer(T, I, H):
    import io
    import onnxruntime as ort
    rnn = torch.nn.LSTM(I, H)
    x = torch.randn(T, 1, I)
    f = io.BytesIO()
    torch.onnx.export(rnn, (x,), f, input_names=["x"], dynamo=False)
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    sess = ort.InferenceSession(f.getvalue(), so, providers=["CPUExecutionProvider"])
    xn = x.numpy()
    return lambda: sess.run(None, {"x": xn})


def race(named, reps, inner=1):
    times = {n: [] for n in named}
    for fn in named.values():
        for _ in range(2):
            fn()
    for _ in range(reps):
        for n, fn in named.items():
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            times[n].append((time.perf_counter() - t0) / inner)
    return {n: statistics.median(v) for n, v in times.items()}


def report(case, med, base="cpp", extra=""):
    parts = [f"{n} {v * 1e3:.3f} ms" for n, v in med.items()]
    ratios = [f"{n}/cpp {med[n] / med[base]:.2f}x" for n in med if n != base]
    print(f"{case} [{args.threads} thr]: " + ", ".join(parts) + " | " + ", ".join(ratios) + extra,
          flush=True)


for case in args.cases:
    if case in ("origin_lstm", "origin_rnn"):
        cell = case.split("_")[1]
        shape = (28, 100, 28, 128)
        named = {"cpp": make_np_step(core, cell, *shape), "torch": make_torch_step(cell, *shape)}
        if not args.no_numpy:
            named["numpy"] = make_np_step(ref, cell, *shape)
        med = race(named, args.reps)
        report(case, med)
    elif case == "medium_lstm":
        shape = (64, 128, 64, 256)
        med = race({"cpp": make_np_step(core, "lstm", *shape),
                    "torch": make_torch_step("lstm", *shape)}, args.reps)
        report(case, med)
    elif case == "large_lstm":
        T, B, I, H = 100, 256, 128, 512
        flops = 3 * 2 * T * B * (I + H) * 4 * H
        sgemm = []

        def numpy_sgemm():
            env = {k: v for k, v in os.environ.items()
                   if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
            env["OPENBLAS_NUM_THREADS"] = str(args.threads)
            code = ("import numpy as np, time\n"
                    "a = np.random.rand(2048, 2048).astype(np.float32); a @ a\n"
                    "ts = []\n"
                    "for _ in range(5):\n"
                    "    t = time.perf_counter(); a @ a; ts.append(time.perf_counter() - t)\n"
                    "print(2 * 2048**3 / sorted(ts)[2] / 1e9)")
            out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                 text=True, check=True)
            sgemm.append(float(out.stdout))
        med = race({"cpp": make_fwbw(core, T, B, I, H), "torch": make_torch_fwbw(T, B, I, H),
                    "sgemm": numpy_sgemm}, max(3, args.reps // 3))
        del med["sgemm"]
        rate = flops / med["cpp"] / 1e9
        peak = statistics.median(sgemm)
        report(case, med, extra=f" | cpp {rate:.1f} GFLOP/s, numpy sgemm {peak:.1f} GFLOP/s, "
                                f"{100 * rate / peak:.0f}% of it")
    elif case == "infer1":
        T, I, H = 28, 28, 128
        named = {"cpp": make_infer(T, I, H), "torch": make_torch_infer(T, I, H)}
        try:
            named["ort"] = make_ort_infer(T, I, H)
        except Exception as exc:  # noqa: BLE001
            print("ort unavailable:", exc)
        med = race(named, args.reps, inner=50)
        report(case, med)
