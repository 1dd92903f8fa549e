"""The cases: one list of names for `fastrnn bench` and the suites in bench/.

A case is a cell, a mode, a shape and a variant, named `cell-mode-shape[-variant]`:
`lstm-train-origin`, `rnn-inference-medium`, `rnn-latency-batch1`,
`lstm-train-medium-2layer-bidir`, `lstm-train-medium-lengths`, `lstm-stream-batch1-int8`,
`gru-frozen-origin`.

    modes     inference  forward over the whole sequence, nothing kept for BPTT
              train      forward, Linear head + cross-entropy on the final state,
                         BPTT, Adam
              latency    inference of one sequence (B=1, T=28, I=28, H=128)
              frozen     inference through a frozen model (layer.freeze), at the
                         shape asked for and at batch 1 (B=1, T=28, I=28, H=128)
              stream     one frame (B=1, I=28, H=128) through a frozen model's
                         stream, its state carried from the call before
    variants  plain         one layer, every sequence T steps long
              2layer-bidir  two stacked bidirectional layers
              lengths       one layer, lengths uniform in [T/4, T]; timed beside
                            the same batch padded (the plain case), its twin
              bf16          the products in bfloat16: layers and classifiers with
                            precision="bf16" (torch: module and input in
                            torch.bfloat16), a model frozen with quantize="bf16";
                            an inference or training case is timed beside its
                            float32 twin (the plain case)
              int8          (frozen and stream) the model frozen with quantize="int8"

A case runs only where the installed fastrnn has what it needs (the cell's layer, layers
that take num_layers / bidirectional / lengths): `missing_features` says what
is missing, and asking for such a case is an error that names it.

FLOPs count only the matrix products. One forward time step of one direction
of a layer with G gates (the cell's, fastrnn.cells) multiplies [x_t, h_{t-1}],
(B, I_k + H), by the weights, (I_k + H, G*H): 2*B*(I_k + H)*G*H, where I_0 = I
and a layer above reads both directions, I_k = D*H. A forward is that over
every step, direction and layer; BPTT does about twice the forward's products
(the gradients with respect to x_t and h_{t-1}, and those with respect to the
weights), so a training step counts 3x forward. With lengths only the steps
inside each sequence count. The head, the loss, Adam and the elementwise work
are left out, so the GFLOP/s are a slight underestimate. A stream call is one
time step.
"""

import difflib
import functools
from collections import namedtuple

from ..cells import CELLS as CELL_TABLE

Shape = namedtuple("Shape", "T B I H")

SHAPES = {
    "origin": Shape(T=28, B=100, I=28, H=128),   # the original MNIST experiment
    "medium": Shape(T=64, B=128, I=64, H=256),
    "large": Shape(T=100, B=256, I=128, H=512),
    "tiny": Shape(T=3, B=2, I=4, H=5),            # for smoke checks, not for timing
}
LATENCY_SHAPE = Shape(T=28, B=1, I=28, H=128)
CELLS = tuple(CELL_TABLE)
MODES = ("inference", "train", "latency", "frozen", "stream")
# Modes of frozen models, whose variants are the quantize kinds (plain: float32).
FROZEN_MODES = ("frozen", "stream")
NUM_CLASSES = 10

# precision: of the products, None for float32 (a frozen model's quantize=, a layer's precision=)
Variant = namedtuple("Variant", "num_layers bidirectional lengths precision",
                     defaults=(None,))
VARIANTS = {
    "plain": Variant(num_layers=1, bidirectional=False, lengths=False),
    "2layer-bidir": Variant(num_layers=2, bidirectional=True, lengths=False),
    "lengths": Variant(num_layers=1, bidirectional=False, lengths=True),
    "bf16": Variant(num_layers=1, bidirectional=False, lengths=False, precision="bf16"),
    "int8": Variant(num_layers=1, bidirectional=False, lengths=False, precision="int8"),
}
# The precisions a layer computes in besides float32 (frozen models also take int8).
LAYER_PRECISIONS = ("bf16",)


def variant_applies(mode, variant):
    """Frozen modes take the precision variants; the others the layer variants and the layers'
    precisions."""
    precision = VARIANTS[variant].precision
    if variant == "plain" or mode in FROZEN_MODES:
        return variant == "plain" or precision is not None
    return precision is None or precision in LAYER_PRECISIONS

FLOP_COUNTING = (
    "FLOPs count only the matrix products: 2*B*(I_k+H)*G*H per time step, direction "
    "and layer k (G the cell's gates; I_0=I, above it I_k=D*H), only inside each "
    "sequence's length; BPTT counted as 2x forward, so a training step is 3x forward "
    "(head, loss, Adam and elementwise work left out).")


