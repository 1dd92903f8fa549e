"""precision bf16 against fp32: the compiled kernels' inference, training forward and
backward at the origin (T28 B100 I28 H128) and medium (T64 B128 I64 H256) shapes, both
precisions side by side in one process, taking turns; the best of each. On 2 threads.

    python scripts/bf16_side_by_side.py            # the kernel path fastrnn picks
    FASTRNN_ISA=avx512_bf16 python scripts/...     # vdpbf16ps on a CPU with AMX too
    FASTRNN_ISA=avx512 python scripts/...          # bf16 on the portable products
"""
import time

import numpy as np

from fastrnn import _core as core

core.set_num_threads(2)


def problem(cell, T, B, I, H):
    G = {"rnn": 1, "lstm": 4, "gru": 3}[cell]
    rng = np.random.default_rng(0)

    def uniform(*shape):
        return rng.uniform(-.1, .1, shape).astype(np.float32)

    return dict(x=rng.standard_normal((T, B, I)).astype(np.float32), h0=uniform(B, H),
                c0=uniform(B, H), w_ih=uniform(G * H, I), w_hh=uniform(G * H, H),
                b_ih=uniform(G * H), b_hh=uniform(G * H), dy=uniform(T, B, H),
                dh=uniform(B, H))


def states(cell, a, *names):
    return [a[name] for name in names[:2 if cell == "lstm" else 1]]


def fwd(cell, a, prec, training=True):
    return getattr(core, f"{cell}_forward")(a["x"], *states(cell, a, "h0", "c0"), a["w_ih"],
                                            a["w_hh"], a["b_ih"], a["b_hh"], training,
                                            precision=prec)


def bwd(cell, a, out, prec):
    return getattr(core, f"{cell}_backward")(out[-1], *states(cell, a, "h0", "c0"), a["w_ih"],
                                             a["w_hh"], out[0], a["dy"],
                                             *states(cell, a, "dh", "dh"), True,
                                             precision=prec)


def best(f, rounds):
    t = []
    for _ in range(rounds):
        t0 = time.perf_counter(); f(); t.append(time.perf_counter() - t0)
    return min(t)
print(core.build_info()["kernel_path"], core.build_info()["bf16_path"])
for name, shape in [("origin", (28, 100, 28, 128)), ("medium", (64, 128, 64, 256))]:
    T, B, I, H = shape
    for cell in ["lstm", "gru", "rnn"]:
        a = problem(cell, *shape)
        G = {"rnn": 1, "lstm": 4, "gru": 3}[cell]
        flops = 2.0 * T * B * (I + H) * G * H
        res = {}
        rounds = 30 if name == "origin" else 10
        for prec in ["fp32", "bf16"]:
            out = fwd(cell, a, prec)
            bwd(cell, a, out, prec)
        for r in range(2):   # alternate precisions
            for prec in ["fp32", "bf16"]:
                inf = best(lambda: fwd(cell, a, prec, False), rounds)
                out = fwd(cell, a, prec)
                tr_f = best(lambda: fwd(cell, a, prec), rounds)
                tr_b = best(lambda: bwd(cell, a, out, prec), rounds)
                old = res.get(prec, (9, 9, 9))
                res[prec] = tuple(min(x, y) for x, y in zip(old, (inf, tr_f, tr_b)))
        for prec in ["fp32", "bf16"]:
            inf, tf, tb = res[prec]
            print(f"{name:6s} {cell:4s} {prec}: inference {inf*1e3:7.3f} ms ({flops/inf/1e9:6.1f} GFLOP/s)  "
                  f"training forward {tf*1e3:7.3f} ms  backward {tb*1e3:7.3f} ms ({2*flops/tb/1e9:6.1f} GFLOP/s)")
        print(f"{name:6s} {cell:4s} bf16 speedup: inference {res['fp32'][0]/res['bf16'][0]:.2f}x  "
              f"forward {res['fp32'][1]/res['bf16'][1]:.2f}x  backward {res['fp32'][2]/res['bf16'][2]:.2f}x")
