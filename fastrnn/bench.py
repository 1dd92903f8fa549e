"""`fastrnn bench`: how fast each backend is on this machine, next to its peers.

Rivals: every fastrnn backend that loads here (cpp, numba, numpy reference),
PyTorch (torch.nn.RNN / torch.nn.LSTM) and ONNX Runtime's RNN / LSTM
operators when they are installed. Modes:

    inference   forward over the whole sequence, no state kept for BPTT
    train       one training step: forward, Linear head + softmax
                cross-entropy on the last hidden state, BPTT, Adam
                (fastrnn.SequenceClassifier + fastrnn.optim.Adam, whose head and
                Adam update are compiled on the cpp rival only; torch the
                same with torch.optim.Adam); ONNX Runtime does not train
    latency     inference of a single sequence (B=1, T=28, I=28, H=128)

How the time is taken: all rivals of one case live in one process and run
in alternating blocks (one untimed call that wakes the library's thread pool,
then timed calls), the order rotating each round, with a short pause between
blocks so one library's spinning workers do not steal the next one's cores.
Every rival gets the same thread count (fastrnn.set_num_threads,
torch.set_num_threads, ONNX Runtime intra_op_num_threads, and threadpoolctl
for NumPy's BLAS). A report gives the median of the timed calls. With
--isolate each rival instead lives in its own subprocess, and the processes
take turns in the same alternating blocks, each block on request of the
parent while the others wait asleep, with a pause long enough for the last
one's thread pool to fall asleep too: no two libraries' thread pools then
share a process or compete for the cores, and a change in the machine's
load during the run falls on every rival alike.

How FLOPs are counted: only the matrix products. One forward time step of
a cell with G gates (1 RNN, 4 LSTM) multiplies [x_t, h_{t-1}] (B, I+H) by the
weights (I+H, G*H): 2*B*(I+H)*G*H floating point operations, so a forward is
T times that. BPTT does about twice the forward's products (the gradients
with respect to x_t and h_{t-1}, and those with respect to the weights, each
the size of the forward's), so a training step counts as 3x forward. The Linear head, the loss, Adam and
all elementwise work are left out, so the GFLOP/s are a slight underestimate.

What peak means: the rate of one 2048x2048x2048 float32 matrix product in
NumPy (its OpenBLAS), measured in a fresh subprocess with the same thread
count and without OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE, so OpenBLAS picks
this CPU's best kernels; median of several runs. It is what a good SGEMM
achieves here, not the CPU's theoretical peak.

Run `fastrnn bench --help` (or `python -m fastrnn.bench --help`).
"""

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections import namedtuple

import numpy as np

from . import _backends
from ._argtypes import positive_float, positive_int
from ._info import __version__

Shape = namedtuple("Shape", "T B I H")

SHAPES = {
    "origin": Shape(T=28, B=100, I=28, H=128),   # the original MNIST experiment
    "medium": Shape(T=64, B=128, I=64, H=256),
    "large": Shape(T=100, B=256, I=128, H=512),
    "tiny": Shape(T=3, B=2, I=4, H=5),            # for smoke checks, not for timing
}
LATENCY_SHAPE = Shape(T=28, B=1, I=28, H=128)
CELLS = ("rnn", "lstm")
MODES = ("inference", "train", "latency")
PEERS = ("torch", "onnxruntime")
NUM_CLASSES = 10
LEARNING_RATE = 1e-3
GATES = {"rnn": 1, "lstm": 4}

FLOP_COUNTING = (
    "FLOPs count only the matrix products: 2*B*(I+H)*G*H per forward time step "
    "(G=4 LSTM, 1 RNN), times T; BPTT counted as 2x forward, so a training step "
    "is 3x forward (head, loss, Adam and elementwise work left out).")
PEAK_MEANING = (
    "peak = median rate of a {n}^3 float32 numpy matmul ({blas}) in a subprocess "
    "with the same threads and without OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE.")
METHOD = (
    "All rivals of a case ran in one process in alternating blocks (rotating order, "
    "an untimed wake-up call before each block of short calls, a pause after it), so the "
    "torch, ONNX Runtime and fastrnn thread pools were timed in turns under the same "
    "load; times are medians of the timed calls.")
