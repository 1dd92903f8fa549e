"""What a forward keeps for its backward: only where gradients will be asked for,
for as long as autograd holds the graph, and several forwards in flight at once."""

import numpy as np
import pytest

from fastrnn.torch import _ops
from helpers import assert_close

from .twins import problem, run, torch, twins


def test_no_grad_and_inference_mode_keep_nothing_and_give_the_same_outputs():
    _, module = twins("lstm", 3, 4, 2, bidirectional=True)
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    kept = len(_ops._records)
    y, _ = module(x)
    assert len(_ops._records) == kept + 1   # parameters need gradients: a record
    for mode in (torch.no_grad, torch.inference_mode):
        with mode():
            y_mode, _ = module(x)
        assert len(_ops._records) == kept + 1
        assert torch.equal(y_mode, y.detach())
    del y
    assert len(_ops._records) == kept       # the graph went, and its record with it


def test_a_record_lives_until_its_backward_is_done():
    _, module = twins("gru", 3, 4)
    kept = len(_ops._records)
    y, _ = module(torch.randn(5, 2, 3, dtype=torch.float64))
    loss = y.sum()
    del y
    assert len(_ops._records) == kept + 1
    loss.backward()
    assert len(_ops._records) == kept


def test_a_module_with_frozen_weights_on_an_input_without_gradients_keeps_nothing():
    _, module = twins("rnn", 3, 4)
    module.requires_grad_(False)
    kept = len(_ops._records)
    y, _ = module(torch.randn(5, 2, 3, dtype=torch.float64))
    assert not y.requires_grad and len(_ops._records) == kept


def test_several_forwards_in_flight_each_get_their_own_backward():
    reference, module = twins("lstm", 3, 5, 2, bidirectional=True)
    problems = [problem("lstm", T, 2, 3, 5, 2, True, seed=T) for T in (4, 7)]
    losses = []
    for x, states, dy, _ in problems:
        y, _ = module(x, tuple(states))
        losses.append((y * dy).sum())
    grads = [torch.autograd.grad(loss, list(module.parameters())) for loss in losses[::-1]]
    for (x, states, dy, dstates), got in zip(problems, grads[::-1]):
        want = run(reference, x, states, dy, [torch.zeros_like(d) for d in dstates])
        for g, key in zip(got, want["grads"]):
            assert_close(g, want["grads"][key], "grad", np.float64, key)


def test_backward_twice_through_a_retained_graph_gives_the_same_gradients():
    _, module = twins("gru", 3, 4, 2, bidirectional=True)
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    y, _ = module(x)
    first = torch.autograd.grad(y.square().sum(), x, retain_graph=True)[0]
    second = torch.autograd.grad(y.square().sum(), x)[0]
    assert torch.equal(first, second)


def test_changing_an_output_in_place_before_backward_is_torch_s_error():
    _, module = twins("rnn", 3, 4)
    y, _ = module(torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True))
    loss = y.sum()
    y.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()