class Case(namedtuple("Case", "cell mode shape_name shape variant")):
    """One thing to time; its `name` is what the command line and the suites call it."""

    __slots__ = ()

    @property
    def name(self):
        parts = [self.cell, self.mode, self.shape_name]
        return "-".join(parts if self.variant == "plain" else parts + [self.variant])

    @property
    def layout(self):
        return VARIANTS[self.variant]

    @property
    def directions(self):
        return 2 if self.layout.bidirectional else 1

    @property
    def padded_twin(self):
        """The same batch without lengths, which a lengths case is timed beside (else None)."""
        return self._replace(variant="plain") if self.layout.lengths else None

    @property
    def fp32_twin(self):
        """The same case in float32, which a bf16 inference or training case is timed beside
        (else None)."""
        if self.layout.precision in LAYER_PRECISIONS and self.mode not in FROZEN_MODES:
            return self._replace(variant="plain")
        return None

    @property
    def twin(self):
        """The case this one is timed beside: its padded or its float32 twin (else None)."""
        return self.padded_twin or self.fp32_twin


def make_cases(shapes=("origin",), cells=CELLS, modes=MODES, variants=("plain",)):
    """Every case of the given shapes, cells, modes and variants, in that nesting, where the
    variant applies to the mode (`variant_applies`).

    Latency and stream have one shape (batch1); frozen has batch1 and the shapes asked
    for; latency has only the plain variant.
    """
    cases = []
    for cell in cells:
        for mode in modes:
            mode_variants = [v for v in variants if variant_applies(mode, v)]
            if mode == "latency":
                mode_variants = [v for v in mode_variants if v == "plain"]
            if mode in ("latency", "stream"):
                mode_shapes = {"batch1": LATENCY_SHAPE}
            elif mode == "frozen":
                mode_shapes = {"batch1": LATENCY_SHAPE, **{name: SHAPES[name] for name in shapes}}
            else:
                mode_shapes = {name: SHAPES[name] for name in shapes}
            cases += [Case(cell, mode, shape_name, shape, variant)
                      for shape_name, shape in mode_shapes.items() for variant in mode_variants]
    return cases


CATALOGUE = {case.name: case for case in make_cases(SHAPES, CELLS, MODES, VARIANTS)}


def case_by_name(name):
    """The case called `name`; an unknown name is an error that suggests a near one."""
    try:
        return CATALOGUE[name]
    except KeyError:
        near = difflib.get_close_matches(name, CATALOGUE, n=3)
        hint = f" (did you mean {', '.join(near)}?)" if near else ""
        raise ValueError(f"unknown case {name!r}{hint}; `fastrnn bench --list-cases` "
                         f"lists them") from None


def timing_groups(cases, add_twins=True):
    """The cases in groups timed together: a case with its twin (padded, or float32), else alone.

    With `add_twins` a case's twin joins its group even when not asked for, so every
    lengths or bf16 figure has its padded or float32 one beside it. A plain case that is
    the twin of several (lengths and bf16) is timed with all of them.
    """
    asked = {case.name for case in cases}
    groups = {}
    for case in cases:
        twin = case.twin
        if twin is not None and (add_twins or twin.name in asked):
            groups.setdefault(twin.name, [twin]).append(case)
        elif case.name not in groups:
            groups[case.name] = [case]
    return list(groups.values())


# ----------------------------------------------------------------- the batch


def make_batch(case, seed=0, batch_first=True):
    """(x, labels, lengths) of `case`: lengths is None but for the lengths variant.

    A lengths case draws the same x and labels as its padded twin.
    """
    import numpy as np

    T, B, I, _ = case.shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, T, I) if batch_first else (T, B, I)).astype(np.float32)
    labels = rng.integers(0, NUM_CLASSES, size=B).astype(np.int64)
    return x, labels, sequence_lengths(case, seed)


