"""Under torch.autocast("cpu", dtype=torch.bfloat16) the modules run fastrnn's kernels at
precision "bf16" (bfloat16 products, float32 sums), return the dtypes torch's modules
return there, and agree with torch's autocast modules to bfloat16's precision."""

import numpy as np
import pytest

import fastrnn

from .twins import VARIANTS, ft, problem, torch, twins

from torch.nn.utils.rnn import pack_padded_sequence  # noqa: E402

BF16 = torch.bfloat16


def autocast():
    return torch.autocast("cpu", dtype=BF16)


def as_list(finals):
    return list(finals) if isinstance(finals, tuple) else [finals]


def run_under_autocast(module, x, states, dy, dstates, lengths=None, enabled=True):
    """One forward (under autocast, unless not `enabled`) and backward of sum(y * dy) + sum(finals * dstates):
    y, finals, and the gradients of x, of the states and of every parameter."""
    x = x.clone().requires_grad_(True)
    states = [s.clone().requires_grad_(True) for s in states]
    hx = tuple(states) if len(states) == 2 else states[0]
    module.zero_grad()
    inputs = x if lengths is None else pack_padded_sequence(x, torch.tensor(lengths),
                                                            enforce_sorted=False)
    with torch.autocast("cpu", dtype=BF16, enabled=enabled):
        y, finals = module(inputs, hx)
    if lengths is not None:
        y, dy = y.data, pack_padded_sequence(dy, torch.tensor(lengths),
                                             enforce_sorted=False).data
    finals = as_list(finals)
    loss = (y.float() * dy).sum() + sum((f.float() * d).sum() for f, d in zip(finals, dstates))
    loss.backward()
    return [y.detach(), *[f.detach() for f in finals], x.grad, *[s.grad for s in states],
            *[p.grad for p in module.parameters()]]


def bf16_values(*tensors):
    """float32 tensors of values bfloat16 holds exactly (so that the dtype a module's
    output takes leaves the gradient flowing back into it as it is)."""
    return [t.to(BF16).float() for t in tensors]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("input_dtype", [torch.float32, BF16], ids=["x32", "xbf16"])
@pytest.mark.parametrize("hx_dtype", [None, torch.float32, BF16],
                         ids=["no-hx", "hx32", "hxbf16"])
def test_autocast_returns_the_dtypes_torch_s_modules_return(variant, packed, input_dtype,
                                                             hx_dtype):
    reference, module = twins(variant, 4, 6, 2, dtype=np.float32, bidirectional=True)
    x = torch.randn(5, 3, 4).to(input_dtype)
    if packed:
        x = pack_padded_sequence(x, torch.tensor([5, 2, 4]), enforce_sorted=False)
    hx = None
    if hx_dtype is not None:
        h = torch.randn(4, 3, 6).to(hx_dtype)
        hx = (h, h.clone()) if variant == "lstm" else h
    with autocast():
        y_ref, finals_ref = reference(x, hx)
        y, finals = module(x, hx)
    if packed:
        y, y_ref = y.data, y_ref.data
    assert [t.dtype for t in [y, *as_list(finals)]] == \
        [t.dtype for t in [y_ref, *as_list(finals_ref)]]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("lengths", [None, [7, 1, 4, 7]], ids=["padded", "lengths"])