METHOD_ISOLATED = (
    "Each rival ran in its own process; the processes took turns in alternating blocks "
    "(rotating order, an untimed wake-up call before each block of short calls, a pause "
    "after it while the others slept), so no two thread pools shared a process or ran at "
    "once, and the machine's changing load fell on every rival alike; times are medians "
    "of the timed calls.")


class Unavailable(Exception):
    """This rival cannot run this case here (not installed, or no such mode)."""


# ----------------------------------------------------------------- FLOP counts


def forward_flops(cell, T, B, I, H):
    """Multiply-adds of a forward pass, counted as 2 FLOPs each."""
    return 2 * T * B * (I + H) * GATES[cell] * H


def case_flops(mode, cell, shape):
    """FLOPs of one call in `mode`: training is forward + BPTT = 3x forward."""
    forward = forward_flops(cell, *shape)
    return 3 * forward if mode == "train" else forward


# ---------------------------------------------------------------------- cases

Case = namedtuple("Case", "mode cell shape_name shape")


def case_label(case):
    return f"{case.cell} {case.mode} {case.shape_name}"


def make_cases(shapes=("origin",), cells=CELLS, modes=MODES):
    """Every (mode, cell, shape) to time; latency always uses B=1, T=28, H=128."""
    cases = []
    for cell in cells:
        for mode in modes:
            if mode == "latency":
                cases.append(Case(mode, cell, "batch1", LATENCY_SHAPE))
                continue
            for name in shapes:
                cases.append(Case(mode, cell, name, SHAPES[name]))
    return cases


def rival_names():
    """fastrnn's available backends, best first, then the peers that import here."""
    names = list(_backends.available_backends())
    return names + [peer for peer in PEERS if peer_unavailable_reason(peer) is None]


def peer_unavailable_reason(peer):
    """None when `peer` imports here, else why not."""
    modules = {"torch": ("torch",), "onnxruntime": ("onnx", "onnxruntime")}[peer]
    for module in modules:
        try:
            __import__(module)
        except Exception as exc:  # a broken install can raise anything on import
            return f"{module} does not import: {type(exc).__name__}: {exc}"
    return None


# -------------------------------------------------------------- the rivals


def _inputs(case, seed, batch_first):
    T, B, I, _ = case.shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, T, I) if batch_first else (T, B, I)).astype(np.float32)
    labels = rng.integers(0, NUM_CLASSES, size=B).astype(np.int64)
    return x, labels


def _fastrnn_runner(backend, case, threads, seed):
    import fastrnn

    fastrnn.set_num_threads(threads)
    T, B, I, H = case.shape
    if case.mode == "train":
        if not hasattr(fastrnn, "SequenceClassifier"):
            raise Unavailable("this fastrnn has no SequenceClassifier yet")
        from fastrnn import optim

        model = fastrnn.SequenceClassifier(I, H, NUM_CLASSES, cell=case.cell,
                                           backend=backend, seed=seed)
        # Only the cpp rival uses the compiled Adam: the others run as they
        # would where the extension does not load (the reference: all NumPy).
        adam = optim.Adam(model.parameters(), lr=LEARNING_RATE,
                          fused=None if backend == "cpp" else False)
        x, labels = _inputs(case, seed, batch_first=True)

        def train_step():
            loss, grads = model.loss_and_grads(x, labels)
            adam.step(grads)
            return loss
        return train_step

    layer_class = fastrnn.LSTM if case.cell == "lstm" else fastrnn.RNN
    layer = layer_class(I, H, batch_first=False, backend=backend, seed=seed)
    x, _ = _inputs(case, seed, batch_first=False)

    def forward():
        y, _ = layer.forward(x, training=False)
        return y
    return forward


