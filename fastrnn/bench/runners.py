"""The rivals: for each, a function that does one call of a case.

Rivals are fastrnn's backends (cpp, numba, the numpy reference) and the peers,
torch (torch.nn's module of the cell; pack_padded_sequence for a lengths case),
fastrnn.torch (the same torch model with fastrnn.torch's module in place of torch.nn's)
and ONNX Runtime (its operator of the cell, and DynamicQuantizeLSTM for an int8 case,
see onnx_graphs.py). A frozen or stream case runs fastrnn's frozen model
(layer.freeze(quantize)); torch and ONNX Runtime run their own forward of the
same weights, a stream one frame per call with the state fed back in. Every rival
of a case starts from the same weights, fastrnn's init for the seed, and reads
the same batch, so all of them compute the same thing. A training step is
fastrnn.SequenceClassifier + fastrnn.optim.Adam (the compiled head and Adam
on the cpp rival only: the others run as they would without the extension),
and for torch and fastrnn.torch the same modules with torch.optim.Adam. A bf16
inference or training case gives fastrnn's layers precision="bf16" and puts torch's
modules and input in torch.bfloat16.
"""

import sys

import numpy as np

import fastrnn
from fastrnn import optim

from .. import _backends
from ..cells import CELLS
from .cases import FROZEN_MODES, NUM_CLASSES, layer_keywords, make_batch, require_runnable

PEERS = ("torch", "fastrnn.torch", "onnxruntime")
# The peers that are a torch model, with the module that holds their recurrent classes.
TORCH_MODELS = {"torch": "torch.nn", "fastrnn.torch": "fastrnn.torch"}
LEARNING_RATE = 1e-3


class Unavailable(Exception):
    """This rival cannot run this case here (not installed, or no such mode)."""


def known_rivals():
    """Every rival name, whether or not it runs here."""
    return list(_backends.BACKEND_MODULES) + list(PEERS)


def rival_names():
    """fastrnn's available backends, best first, then the peers that import here."""
    names = list(_backends.available_backends())
    return names + [peer for peer in PEERS if peer_unavailable_reason(peer) is None]


def peer_unavailable_reason(peer):
    """None when `peer` imports here, else why not."""
    modules = {"torch": ("torch",), "fastrnn.torch": ("torch", "fastrnn.torch"),
               "onnxruntime": ("onnx", "onnxruntime")}[peer]
    for module in modules:
        try:
            __import__(module)
        except Exception as exc:  # a broken install can raise anything on import
            return f"{module} does not import: {type(exc).__name__}: {exc}"
    return None


def require_rivals(rivals):
    """Raise a ValueError for a rival asked for by name that cannot run here."""
    for rival in rivals:
        if rival in PEERS:
            reason = peer_unavailable_reason(rival)
            if reason is not None:
                raise ValueError(f"rival {rival!r} cannot run here: {reason}; install it "
                                 f"(pip install 'fastrnn[bench]' torch) or leave it out of "
                                 f"--rivals")
        elif rival not in _backends.available_backends():
            raise ValueError(f"fastrnn backend {rival!r} is not available here: "
                             f"{_backends.unavailable_backends().get(rival)}")


def not_applicable(rival, case):
    """Why `rival` cannot run `case` anywhere (None when it can)."""
    precision = case.layout.precision
    frozen = case.mode in FROZEN_MODES
    if rival == "torch":
        if precision == "int8":
            return "torch's rival computes in float32 or bfloat16, not int8"
        return None
    if rival != "onnxruntime":
        if precision and frozen and rival != "cpp":
            return f"fastrnn's {precision} kernels of frozen models are compiled (the cpp backend)"
        if precision and not frozen and rival == "fastrnn.torch":
            return "the bench times fastrnn.torch in float32 only"
        return None
    if case.mode == "train":
        return "ONNX Runtime's recurrent operators do inference only"
    if precision == "int8" and case.cell != "lstm":
        return "ONNX Runtime's int8 recurrent operator (DynamicQuantizeLSTM) is the LSTM's only"
    if precision == "bf16":
        return "ONNX Runtime's CPU recurrent operators have no bf16 form"
    if case.layout.num_layers != 1 or case.layout.bidirectional or case.layout.lengths:
        return "the bench gives ONNX Runtime graphs of one forward layer over full sequences"
    return None