def test_autocast_runs_fastrnn_s_bf16_kernels_forward_and_backward(variant, lengths):
    # fastrnn's own layer at precision "bf16" with the same weights: the same bits, once
    # rounded to the dtype the module returns; float32 differs.
    _, module = twins(variant, 5, 9, 2, dtype=np.float32, bidirectional=True, seed=2)
    x, states, dy, dstates = problem(variant, 7, 4, 5, 9, 2, True, dtype=np.float32)
    dy, *dstates = bf16_values(dy, *dstates)
    got = run_under_autocast(module, x, states, dy, dstates, lengths)
    name, extra = VARIANTS[variant]
    layer = getattr(fastrnn, name)(5, 9, 2, bidirectional=True, batch_first=False,
                                   precision="bf16", **extra)
    layer.load_state_dict({k: p.detach().numpy() for k, p in module.state_dict().items()})
    hx = tuple(s.numpy() for s in states) if variant == "lstm" else states[0].numpy()
    lengths_array = None if lengths is None else np.array(lengths)
    y, finals = layer.forward(x.numpy(), hx, lengths=lengths_array)
    dx, dstates0 = layer.backward(
        dy.numpy(), tuple(d.numpy() for d in dstates) if variant == "lstm"
        else dstates[0].numpy())
    if lengths is not None:   # the module's y is packed: the layer's, packed alike
        y = pack_padded_sequence(torch.tensor(y), torch.tensor(lengths),
                                 enforce_sorted=False).data.numpy()
    want = [y, *as_list(finals), dx, *as_list(dstates0),
            *[layer.grads[key] for key, _ in module.named_parameters()]]
    for g, w in zip(got, want):
        assert torch.equal(g, torch.tensor(np.asarray(w)).to(g.dtype))
    inputs = x if lengths is None else pack_padded_sequence(x, torch.tensor(lengths),
                                                            enforce_sorted=False)
    with torch.no_grad():   # float32 products give other outputs
        y32, _ = module(inputs, tuple(states) if variant == "lstm" else states[0])
    assert not torch.equal((y32 if lengths is None else y32.data).to(got[0].dtype), got[0])


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("lengths", [None, [12, 3, 9, 12, 1]], ids=["padded", "lengths"])
def test_autocast_agrees_with_torch_s_autocast_modules_to_bfloat16_precision(variant,
                                                                             lengths):
    # Both sides round products' operands to bfloat16 (torch: also its states and, in the
    # LSTM, c_t between steps), so neither gives the float32 results. fastrnn's distance
    # from torch's float32 module must be of the order of torch's own autocast module's:
    # at most 3 times it and 2 bfloat16 spacings (2^-8 of the size), sizes in the
    # Frobenius norm. (Here fastrnn's is the smaller one for every output and gradient of
    # the tanh cells; the ReLU RNN's gradients, amplified through unbounded steps, are
    # some 5% off on both sides, and fastrnn's reach twice torch's on a few parameters.)
    reference, module = twins(variant, 10, 24, 2, dtype=np.float32, bidirectional=True)
    x, states, dy, dstates = problem(variant, 12, 5, 10, 24, 2, True, dtype=np.float32)
    dy, *dstates = bf16_values(dy, *dstates)
    ours = run_under_autocast(module, x, states, dy, dstates, lengths)
    theirs = run_under_autocast(reference, x, states, dy, dstates, lengths)
    exact = run_under_autocast(reference, x, states, dy, dstates, lengths, enabled=False)
    for got, want, fp32 in zip(ours, theirs, exact):
        assert got.dtype == want.dtype
        got, want, fp32 = got.double(), want.double(), fp32.double()
        spacing = 2.0 ** -8 * fp32.norm()
        assert (got - fp32).norm() <= 3 * (want - fp32).norm() + 2 * spacing


def test_a_float64_module_under_autocast_runs_float64_as_torch_s():
    reference, module = twins("lstm", 3, 5, dtype=np.float64)
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    with autocast():
        y_ref, _ = reference(x)
        y, _ = module(x)
    assert y.dtype == torch.float64
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-12)


def test_float16_autocast_is_refused_naming_torch_s_module():
    module = ft.GRU(3, 5)
    with torch.autocast("cpu", dtype=torch.float16), \
            pytest.raises(TypeError, match="torch.nn.GRU"):
        module(torch.randn(4, 2, 3))


def test_float64_input_to_a_float32_module_under_autocast_is_refused():
    module = ft.LSTM(3, 5)
    with autocast(), pytest.raises(ValueError, match=r"input.float\(\)"):
        module(torch.randn(4, 2, 3, dtype=torch.float64))


def test_gradients_under_autocast_reach_the_float32_parameters():
    torch.manual_seed(0)
    front, module = torch.nn.Linear(3, 4), ft.LSTM(4, 5, batch_first=True)
    with autocast():
        y, _ = module(front(torch.randn(2, 6, 3)))   # the Linear returns bfloat16
        loss = y.float().square().sum()
    loss.backward()
    assert module.weight_hh_l0.grad.dtype == torch.float32
    assert front.weight.grad is not None and torch.isfinite(front.weight.grad).all()

