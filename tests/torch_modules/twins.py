"""torch.nn modules and their fastrnn.torch twins holding the same weights, and one
forward and backward through either, for the comparisons in this folder."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ft = pytest.importorskip("fastrnn.torch")

from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence  # noqa: E402

# Every cell, the ReLU RNN as a cell of its own: (module name, extra options).
VARIANTS = {"rnn": ("RNN", {}), "relu": ("RNN", {"nonlinearity": "relu"}),
            "lstm": ("LSTM", {}), "gru": ("GRU", {})}
TORCH_DTYPES = {np.float32: torch.float32, np.float64: torch.float64}


def twins(variant, I, H, num_layers=1, *, seed=0, dtype=np.float64, **options):
    """(torch.nn module, fastrnn.torch module) of one configuration, the second built
    from the same seed (and so, initialized like torch, holding the same weights)."""
    name, extra = VARIANTS[variant]
    torch_dtype = TORCH_DTYPES[dtype]
    torch.manual_seed(seed)
    reference = getattr(torch.nn, name)(I, H, num_layers, **extra, **options,
                                        dtype=torch_dtype)
    torch.manual_seed(seed)
    module = getattr(ft, name)(I, H, num_layers, **extra, **options, dtype=torch_dtype)
    return reference, module


def problem(variant, T, B, I, H, num_layers=1, bidirectional=False, *, dtype=np.float64,
            batch_first=False, batched=True, seed=1):
    """x, a nonzero hx, and weights of the loss on y and on the final states."""
    rng = np.random.default_rng(seed)
    LD, D = num_layers * (2 if bidirectional else 1), 2 if bidirectional else 1
    x_shape = ((B, T) if batch_first else (T, B)) if batched else (T,)
    state_shape = (LD, B, H) if batched else (LD, H)

    def tensor(shape, scale=1.0):
        return torch.tensor(scale * rng.standard_normal(shape), dtype=TORCH_DTYPES[dtype])

    x = tensor(x_shape + (I,))
    states = [tensor(state_shape, 0.5) for _ in range(2 if variant == "lstm" else 1)]
    dy = tensor(x_shape + (D * H,))
    dstates = [tensor(state_shape) for _ in states]
    return x, states, dy, dstates


def run(module, x, states, dy, dstates, *, lengths=None, enforce_sorted=False):
    """One forward and backward: {y, finals, dx, dstates0, grads}; states None runs
    without hx (and dstates0 is then empty). With lengths x goes in as a PackedSequence
    and y is its data."""
    x = x.clone().requires_grad_(True)
    states = None if states is None else [s.clone().requires_grad_(True) for s in states]
    hx = None if states is None else (tuple(states) if len(states) == 2 else states[0])
    module.zero_grad()
    if lengths is None:
        y, finals = module(x, hx)
    else:
        packed = pack_padded_sequence(x, torch.tensor(lengths), batch_first=module.batch_first,
                                      enforce_sorted=enforce_sorted)
        if not enforce_sorted:   # dy in the packed order of this batch
            dy = pack_padded_sequence(dy, torch.tensor(lengths), batch_first=module.batch_first,
                                      enforce_sorted=False).data
        else:
            dy = pack_padded_sequence(dy, torch.tensor(lengths),
                                      batch_first=module.batch_first).data
        output, finals = module(packed, hx)
        assert isinstance(output, PackedSequence)
        assert torch.equal(output.batch_sizes, packed.batch_sizes)
        y = output.data
    finals = list(finals) if isinstance(finals, tuple) else [finals]
    loss = (y * dy).sum() + sum((f * d).sum() for f, d in zip(finals, dstates))
    loss.backward()
    return {"y": y.detach(), "finals": [f.detach() for f in finals], "dx": x.grad,
            "dstates0": [] if states is None else [s.grad for s in states],
            "grads": {key: p.grad for key, p in module.named_parameters()}}
