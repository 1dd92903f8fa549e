"""fastrnn inside PyTorch: drop-in `torch.nn.LSTM` / `GRU` / `RNN` modules over fastrnn's
kernels, and `convert(model)`, which swaps them into a model in place.

    import fastrnn.torch
    model = fastrnn.torch.convert(model)          # or fastrnn.torch.LSTM(...) directly

Gradients come from fastrnn's BPTT through torch custom operators, so the modules
train with torch's optimizers and losses and trace whole under `torch.compile` and
`torch.export`. Needs torch (`pip install "fastrnn[torch]"`); `import fastrnn` alone
never imports it. docs/torch.md says what is supported and what raises.
"""

try:
    import torch as _torch  # noqa: F401  (the modules below need it; say so plainly)
except ImportError as exc:
    raise ImportError("fastrnn.torch needs PyTorch: pip install \"fastrnn[torch]\" "
                      "(or pip install torch)") from exc

from .modules import GRU, LSTM, RNN, convert

__all__ = ["LSTM", "GRU", "RNN", "convert"]