def starting_weights(case, seed):
    """The parameters every rival of `case` starts from, so all compute the same thing.

    fastrnn's own init for `seed` (the same on every backend): a layer's
    state_dict, or for a training step a SequenceClassifier's parameters
    (None when this fastrnn has no SequenceClassifier).
    """
    import fastrnn

    T, B, I, H = case.shape
    if case.mode == "train":
        if not hasattr(fastrnn, "SequenceClassifier"):
            return None
        model = fastrnn.SequenceClassifier(I, H, NUM_CLASSES, cell=case.cell,
                                           backend="numpy", seed=seed)
        return {key: value.copy() for key, value in model.parameters().items()}
    layer_class = fastrnn.LSTM if case.cell == "lstm" else fastrnn.RNN
    return layer_class(I, H, backend="numpy", seed=seed).state_dict()


def _torch_runner(case, threads, seed):
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    T, B, I, H = case.shape
    module_class = torch.nn.LSTM if case.cell == "lstm" else torch.nn.RNN
    weights = starting_weights(case, seed)
    if case.mode == "train":
        rnn = module_class(I, H, batch_first=True)
        head = torch.nn.Linear(H, NUM_CLASSES)
        if weights is not None:
            rnn.load_state_dict({key: torch.from_numpy(value) for key, value in weights.items()
                                 if not key.startswith("fc.")})
            head.load_state_dict({"weight": torch.from_numpy(weights["fc.weight"]),
                                  "bias": torch.from_numpy(weights["fc.bias"])})
        params = list(rnn.parameters()) + list(head.parameters())
        adam = torch.optim.Adam(params, lr=LEARNING_RATE)
        x, labels = _inputs(case, seed, batch_first=True)
        x, labels = torch.from_numpy(x), torch.from_numpy(labels)

        def train_step():
            adam.zero_grad()
            y, _ = rnn(x)
            loss = torch.nn.functional.cross_entropy(head(y[:, -1]), labels)
            loss.backward()
            adam.step()
            return loss.item()
        return train_step

    rnn = module_class(I, H)
    rnn.load_state_dict({key: torch.from_numpy(value) for key, value in weights.items()})
    x, _ = _inputs(case, seed, batch_first=False)
    x = torch.from_numpy(x)

    def forward():
        with torch.inference_mode():
            y, _ = rnn(x)
        return y.numpy()
    return forward


def onnx_model(cell, state_dict):
    """Serialized ONNX graph of one RNN/LSTM operator with fastrnn's (torch's) weights.

    Inputs X (T, B, I), initial_h (1, B, H) and, for LSTM, initial_c; outputs
    Y (T, 1, B, H), Y_h and Y_c. ONNX orders the LSTM gates i, o, f, c where
    fastrnn has i, f, g, o, and keeps the two biases apart: B = [Wb, Rb].
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight_ih = np.asarray(state_dict["weight_ih_l0"], dtype=np.float32)
    weight_hh = np.asarray(state_dict["weight_hh_l0"], dtype=np.float32)
    H, I = weight_hh.shape[1], weight_ih.shape[1]
    blocks = [0, 3, 1, 2] if cell == "lstm" else [0]

    def onnx_order(array):
        return np.concatenate([array[k * H:(k + 1) * H] for k in blocks])

    bias = np.concatenate([onnx_order(np.asarray(state_dict["bias_ih_l0"], np.float32)),
                           onnx_order(np.asarray(state_dict["bias_hh_l0"], np.float32))])
    initializers = [
        numpy_helper.from_array(onnx_order(weight_ih)[None], "W"),
        numpy_helper.from_array(onnx_order(weight_hh)[None], "R"),
        numpy_helper.from_array(bias[None], "B"),
    ]

    def tensor(name, dims):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)

    states = ["initial_h", "initial_c"] if cell == "lstm" else ["initial_h"]
    finals = ["Y_h", "Y_c"] if cell == "lstm" else ["Y_h"]
    node = helper.make_node("LSTM" if cell == "lstm" else "RNN",
                            ["X", "W", "R", "B", ""] + states, ["Y"] + finals,
                            hidden_size=H)
    graph = helper.make_graph(
        [node], f"fastrnn_bench_{cell}",
        [tensor("X", ["T", "B", I])] + [tensor(name, [1, "B", H]) for name in states],
        [tensor("Y", ["T", 1, "B", H])] + [tensor(name, [1, "B", H]) for name in finals],
        initializer=initializers)
    # Opset 14 / IR 7: old enough for any ONNX Runtime this code meets.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    return model.SerializeToString()


def onnx_session(model_bytes, threads):
    """An ONNX Runtime CPU session running on `threads` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def _onnxruntime_runner(case, threads, seed):
    if case.mode == "train":
        raise Unavailable("ONNX Runtime's RNN/LSTM operators do inference only")
    T, B, I, H = case.shape
    session = onnx_session(onnx_model(case.cell, starting_weights(case, seed)), threads)
    x, _ = _inputs(case, seed, batch_first=False)
    zeros = np.zeros((1, B, H), dtype=np.float32)
    feeds = {"X": x, "initial_h": zeros}
    if case.cell == "lstm":
        feeds["initial_c"] = zeros

    def forward():
        return session.run(["Y"], feeds)[0][:, 0]
    return forward