def make_runner(rival, case, threads, seed=0):
    """A no-argument function doing one call of `case` on `rival`.

    It returns the output y (T, B, D*H) for inference, latency and frozen, h_t (B, H)
    for a stream, the loss (a float) for a training step. Raises Unavailable when the rival cannot
    run the case here, ValueError when fastrnn itself cannot.
    """
    if rival not in known_rivals():
        raise ValueError(f"unknown rival {rival!r}; choose from {known_rivals()}")
    require_runnable([case])
    reason = not_applicable(rival, case)
    if reason is None and rival in PEERS:
        reason = peer_unavailable_reason(rival)
    if reason is None and rival not in PEERS and rival not in _backends.available_backends():
        reason = (f"fastrnn backend {rival!r} is not available here: "
                  f"{_backends.unavailable_backends().get(rival)}")
    if reason is not None:
        raise Unavailable(reason)
    if rival in TORCH_MODELS:
        return torch_runner(case, threads, starting_weights(case, seed), seed,
                            modules=TORCH_MODELS[rival])
    if rival == "onnxruntime":
        from .onnx_graphs import onnxruntime_runner
        return onnxruntime_runner(case, threads, starting_weights(case, seed), seed)
    return fastrnn_runner(rival, case, threads, seed)


def warmed_runner(rival, case, threads):
    """(runner, summary of its output, None) after one untimed call, or (None, None, skip).

    The skip is {"reason": why, "failed": whether the rival broke rather than
    could not run the case here}.
    """
    try:
        run = make_runner(rival, case, threads)
        output = run()  # warm-up: JIT compilation, allocations, loading libraries
    except Unavailable as exc:
        return None, None, {"reason": str(exc), "failed": False}
    except Exception as exc:  # e.g. MemoryError on a large shape: report, go on
        return None, None, {"reason": f"failed: {type(exc).__name__}: {exc}", "failed": True}
    return run, summarize(case, output), None


def summarize(case, output):
    """What a runner's output says of it, small enough for JSON: loss, or y's shape and range."""
    if case.mode == "train":
        return {"loss": float(output)}
    y = np.asarray(output)
    return {"shape": list(y.shape), "finite": bool(np.all(np.isfinite(y))),
            "max_abs": float(np.abs(y).max())}


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


# ------------------------------------------------------------------ fastrnn


def _classifier(case, backend, seed):
    return fastrnn.SequenceClassifier(case.shape.I, case.shape.H, NUM_CLASSES, cell=case.cell,
                                      backend=backend, seed=seed, **layer_keywords(case))


def _layer(case, backend, seed):
    layer_class = getattr(fastrnn, CELLS[case.cell].layer)
    return layer_class(case.shape.I, case.shape.H, batch_first=False, backend=backend,
                       seed=seed, **layer_keywords(case))


def _lengths_keyword(lengths):
    """lengths= for a lengths case only, so a plain case asks nothing new of fastrnn."""
    return {} if lengths is None else {"lengths": lengths}


def starting_weights(case, seed):
    """The parameters every rival of `case` starts from: fastrnn's init for `seed`.

    A layer's state_dict, or for a training step a SequenceClassifier's
    parameters (the layer's keys, fc.weight and fc.bias).
    """
    if case.mode == "train":
        return {key: value.copy()
                for key, value in _classifier(case, "numpy", seed).parameters().items()}
    return _layer(case, "numpy", seed).state_dict()


def fastrnn_runner(backend, case, threads, seed):
    module = _backends.get_backend(backend)
    missing = [kernel for kernel in (f"{case.cell}_forward", f"{case.cell}_backward")
               if not hasattr(module, kernel)]
    if missing:
        raise Unavailable(f"fastrnn's {backend} backend has no {', '.join(missing)}")
    fastrnn.set_num_threads(threads)
    if case.mode == "train":
        model = _classifier(case, backend, seed)
        adam = optim.Adam(model.parameters(), lr=LEARNING_RATE,
                          fused=None if backend == "cpp" else False)
        x, labels, lengths = make_batch(case, seed, batch_first=True)
        lengths_keyword = _lengths_keyword(lengths)

        def train_step():
            loss, grads = model.loss_and_grads(x, labels, **lengths_keyword)
            adam.step(grads)
            return loss
        return train_step

    layer = _layer(case, backend, seed)
    x, _, lengths = make_batch(case, seed, batch_first=False)
    lengths_keyword = _lengths_keyword(lengths)
    if case.mode in FROZEN_MODES:
        return _frozen_runner(case, layer.freeze(case.layout.precision), x)

    def forward():
        y, _ = layer.forward(x, training=False, **lengths_keyword)
        return y
    return forward


