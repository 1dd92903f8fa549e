"""Under torch.autocast("cpu", dtype=torch.bfloat16) the modules return the dtypes
torch's return. Until fastrnn has bf16 kernels the recurrence runs in float32 there
(docs/torch.md): the results are the float32 ones, rounded to the returned dtype."""

import pytest

from .twins import VARIANTS, ft, torch


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("input_dtype", [torch.float32, torch.bfloat16])
def test_autocast_returns_torch_s_dtypes_and_the_float32_results(variant, input_dtype):
    name, extra = VARIANTS[variant]
    torch.manual_seed(0)
    reference = getattr(torch.nn, name)(4, 6, 2, bidirectional=True, **extra)
    module = getattr(ft, name)(4, 6, 2, bidirectional=True, **extra)
    module.load_state_dict(reference.state_dict())
    x = torch.randn(5, 3, 4).to(input_dtype)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y_ref, h_ref = reference(x)
        y, h = module(x)
    h, h_ref = (h[0], h_ref[0]) if variant == "lstm" else (h, h_ref)
    assert (y.dtype, h.dtype) == (y_ref.dtype, h_ref.dtype)
    y32, h32 = module(x.float())
    h32 = h32[0] if variant == "lstm" else h32
    assert torch.equal(y, y32.to(y.dtype)) and torch.equal(h, h32.to(h.dtype))


def test_gradients_under_autocast_reach_the_float32_parameters():
    torch.manual_seed(0)
    front, module = torch.nn.Linear(3, 4), ft.LSTM(4, 5, batch_first=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, _ = module(front(torch.randn(2, 6, 3)))   # the Linear returns bfloat16
        loss = y.float().square().sum()
    loss.backward()
    assert module.weight_hh_l0.grad.dtype == torch.float32
    assert front.weight.grad is not None and torch.isfinite(front.weight.grad).all()