def make_runner(rival, case, threads, seed=0):
    """A no-argument function doing one call of `case` on `rival`.

    It returns the output y (T, B, H) for inference and latency, the loss
    (a float) for a training step. Raises Unavailable when the rival cannot
    run the case here.
    """
    if rival in PEERS:
        reason = peer_unavailable_reason(rival)
        if reason is not None:
            raise Unavailable(reason)
        if rival == "torch":
            return _torch_runner(case, threads, seed)
        return _onnxruntime_runner(case, threads, seed)
    if rival not in _backends.BACKEND_MODULES:
        raise ValueError(f"unknown rival {rival!r}; choose from "
                         f"{list(_backends.BACKEND_MODULES) + list(PEERS)}")
    if rival not in _backends.available_backends():
        raise Unavailable(f"fastrnn backend {rival!r} is not available here: "
                          f"{_backends.unavailable_backends().get(rival)}")
    return _fastrnn_runner(rival, case, threads, seed)


def warmed_runner(rival, case, threads):
    """(runner, None) after one untimed call, or (None, why `rival` cannot run `case`)."""
    try:
        run = make_runner(rival, case, threads)
        run()  # warm-up: JIT compilation, allocations, loading libraries
    except Unavailable as exc:
        return None, str(exc)
    except Exception as exc:  # e.g. MemoryError on a large shape: report, go on
        return None, f"failed: {type(exc).__name__}: {exc}"
    return run, None


def limit_threads(threads):
    """Give every library loaded so far `threads` threads.

    fastrnn, torch and, through threadpoolctl when installed, every BLAS and
    OpenMP runtime in the process (NumPy's, SciPy's under Numba, torch's).
    Call it again once the rivals have run once: threadpoolctl only reaches
    libraries already loaded. ONNX Runtime's threads are set per session.
    Returns threadpoolctl's limiter (None without it), which can restore the
    previous limits.
    """
    _backends.set_num_threads(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    return threadpool_limits(limits=threads)


# ------------------------------------------------------------------ timing


def time_interleaved(runners, budget, min_rounds=3, block_seconds=0.2, pause=0.02):
    """{name: [seconds of each timed call]}, the rivals taking turns in blocks.

    Call every runner once before (JIT compilation, allocations, loading its
    libraries). Each is called once more here to size its block to about
    `block_seconds`. Then rounds run until `budget` seconds have passed and
    at least `min_rounds` are done; each round gives every runner one block,
    starting with a different runner each round.
    """
    names = list(runners)
    per_call = {name: _one_call_seconds(runners[name]) for name in names}
    samples = {name: [] for name in names}
    start = time.perf_counter()
    rounds = 0
    while rounds < min_rounds or time.perf_counter() - start < budget:
        shift = rounds % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].extend(time_block(runners[name], per_call[name], block_seconds))
            time.sleep(pause)
        rounds += 1
    return samples