def sequence_lengths(case, seed=0):
    """The lengths of a lengths case's sequences, uniform in [T/4, T]; None for the others."""
    import numpy as np

    if not case.layout.lengths:
        return None
    T, B = case.shape.T, case.shape.B
    return np.random.default_rng([seed, 1]).integers(max(1, T // 4), T + 1, size=B)


# ------------------------------------------------------------------ FLOP counts


def forward_flops(cell, T, B, I, H):
    """Multiply-adds of a one-layer forward pass, counted as 2 FLOPs each."""
    return 2 * T * B * (I + H) * CELL_TABLE[cell].G * H


def case_flops(case):
    """FLOPs of one call of `case`: training is forward + BPTT = 3x forward."""
    T, B, I, H = case.shape
    lengths = sequence_lengths(case)
    steps = int(lengths.sum()) if lengths is not None else T * B   # sequence-steps
    D = case.directions
    per_step = sum(D * 2 * ((I if k == 0 else D * H) + H) * CELL_TABLE[case.cell].G * H
                   for k in range(case.layout.num_layers))
    if case.mode == "stream":   # a call is one frame
        steps = B
    forward = steps * per_step
    return 3 * forward if case.mode == "train" else forward


# ---------------------------------------------------- what the installed fastrnn has


def layer_keywords(case):
    """The layer arguments of `case`'s variant: none for one forward float32 layer (a frozen
    case's layer is float32: its precision is the freeze's)."""
    layout = case.layout
    if layout.precision is not None and case.mode not in FROZEN_MODES:
        return {"precision": layout.precision}
    if layout.num_layers == 1 and not layout.bidirectional:
        return {}   # a one-layer case asks nothing new of an older fastrnn
    return {"num_layers": layout.num_layers, "bidirectional": layout.bidirectional}


def _spelled(function, keywords):
    return f"{function}({', '.join(f'{key}={value!r}' for key, value in keywords.items())})"


@functools.lru_cache(maxsize=None)
def _probe(cell, mode, variant):
    """What fastrnn lacks for this kind of case, found by trying it on tiny sizes; or None."""
    import numpy as np

    import fastrnn

    case = Case(cell, mode, "tiny", SHAPES["tiny"], variant)
    if mode in FROZEN_MODES:
        return _probe_frozen(cell, case.layout.precision)
    keywords = layer_keywords(case)
    layer_name = f"fastrnn.{CELL_TABLE[cell].layer}"
    x, labels, lengths = np.zeros((2, 2, 1), np.float32), np.array([0, 1]), np.array([1, 2])
    layer_class = getattr(fastrnn, CELL_TABLE[cell].layer, None)
    if layer_class is None:
        return layer_name
    try:
        if mode == "train":
            what = _spelled("fastrnn.SequenceClassifier", {"cell": cell, **keywords})
            model = fastrnn.SequenceClassifier(1, 1, 2, cell=cell, backend="numpy", **keywords)
            if case.layout.lengths:
                what = "fastrnn.SequenceClassifier.loss_and_grads(x, y, lengths=...)"
                model.loss_and_grads(x, labels, lengths=lengths)
            return None
        what = _spelled(layer_name, keywords) if keywords else layer_name
        layer = layer_class(1, 1, batch_first=False, backend="numpy", **keywords)
        if case.layout.lengths:
            what = f"{layer_name}.forward(x, lengths=...)"
            layer.forward(x, lengths=lengths, training=False)
    except (TypeError, ValueError, AttributeError, NotImplementedError) as exc:
        return f"{what} ({type(exc).__name__}: {exc})"
    return None


def _probe_frozen(cell, quantize):
    """What fastrnn lacks to freeze a `cell` layer to `quantize` and stream it; or None."""
    import numpy as np

    import fastrnn

    layer_class = getattr(fastrnn, CELL_TABLE[cell].layer, None)
    what = f"fastrnn.{CELL_TABLE[cell].layer}.freeze(quantize={quantize!r}).stream()"
    if layer_class is None:
        return f"fastrnn.{CELL_TABLE[cell].layer}"
    try:
        layer_class(1, 1, backend="numpy").freeze(quantize).stream().step(
            np.zeros((1, 1), np.float32))
    except (TypeError, ValueError, AttributeError, NotImplementedError) as exc:
        return f"{what} ({type(exc).__name__}: {exc})"
    return None


def missing_features(case):
    """What the installed fastrnn lacks to run `case` (None when it has everything)."""
    mode = case.mode if case.mode in FROZEN_MODES + ("train",) else "inference"
    return _probe(case.cell, "frozen" if mode in FROZEN_MODES else mode, case.variant)


def require_runnable(cases):
    """Raise a ValueError naming what fastrnn lacks for every case of `cases` it cannot run."""
    from .._info import __version__

    problems = [f"{case.name} needs {missing}" for case in cases
                if (missing := missing_features(case)) is not None]
    if problems:
        raise ValueError(f"this fastrnn ({__version__}) cannot run every case asked for: "
                         + "; ".join(problems)
                         + ". `fastrnn bench --list-cases` shows what runs here")
