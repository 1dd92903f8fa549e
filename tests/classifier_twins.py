"""A SequenceClassifier's two sides, for the export and weight-file tests: fastrnn's in
every layer configuration this fastrnn can build, and torch's.

torch's side is built from torch and SPEC alone, never from fastrnn's own key lists, so a test
that uses it checks fastrnn against torch's layout rather than against itself.
"""

import inspect

import pytest

GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def with_stack(factory, stack, *args, **kwargs):
    """factory(*args, num_layers=..., bidirectional=..., **kwargs) for stack = (num_layers,
    bidirectional); skips the test where this fastrnn's factory has no such arguments yet."""
    if stack == (1, False):
        return factory(*args, **kwargs)
    if not {"num_layers", "bidirectional"} <= set(inspect.signature(factory).parameters):
        pytest.skip(f"this fastrnn's {factory.__name__} has no num_layers/bidirectional yet")
    return factory(*args, num_layers=stack[0], bidirectional=stack[1], **kwargs)


def torch_layout_shapes(cell, I, H, num_layers=1, bidirectional=False):
    """{key: shape} of torch.nn.LSTM / GRU / RNN(I, H, num_layers, bidirectional)'s
    state_dict, in torch's order."""
    G, D = GATES[cell], 2 if bidirectional else 1
    shapes = {}
    for k in range(num_layers):
        for suffix in ("", "_reverse")[:D]:
            shapes[f"weight_ih_l{k}{suffix}"] = (G * H, I if k == 0 else D * H)
            shapes[f"weight_hh_l{k}{suffix}"] = (G * H, H)
            shapes[f"bias_ih_l{k}{suffix}"] = (G * H,)
            shapes[f"bias_hh_l{k}{suffix}"] = (G * H,)
    return shapes


def torch_classifier(cell, I, H, C, stack, *, nonlinearity="tanh", seed=0):
    """(torch, module): a torch.nn.Module with `rnn` (torch.nn.LSTM / GRU / RNN, batch-first)
    and `fc`, whose forward(x) gives the logits of fc on the last layer's final state, both
    directions side by side, forward first: a SequenceClassifier written in torch."""
    torch = pytest.importorskip("torch", reason="torch is the oracle of these tests")
    torch.manual_seed(seed)
    num_layers, bidirectional = stack
    D = 2 if bidirectional else 1
    options = {"nonlinearity": nonlinearity} if cell == "rnn" else {}

    class Classifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = getattr(torch.nn, cell.upper())(
                I, H, num_layers=num_layers, bidirectional=bidirectional, batch_first=True,
                **options)
            self.fc = torch.nn.Linear(D * H, C)

        def forward(self, x):
            _, state = self.rnn(x)
            h_T = state[0] if isinstance(state, tuple) else state
            return self.fc(torch.cat(list(h_T[-D:]), dim=1))

    return torch, Classifier().eval()


def fastrnn_keys(state_dict):
    """A Classifier's state_dict as SequenceClassifier.load_state_dict takes it: the recurrent
    keys without the module's `rnn.` prefix (as docs/deployment.md shows), fc.* as they are."""
    return {key.removeprefix("rnn."): value for key, value in state_dict.items()}