def _one_call_seconds(run):
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def time_block(run, per_call, block_seconds):
    """Seconds of each call in one block of about `block_seconds` (1 to 100 calls).

    A rival faster than the block first gets one untimed call, which wakes its
    library's thread pool after the pause before the block.
    """
    calls = max(1, min(100, int(block_seconds / max(per_call, 1e-9))))
    if per_call < block_seconds:
        run()
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return times


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
a @ b
times = []
for _ in range(repeats):
    start = time.perf_counter()
    a @ b
    times.append(time.perf_counter() - start)
print(json.dumps({"times": times, "blas": blas}))
"""


def measure_peak(threads, size=2048, repeats=5, timeout=300):
    """SGEMM rate (FLOP/s) of numpy's BLAS here, measured in a fresh subprocess.

    OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are removed from the child's
    environment so OpenBLAS picks its kernels for this CPU; its threads are
    set to `threads`. Returns a dict: gflops (median), times, size, kernel
    (OpenBLAS' architecture from threadpoolctl, or "unknown"), blas.
    """
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    env["OPENBLAS_NUM_THREADS"] = str(threads)
    try:
        done = subprocess.run(
            [sys.executable, "-c", PEAK_SCRIPT, str(threads), str(size), str(repeats)],
            env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise OSError(f"the SGEMM peak measurement took over {timeout} s") from None
    if done.returncode != 0:
        raise OSError(f"the SGEMM peak measurement failed: {done.stderr.strip()[-500:]}")
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    median = float(np.median(measured["times"]))
    blas = measured["blas"]
    kernel = "unknown"
    if blas:
        kernel = ", ".join(str(lib.get("architecture") or lib.get("internal_api"))
                           for lib in blas)
    return {"gflops": 2.0 * size ** 3 / median / 1e9, "times": measured["times"],
            "size": size, "threads": threads, "kernel": kernel, "blas": blas}


# ------------------------------------------------------------------ the report

COLUMNS = ("case", "rival", "median", "samples/s", "GFLOP/s", "% peak",
           "vs numpy", "vs torch")


def run_report(cases, rivals, threads, budget, min_rounds, peak, progress=None):
    """Time every rival on every case, interleaved in this process; a dict ready for JSON
    and the table."""
    load_at_start = machine_load()
    results, skipped = [], []
    for case in cases:
        runners = {}
        for rival in rivals:
            run, reason = warmed_runner(rival, case, threads)
            if run is not None:
                runners[rival] = run
            else:
                skipped.append({"case": case_label(case), "rival": rival, "reason": reason})
        if not runners:
            continue
        limit_threads(threads)  # after the warm-up: reaches the libraries it loaded
        if progress:
            progress(f"timing {case_label(case)}: {', '.join(runners)}")
        samples = time_interleaved(runners, budget, min_rounds)
        results.extend(_case_results(case, samples, peak))
    return _report(threads, peak, "interleaved", results, skipped, load_at_start)


def _report(threads, peak, timing, results, skipped, load_at_start):
    return {
        "fastrnn_version": __version__,
        "threads": threads,
        "peak": peak,
        "flop_counting": FLOP_COUNTING,
        "timing": timing,
        "method": METHOD_ISOLATED if timing == "isolated" else METHOD,
        "results": results,
        "skipped": skipped,
        "load": {"cpus": _usable_cpus(), "start": load_at_start, "end": machine_load()},
    }


def _child_command(rival, options):
    """The command serving `rival` alone: this module, one rival, no peak measurement."""
    return [sys.executable, "-m", "fastrnn.bench", "--serve", "--rivals", rival,
            "--no-peak"] + options


def serve(cases, rival, threads, infile=sys.stdin, outfile=sys.stdout):
    """The child side of --isolate: time blocks of `rival` on request.

    Prints one JSON line {"ready": [case labels], "skipped": [...]} once the
    runners are built and warmed up, then answers each request line
    {"case": label, "block_seconds": s} with {"times": [seconds, ...]}, until
    end of input.
    """
    runners, per_call, skipped = {}, {}, []
    for case in cases:
        run, reason = warmed_runner(rival, case, threads)
        if run is not None:
            runners[case_label(case)] = run
        else:
            skipped.append({"case": case_label(case), "rival": rival, "reason": reason})
    limit_threads(threads)
    for label, run in runners.items():
        per_call[label] = _one_call_seconds(run)
    print(json.dumps({"ready": list(runners), "skipped": skipped}), file=outfile, flush=True)
    for line in infile:
        request = json.loads(line)
        label = request["case"]
        times = time_block(runners[label], per_call[label], request["block_seconds"])
        print(json.dumps({"times": times}), file=outfile, flush=True)


class _Child:
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

    def request(self, label, block_seconds):
        self.process.stdin.write(json.dumps({"case": label, "block_seconds": block_seconds})
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


def run_isolated(cases, rivals, threads, peak, child_options, budget=3.0, min_rounds=3,
                 progress=None, block_seconds=0.3, pause=0.15):
    """Time each rival in its own process, the processes taking turns; a report as run_report's.

    `child_options` are the command-line options every child gets (threads,
    shapes, cells, modes). Each child builds and warms its runners, then
    times one block when asked; the rivals of a case take turns, in rotating
    order, until `budget` seconds have passed and at least `min_rounds` are
    done. The pause after each block is longer than the libraries' thread
    pools spin before they sleep (OpenBLAS's about 50 ms here), so the next
    rival has the CPUs to itself. A child that fails skips its rival on every case,
    with the last line of its stderr.
    """
    load_at_start = machine_load()
    labels = [case_label(case) for case in cases]
    children, ready, skipped = [], {}, []
    with tempfile.TemporaryDirectory(prefix="fastrnn-bench-") as tmp:
        try:
            for rival in rivals:  # one at a time: warm-ups must not overlap either
                if progress:
                    progress(f"starting {rival} in its own process ...")
                child = _Child(rival, _child_command(rival, child_options), tmp)
                try:
                    hello = child.receive()
                except OSError as exc:
                    skipped.extend({"case": label, "rival": rival, "reason": str(exc)}
                                   for label in labels)
                    child.close()
                    continue
                children.append(child)
                ready[rival] = set(hello["ready"])
                skipped.extend(hello["skipped"])
            results = []
            for case, label in zip(cases, labels):
                turn = [child for child in children if label in ready[child.rival]]
                if not turn:
                    continue
                if progress:
                    progress(f"timing {label}: {', '.join(c.rival for c in turn)} in turns")
                samples = {child.rival: [] for child in turn}
                start, rounds = time.perf_counter(), 0
                while rounds < min_rounds or time.perf_counter() - start < budget:
                    shift = rounds % len(turn)
                    for child in turn[shift:] + turn[:shift]:
                        samples[child.rival].extend(child.request(label, block_seconds))
                        time.sleep(pause)
                    rounds += 1
                results.extend(_case_results(case, samples, peak))
        finally:
            for child in children:
                child.close()
    order = {label: n for n, label in enumerate(labels)}
    skipped.sort(key=lambda skip: order.get(skip["case"], len(order)))
    return _report(threads, peak, "isolated", results, skipped, load_at_start)


def _usable_cpus():
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


def busy_machine(load, threads):
    """True when other work kept more than half the CPUs busy around the benchmark.

    The load at the end counts the benchmark's own `threads`; they are taken off.
    """
    if load["start"] is None or load["end"] is None:
        return False
    return max(load["start"], load["end"] - threads) > 0.5 * load["cpus"]


def _case_results(case, samples, peak):
    medians = {rival: float(np.median(times)) for rival, times in samples.items()}
    return _rows(case, medians, {rival: len(times) for rival, times in samples.items()}, peak)


def _rows(case, medians, counts, peak):
    """One report row per rival of `case` from its median time and its number of samples."""
    T, B, I, H = case.shape
    flops = case_flops(case.mode, case.cell, case.shape)
    rows = []
    for rival, median in medians.items():
        gflops = flops / median / 1e9
        rows.append({
            "case": case_label(case), "mode": case.mode, "cell": case.cell,
            "shape": case.shape_name, "T": T, "B": B, "I": I, "H": H,
            "rival": rival, "median_s": median, "samples": counts[rival],
            "samples_per_s": B / median, "flops": flops, "gflops": gflops,
            "percent_of_peak": 100.0 * gflops / peak["gflops"] if peak else None,
            "speedup_vs_numpy": medians["numpy"] / median if "numpy" in medians else None,
            "speedup_vs_torch": medians["torch"] / median if "torch" in medians else None,
        })
    return rows


def _seconds(value):
    if value >= 1.0:
        return f"{value:.2f} s"
    if value >= 1e-3:
        return f"{value * 1e3:.2f} ms"
    return f"{value * 1e6:.0f} us"


def _ratio(value):
    return "-" if value is None else f"{value:.2f}x"


def format_report(report):
    """The report as a text table with a header and a footer that explain it."""
    peak = report["peak"]
    lines = [f"fastrnn {report['fastrnn_version']} bench, {report['threads']} thread(s)"]
    if peak:
        lines.append(f"peak SGEMM {peak['gflops']:.1f} GFLOP/s "
                     f"(numpy {peak['size']}^3 float32, OpenBLAS kernel: {peak['kernel']})")
    load = report.get("load")
    if load and load["start"] is not None:
        lines.append(f"load average {load['start']:.1f} at start, {load['end']:.1f} at end, "
                     f"{load['cpus']} CPU(s)")
        if busy_machine(load, report["threads"]):
            lines.append("warning: other work was running on this machine; the times, "
                         "above all with more than one thread, are not reliable")
    rows = [COLUMNS]
    for r in report["results"]:
        rows.append((r["case"], r["rival"], _seconds(r["median_s"]), f"{r['samples_per_s']:.1f}",
                     f"{r['gflops']:.2f}",
                     "-" if r["percent_of_peak"] is None else f"{r['percent_of_peak']:.1f}",
                     _ratio(r["speedup_vs_numpy"]), _ratio(r["speedup_vs_torch"])))
    widths = [max(len(row[k]) for row in rows) for k in range(len(COLUMNS))]
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
        cells += [cell.rjust(width) for cell, width in zip(row[2:], widths[2:])]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * width for width in widths))
    skipped = {}
    for skip in report["skipped"]:
        skipped.setdefault((skip["rival"], skip["reason"]), []).append(skip["case"])
    for (rival, reason), cases in skipped.items():
        lines.append(f"skipped {rival} on {', '.join(cases)}: {reason}")
    lines.append("")
    lines.append("samples/s = sequences per second; speedups compare median times in one case.")
    lines.append(FLOP_COUNTING)
    if peak:
        lines.append(PEAK_MEANING.format(n=peak["size"], blas=f"OpenBLAS {peak['kernel']}"))
    lines.append(report["method"])
    return "\n".join(lines)


def _import_pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ValueError("--plot needs matplotlib, which is not installed here; "
                         "`pip install matplotlib` (or fastrnn[bench]) and run again") from None
    return plt


def plot_report(report, path):
    """Bars of achieved GFLOP/s per rival, one panel per case, peak as a line."""
    plt = _import_pyplot()
    cases = list(dict.fromkeys(r["case"] for r in report["results"]))
    if not cases:
        raise ValueError("nothing was timed, so there is nothing to plot")
    columns = min(3, len(cases))
    rows = math.ceil(len(cases) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.5 * columns, 3.2 * rows),
                                squeeze=False)
    for ax, case in zip(axes.flat, cases):
        results = [r for r in report["results"] if r["case"] == case]
        ax.barh([r["rival"] for r in results], [r["gflops"] for r in results])
        if report["peak"]:
            ax.axvline(report["peak"]["gflops"], linestyle="--", color="gray")
        ax.set_title(case, fontsize=10)
        ax.set_xlabel("GFLOP/s (matrix products only)")
        ax.invert_yaxis()
    for ax in list(axes.flat)[len(cases):]:
        ax.set_visible(False)
    peak = ", dashed: SGEMM peak" if report["peak"] else ""
    figure.suptitle(f"fastrnn bench, {report['threads']} thread(s){peak}")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


# ------------------------------------------------------------ command line


def _choices(text, allowed, what):
    values = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [v for v in values if v not in allowed]
    if unknown or not values:
        raise argparse.ArgumentTypeError(
            f"{what} must be a comma-separated list from {', '.join(allowed)}; got {text!r}")
    return list(dict.fromkeys(values))


def add_arguments(parser):
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="threads for every rival (default: fastrnn's, "
                             "$FASTRNN_NUM_THREADS or the usable CPUs)")
    parser.add_argument("--shapes", default="origin",
                        type=lambda s: _choices(s, list(SHAPES), "--shapes"),
                        help="comma-separated from origin (T28 B100 I28 H128), medium "
                             "(T64 B128 I64 H256), large (T100 B256 I128 H512), tiny; "
                             "default origin")
    parser.add_argument("--cells", default="rnn,lstm",
                        type=lambda s: _choices(s, CELLS, "--cells"),
                        help="comma-separated from rnn, lstm (default both)")
    parser.add_argument("--modes", default=",".join(MODES),
                        type=lambda s: _choices(s, MODES, "--modes"),
                        help="comma-separated from inference, train, latency (default all)")
    parser.add_argument("--rivals", default=None,
                        type=lambda s: _choices(s, list(_backends.BACKEND_MODULES) + list(PEERS),
                                                "--rivals"),
                        help="comma-separated subset of the fastrnn backends, torch, "
                             "onnxruntime (default: all that run here)")
    parser.add_argument("--quick", action="store_true",
                        help="about 1 s per case instead of 3 s, fewer peak runs")
    parser.add_argument("--seconds", type=positive_float, default=None,
                        help="time budget per case (default 3, or 1 with --quick)")
    parser.add_argument("--isolate", action="store_true",
                        help="run each rival in its own process, the processes taking "
                             "turns, instead of all in one process (use it for "
                             "multi-threaded comparisons against torch / ONNX Runtime)")
    parser.add_argument("--no-peak", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--plot", metavar="FILE.png", help="also draw GFLOP/s bars (matplotlib)")
    return parser


def run_from_args(args):
    if args.plot:
        _import_pyplot()  # fail now, not after a minute of timing
    for path in (args.json, args.plot):
        if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise ValueError(f"cannot write {path}: its directory does not exist")
    threads = args.threads or _backends.get_num_threads()
    rivals = args.rivals or rival_names()
    for rival in rivals:
        if rival in PEERS:
            continue
        if rival not in _backends.available_backends():
            raise ValueError(f"fastrnn backend {rival!r} is not available here: "
                             f"{_backends.unavailable_backends().get(rival)}")
    budget, min_rounds, repeats = (1.0, 2, 3) if args.quick else (3.0, 3, 7)
    budget = args.seconds or budget

    def progress(message):
        print(message, file=sys.stderr, flush=True)

    peak = None
    if not args.no_peak and not args.serve:  # an --isolate child's parent measures it
        progress(f"measuring the SGEMM peak on {threads} thread(s) ...")
        peak = measure_peak(threads, repeats=repeats)
    cases = make_cases(args.shapes, args.cells, args.modes)
    if args.serve:  # an --isolate child: one rival, driven by its parent
        if len(rivals) != 1:
            raise ValueError("--serve times exactly one rival")
        protocol, sys.stdout = sys.stdout, sys.stderr  # stray prints must not reach the parent
        try:
            serve(cases, rivals[0], threads, outfile=protocol)
        finally:
            sys.stdout = protocol
        return 0
    if args.isolate:
        options = ["--threads", str(threads), "--shapes", ",".join(args.shapes),
                   "--cells", ",".join(args.cells), "--modes", ",".join(args.modes)]
        report = run_isolated(cases, rivals, threads, peak, options, budget, min_rounds,
                              progress)
    else:
        report = run_report(cases, rivals, threads, budget, min_rounds, peak, progress)
    print(format_report(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    if args.plot:
        plot_report(report, args.plot)
    return 0


def main(argv=None):
    parser = add_arguments(argparse.ArgumentParser(
        prog="python -m fastrnn.bench", description=__doc__.splitlines()[0]))
    args = parser.parse_args(argv)
    try:
        return run_from_args(args)
    except (ValueError, OSError) as exc:
        print(f"fastrnn bench: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
