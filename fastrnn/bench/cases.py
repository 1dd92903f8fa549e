"""The cases: one list of names for `fastrnn bench` and the suites in bench/.

A case is a cell, a mode, a shape and a variant, named `cell-mode-shape[-variant]`:
`lstm-train-origin`, `rnn-inference-medium`, `rnn-latency-batch1`,
`lstm-train-medium-2layer-bidir`, `lstm-train-medium-lengths`.

    modes     inference  forward over the whole sequence, nothing kept for BPTT
              train      forward, Linear head + cross-entropy on the final state,
                         BPTT, Adam
              latency    inference of one sequence (B=1, T=28, I=28, H=128)
    variants  plain         one layer, every sequence T steps long
              2layer-bidir  two stacked bidirectional layers
              lengths       one layer, lengths uniform in [T/4, T]; timed beside
                            the same batch padded (the plain case), its twin

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
are left out, so the GFLOP/s are a slight underestimate.
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
MODES = ("inference", "train", "latency")
NUM_CLASSES = 10

Variant = namedtuple("Variant", "num_layers bidirectional lengths")
VARIANTS = {
    "plain": Variant(num_layers=1, bidirectional=False, lengths=False),
    "2layer-bidir": Variant(num_layers=2, bidirectional=True, lengths=False),
    "lengths": Variant(num_layers=1, bidirectional=False, lengths=True),
}

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


def make_cases(shapes=("origin",), cells=CELLS, modes=MODES, variants=("plain",)):
    """Every case of the given shapes, cells, modes and variants, in that nesting.

    Latency has one shape (batch1) and only the plain variant.
    """
    cases = []
    for cell in cells:
        for mode in modes:
            if mode == "latency":
                if "plain" in variants:
                    cases.append(Case(cell, mode, "batch1", LATENCY_SHAPE, "plain"))
                continue
            cases += [Case(cell, mode, shape_name, SHAPES[shape_name], variant)
                      for shape_name in shapes for variant in variants]
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
    """The cases in groups timed together: a lengths case with its padded twin, else alone.

    With `add_twins` a lengths case's twin joins its group even when not asked for,
    so every lengths figure has its padded one beside it.
    """
    asked = {case.name for case in cases}
    twins = {case.padded_twin.name for case in cases if case.padded_twin is not None}
    groups = []
    for case in cases:
        if case.name in twins:
            continue            # timed in its lengths case's group
        twin = case.padded_twin
        if twin is not None and (add_twins or twin.name in asked):
            groups.append([twin, case])
        else:
            groups.append([case])
    return groups


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
    forward = steps * per_step
    return 3 * forward if case.mode == "train" else forward


# ---------------------------------------------------- what the installed fastrnn has


def layer_keywords(case):
    """The layer arguments of `case`'s variant: none for one forward layer."""
    layout = case.layout
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


def missing_features(case):
    """What the installed fastrnn lacks to run `case` (None when it has everything)."""
    return _probe(case.cell, "train" if case.mode == "train" else "inference", case.variant)


def require_runnable(cases):
    """Raise a ValueError naming what fastrnn lacks for every case of `cases` it cannot run."""
    from .._info import __version__

    problems = [f"{case.name} needs {missing}" for case in cases
                if (missing := missing_features(case)) is not None]
    if problems:
        raise ValueError(f"this fastrnn ({__version__}) cannot run every case asked for: "
                         + "; ".join(problems)
                         + ". `fastrnn bench --list-cases` shows what runs here")
