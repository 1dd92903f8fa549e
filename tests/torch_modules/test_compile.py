"""torch.compile and torch.export take the modules whole: no graph break, eager's
outputs and gradients."""

import numpy as np
import pytest

from helpers import assert_close

from .twins import VARIANTS, ft, torch

# Inductor's own code still calls torch.jit.script_method (torch 2.13).
pytestmark = pytest.mark.filterwarnings(
    "ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")


class Classifier(torch.nn.Module):
    """A torch front end, the recurrent module, a head on the last output."""

    def __init__(self, variant, **options):
        super().__init__()
        name, extra = VARIANTS[variant]
        self.front = torch.nn.Linear(5, 6)
        self.rnn = getattr(ft, name)(6, 7, batch_first=True, **extra, **options)
        D = 2 if options.get("bidirectional") else 1
        self.head = torch.nn.Linear(D * 7, 3)

    def forward(self, x):
        y, _ = self.rnn(torch.relu(self.front(x)))
        return self.head(y[:, -1])


def eager_and_compiled(model, x, seed=0):
    """[(output, {name: grad})] of the eager model, then of torch.compile(fullgraph=True)."""
    results = []
    for run in (model, torch.compile(model, fullgraph=True, dynamic=False)):
        model.zero_grad()
        torch.manual_seed(seed)
        out = run(x)
        out.square().sum().backward()
        results.append((out.detach(), {k: p.grad.clone() for k, p in model.named_parameters()}))
    return results


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("options", [{}, {"num_layers": 2, "bidirectional": True,
                                          "dropout": 0.3}])
def test_compile_with_fullgraph_gives_eager_outputs_and_gradients(variant, options):
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = Classifier(variant, **options).double()
    x = torch.randn(4, 6, 5, dtype=torch.float64)
    (eager, eager_grads), (compiled, compiled_grads) = eager_and_compiled(model, x)
    assert_close(compiled, eager, "output", np.float64, "output")
    for key, grad in eager_grads.items():
        assert_close(compiled_grads[key], grad, "grad", np.float64, key)


@pytest.mark.parametrize("variant", VARIANTS)
def test_compile_under_autocast_gives_eager_autocast_outputs_and_gradients(variant):
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = Classifier(variant, num_layers=2, bidirectional=True)
    x = torch.randn(4, 6, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        (eager, eager_grads), (compiled, compiled_grads) = eager_and_compiled(model, x)
    assert compiled.dtype == eager.dtype == torch.bfloat16
    assert torch.equal(compiled, eager)
    # Inductor fuses the head's bfloat16 backward its own way: its gradients, and the
    # recurrent module's from them, agree to bfloat16's precision.
    for key, grad in eager_grads.items():
        torch.testing.assert_close(compiled_grads[key], grad, rtol=2 ** -7,
                                   atol=2 ** -7 * grad.abs().max().item(), msg=key)


def test_a_compiled_model_runs_the_inference_kernels_under_no_grad():
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = Classifier("lstm").eval()
    x = torch.randn(3, 5, 5)
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        assert_close(compiled(x), model(x), "output", np.float32)


def test_torch_export_captures_the_operator():
    torch.manual_seed(0)
    model = Classifier("gru", num_layers=2, bidirectional=True).eval()
    x = torch.randn(3, 5, 5)
    exported = torch.export.export(model, (x,))
    targets = {str(node.target) for node in exported.graph.nodes}
    assert "fastrnn.recurrent.default" in targets
    with torch.no_grad():
        assert_close(exported.module()(x), model(x), "output", np.float32)


def test_the_operators_pass_torch_library_opcheck():
    torch.manual_seed(0)
    x = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 2, 5, dtype=torch.float64, requires_grad=True)
    module = ft.GRU(3, 5, bidirectional=True, dtype=torch.float64)
    weights = [p for p in module.parameters()]
    args = (x, h0, None, weights, None, "gru", 1, True, True, 0.0, "fp32", True)
    # The handle output differs between calls by design (each record has its own key),
    # so the comparisons of whole outputs that AOT dispatch makes are left out.
    torch.library.opcheck(torch.ops.fastrnn.recurrent.default, args,
                          test_utils=("test_schema", "test_autograd_registration",
                                      "test_faketensor"))


def test_the_operator_and_its_eager_twin_give_the_same_bits():
    from fastrnn.torch import _ops
    torch.manual_seed(0)
    module = ft.LSTM(3, 5, 2, bidirectional=True, dropout=0.5, dtype=torch.float64)
    weights = [getattr(module, key) for key in module._flat_weights_names]
    x = torch.randn(6, 4, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(4, 4, 5, dtype=torch.float64, requires_grad=True)
    options = ("lstm", 2, True, True, 0.5, "fp32", True)
    results = []
    for call in (lambda: _ops._recurrent(x, h0, None, weights, None, *options),
                 lambda: _ops._Eager.apply(x, h0, None, None, options, *weights)):
        torch.manual_seed(1)   # the same dropout masks
        y, h_n, c_n, _ = call()
        grads = torch.autograd.grad((y.sin().sum() + h_n.sum() + c_n.square().sum()),
                                    [x, h0] + weights)
        results.append([y, h_n, c_n, *grads])
    assert all(torch.equal(a, b) for a, b in zip(*results))


def test_a_fake_tensor_trace_goes_through_the_operator():
    from torch._subclasses.fake_tensor import FakeTensorMode
    module = ft.GRU(3, 5, 2, bidirectional=True)
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        y, h = module(mode.from_tensor(torch.randn(7, 4, 3)))
    assert y.shape == (7, 4, 10) and h.shape == (4, 4, 5)


def test_a_model_compiled_with_dynamic_shapes_takes_other_batches_and_lengths():
    torch._dynamo.reset()
    torch.manual_seed(0)
    module = ft.LSTM(5, 7, 2, bidirectional=True, batch_first=True)
    compiled = torch.compile(module, fullgraph=True, dynamic=True)
    for B, T in [(3, 4), (5, 9), (2, 1)]:
        x = torch.randn(B, T, 5, requires_grad=True)
        y, (h, c) = compiled(x)
        grad, = torch.autograd.grad(y.square().sum() + h.sum(), x)
        y_eager, (h_eager, _) = module(x)
        grad_eager, = torch.autograd.grad(y_eager.square().sum() + h_eager.sum(), x)
        assert torch.equal(y, y_eager) and torch.equal(grad, grad_eager)
