"""fastrnn.torch's modules against torch.nn's with the same weights: outputs, final
states and the gradients of the input, hx and every parameter, for every cell and
configuration."""

import itertools

import numpy as np
import pytest

from helpers import assert_close

from .twins import VARIANTS, pack_padded_sequence, problem, run, torch, twins


def assert_same(got, want, dtype):
    assert_close(got["y"], want["y"], "output", dtype, "y")
    assert len(got["finals"]) == len(want["finals"])
    for k, (f, f_ref) in enumerate(zip(got["finals"], want["finals"])):
        assert_close(f, f_ref, "output", dtype, f"finals[{k}]")
    assert_close(got["dx"], want["dx"], "grad", dtype, "dx")
    assert len(got["dstates0"]) == len(want["dstates0"])
    for k, (d, d_ref) in enumerate(zip(got["dstates0"], want["dstates0"])):
        assert_close(d, d_ref, "grad", dtype, f"dhx[{k}]")
    assert list(got["grads"]) == list(want["grads"])
    for key, g_ref in want["grads"].items():
        assert_close(got["grads"][key], g_ref, "grad", dtype, key)


CONFIGURATIONS = list(itertools.product(VARIANTS, [1, 2, 3], [False, True], [False, True],
                                        [True, False]))


@pytest.mark.parametrize("variant, num_layers, bidirectional, batch_first, with_hx",
                         CONFIGURATIONS)
def test_every_configuration_matches_torch_in_float64(variant, num_layers, bidirectional,
                                                      batch_first, with_hx):
    reference, module = twins(variant, 4, 6, num_layers, bidirectional=bidirectional,
                              batch_first=batch_first)
    x, states, dy, dstates = problem(variant, 5, 3, 4, 6, num_layers, bidirectional,
                                     batch_first=batch_first)
    states = states if with_hx else None
    assert_same(run(module, x, states, dy, dstates), run(reference, x, states, dy, dstates),
                np.float64)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("num_layers, bidirectional", [(1, False), (2, True)])
def test_float32_matches_torch_within_the_shared_tolerances(variant, num_layers,
                                                           bidirectional):
    reference, module = twins(variant, 7, 9, num_layers, bidirectional=bidirectional,
                              dtype=np.float32, batch_first=True)
    x, states, dy, dstates = problem(variant, 11, 5, 7, 9, num_layers, bidirectional,
                                     dtype=np.float32, batch_first=True)
    assert_same(run(module, x, states, dy, dstates), run(reference, x, states, dy, dstates),
                np.float32)


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_module_without_biases_matches_torch(variant):
    reference, module = twins(variant, 4, 5, 2, bidirectional=True, bias=False)
    assert not any("bias" in key for key in module.state_dict())
    x, states, dy, dstates = problem(variant, 6, 2, 4, 5, 2, True)
    assert_same(run(module, x, states, dy, dstates), run(reference, x, states, dy, dstates),
                np.float64)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("with_hx", [True, False])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_one_unbatched_sequence_matches_torch(variant, with_hx, bidirectional):
    reference, module = twins(variant, 3, 4, 2, bidirectional=bidirectional, batch_first=True)
    x, states, dy, dstates = problem(variant, 6, None, 3, 4, 2, bidirectional, batched=False)
    states = states if with_hx else None
    got = run(module, x, states, dy, dstates)
    assert got["y"].shape == (6, (2 if bidirectional else 1) * 4)
    assert_same(got, run(reference, x, states, dy, dstates), np.float64)


# Lengths out of order, with a sequence of one step and one of all T steps.
LENGTHS = [4, 7, 1, 7, 3]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("num_layers, bidirectional", [(1, False), (1, True), (3, True)])
@pytest.mark.parametrize("batch_first", [False, True])
def test_a_packed_sequence_with_unsorted_lengths_matches_torch(variant, num_layers,
                                                              bidirectional, batch_first):
    reference, module = twins(variant, 3, 5, num_layers, bidirectional=bidirectional,
                              batch_first=batch_first)
    x, states, dy, dstates = problem(variant, 7, 5, 3, 5, num_layers, bidirectional,
                                     batch_first=batch_first)
    for hx in (states, None):
        assert_same(run(module, x, hx, dy, dstates, lengths=LENGTHS),
                    run(reference, x, hx, dy, dstates, lengths=LENGTHS), np.float64)


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_packed_sequence_sorted_by_its_maker_matches_torch(variant):
    reference, module = twins(variant, 3, 5, 2, bidirectional=True)
    x, states, dy, dstates = problem(variant, 7, 4, 3, 5, 2, True)
    lengths = [7, 5, 5, 2]
    assert_same(run(module, x, states, dy, dstates, lengths=lengths, enforce_sorted=True),
                run(reference, x, states, dy, dstates, lengths=lengths, enforce_sorted=True),
                np.float64)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("T, B", [(1, 1), (1, 4), (9, 1)])
def test_one_step_and_one_sequence_match_torch(variant, T, B):
    reference, module = twins(variant, 5, 17, 2, bidirectional=True)
    x, states, dy, dstates = problem(variant, T, B, 5, 17, 2, True)
    assert_same(run(module, x, states, dy, dstates), run(reference, x, states, dy, dstates),
                np.float64)


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_modules_initialize_exactly_as_torch_does_from_the_same_seed(variant):
    reference, module = twins(variant, 5, 8, 2, bidirectional=True, dtype=np.float32)
    assert list(module.state_dict()) == list(reference.state_dict())
    for key, value in reference.state_dict().items():
        assert torch.equal(module.state_dict()[key], value), key
    assert all(isinstance(p, torch.nn.Parameter) for p in module.parameters())