def _frozen_runner(case, frozen, x):
    """A frozen model's forward of x (T, B, I), or for a stream case its step of one frame,
    going round x's T frames with the state carried."""
    if case.mode == "frozen":
        return lambda: frozen.forward(x)[0]
    stream = frozen.stream(case.shape.B)
    frames = [np.ascontiguousarray(frame) for frame in x]
    position = [0]

    def step():
        t = position[0]
        position[0] = (t + 1) % len(frames)
        return stream.step(frames[t])
    return step


# -------------------------------------------------------------------- torch


def torch_runner(case, threads, weights, seed=0, modules="torch.nn"):
    """torch's call of `case`, its modules holding `weights` (keyed like torch's state_dict);
    `modules` is where the recurrent module's class comes from: torch.nn, or fastrnn.torch.

    With lengths the batch goes through pack_padded_sequence (enforce_sorted=False),
    and inference unpacks y to T steps, as torch users do. A bf16 case puts the modules
    and the input in torch.bfloat16 (which torch routes to oneDNN's bf16 LSTM), and Adam
    updates the bfloat16 parameters; outputs come back as float32.
    """
    import importlib

    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    T, B, I, H = case.shape
    D = case.directions
    module_class = getattr(importlib.import_module(modules), CELLS[case.cell].torch_module)
    batch_first = case.mode == "train"
    rnn = module_class(I, H, num_layers=case.layout.num_layers,
                       bidirectional=case.layout.bidirectional, batch_first=batch_first)
    rnn.load_state_dict({key: torch.from_numpy(value) for key, value in weights.items()
                         if not key.startswith("fc.")})
    dtype = torch.bfloat16 if case.layout.precision == "bf16" else torch.float32
    rnn.to(dtype)
    x, labels, lengths = make_batch(case, seed, batch_first=batch_first)
    x, labels = torch.from_numpy(x).to(dtype), torch.from_numpy(labels)
    if lengths is not None:
        lengths = torch.from_numpy(lengths)

    def run_rnn():
        if lengths is None:
            return rnn(x)
        return rnn(pack_padded_sequence(x, lengths, batch_first=batch_first,
                                        enforce_sorted=False))

    if case.mode == "stream":   # one frame per call, the state fed back in
        frames, carried = [x[t:t + 1] for t in range(T)], [None, 0]

        def step():
            with torch.inference_mode():
                t = carried[1]
                y, carried[0] = rnn(frames[t], carried[0])
                carried[1] = (t + 1) % T
            return y[0].float().numpy()
        return step

    if case.mode != "train":
        def forward():
            with torch.inference_mode():
                y, _ = run_rnn()
                if lengths is not None:
                    y, _ = pad_packed_sequence(y, total_length=T)
            return y.float().numpy()
        return forward

    head = torch.nn.Linear(D * H, NUM_CLASSES)
    head.load_state_dict({"weight": torch.from_numpy(weights["fc.weight"]),
                          "bias": torch.from_numpy(weights["fc.bias"])})
    head.to(dtype)
    adam = torch.optim.Adam(list(rnn.parameters()) + list(head.parameters()), lr=LEARNING_RATE)

    def train_step():
        adam.zero_grad()
        _, state = run_rnn()
        h_n = state[0] if isinstance(state, tuple) else state   # h first, then the LSTM's c
        # the last layer's final state, forward direction first: fastrnn's head input
        final = torch.cat(list(h_n[-D:]), dim=1)
        loss = torch.nn.functional.cross_entropy(head(final), labels)
        loss.backward()
        adam.step()
        return loss.item()
    return train_step