def test_the_lstm_forget_bias_starts_at_zero_as_in_torch():
    # fastrnn.LSTM adds forget_bias=1.0 at init; the torch module must not
    _, module = twins("lstm", 3, 4, dtype=np.float32)
    torch.manual_seed(0)
    assert torch.equal(module.bias_ih_l0, torch.nn.LSTM(3, 4).bias_ih_l0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_dropout_draws_the_masks_torch_draws_from_the_same_seed(variant):
    reference, module = twins(variant, 4, 6, 3, bidirectional=True, dropout=0.4)
    x, states, dy, dstates = problem(variant, 5, 3, 4, 6, 3, True)
    for seed in (0, 1):
        torch.manual_seed(seed)
        want = run(reference, x, states, dy, dstates)
        torch.manual_seed(seed)
        assert_same(run(module, x, states, dy, dstates), want, np.float64)


def test_dropout_follows_train_and_eval_as_torch_does():
    reference, module = twins("gru", 4, 6, 2, dropout=0.5)
    x = torch.randn(5, 3, 4, dtype=torch.float64)
    torch.manual_seed(0)
    y_a, _ = module(x)
    torch.manual_seed(1)
    y_b, _ = module(x)
    assert not torch.equal(y_a, y_b)          # train mode: masks differ by seed
    with torch.no_grad():                      # ... with or without gradients
        torch.manual_seed(0)
        assert torch.equal(module(x)[0], y_a.detach())
    module.eval()
    reference.eval()
    assert torch.equal(module(x)[0], module(x)[0])
    assert_close(module(x)[0].detach(), reference(x)[0].detach(), "output", np.float64)


@pytest.mark.parametrize("variant", VARIANTS)
def test_gradcheck_passes_on_small_float64_stacks(variant):
    _, module = twins(variant, 2, 3, 2, bidirectional=True)
    x = torch.randn(3, 2, 2, dtype=torch.float64, requires_grad=True)
    h = [torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
         for _ in range(2 if variant == "lstm" else 1)]
    params = list(module.parameters())
    names = [key for key, _ in module.named_parameters()]

    def f(x, *tensors):
        states, weights = tensors[:len(h)], tensors[len(h):]
        out, finals = torch.func.functional_call(module, dict(zip(names, weights)),
                                                 (x, tuple(states) if len(h) == 2
                                                  else states[0]))
        finals = finals if isinstance(finals, tuple) else (finals,)
        return (out,) + finals

    assert torch.autograd.gradcheck(f, (x, *h, *params))


def test_gradcheck_passes_through_a_packed_sequence():
    _, module = twins("lstm", 2, 3, 2, bidirectional=True)
    x = torch.randn(4, 3, 2, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([2, 4, 1])

    def f(x):
        packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
        out, (h, c) = module(packed)
        return out.data, h, c

    assert torch.autograd.gradcheck(f, (x,))


def test_parameters_are_read_as_they_are_at_each_call():
    _, module = twins("lstm", 3, 4)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    before, _ = module(x)
    with torch.no_grad():
        module.weight_hh_l0.mul_(0.5)       # an optimizer's in-place step
    after, _ = module(x)
    reference = torch.nn.LSTM(3, 4, dtype=torch.float64)
    reference.load_state_dict(module.state_dict())
    assert not torch.allclose(before, after)
    assert_close(after.detach(), reference(x)[0].detach(), "output", np.float64)


def test_flatten_parameters_is_accepted():
    _, module = twins("gru", 3, 4)
    assert module.flatten_parameters() is None



@pytest.mark.parametrize("variant", VARIANTS)
def test_gradients_torch_hands_over_as_broadcast_views_are_taken(variant):
    reference, module = twins(variant, 3, 4, 2, bidirectional=True)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    grads = []
    for m in (module, reference):
        x_m = x.clone().requires_grad_(True)
        y, finals = m(x_m)
        finals = finals if isinstance(finals, tuple) else (finals,)
        (y.sum() + sum(f.sum() for f in finals)).backward()   # dy, dh_n: expanded ones
        grads.append(x_m.grad)
    assert_close(grads[0], grads[1], "grad", np.float64, "dx")


@pytest.mark.parametrize("variant", VARIANTS)
def test_inputs_and_states_of_any_strides_are_taken(variant):
    reference, module = twins(variant, 4, 5, 2, bidirectional=True, batch_first=True)
    x_wide = torch.randn(3, 6, 8, dtype=torch.float64)
    h_wide = torch.randn(3, 4, 5, dtype=torch.float64).transpose(0, 1)   # (4, 3, 5) view
    x = x_wide[:, :, ::2]                       # every other feature: a strided last axis
    hx = (h_wide, h_wide * 0.5) if variant == "lstm" else h_wide
    y, _ = module(x, hx)
    y_ref, _ = reference(x, hx)
    assert_close(y.detach(), y_ref.detach(), "output", np.float64, "y")
