"""Variable-length batches: `lengths=` against torch's PackedSequence on every backend, the
layer's own promises (nothing past a length counts), and the errors that name the fix.

The numpy and numba backends take packed batches once their kernels accept batch_sizes;
these tests are meant to pass on every backend."""

import numpy as np
import pytest

from helpers import (BACKENDS, CELL_VARIANTS, assert_close, assert_same_results,
                     fastrnn_results, make_stack, stack_problem, torch_results,
                     torch_stack)

STACKS = [(1, False), (1, True), (3, True)]   # (num_layers, bidirectional)
# (T, lengths): a length of 1 beside a length of T, one sequence shorter than T,
# every length different, and lengths in no order
CASES = [(5, [5, 1, 3]), (4, [2]), (7, [1, 7, 2, 6, 3, 5, 4]), (6, [3, 6, 6, 1, 1])]


def stack_id(stack):
    return f"L{stack[0]}-{'bi' if stack[1] else 'uni'}"


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.mark.parametrize("batch_first", [True, False], ids=["batch_first", "time_major"])
@pytest.mark.parametrize("stack", STACKS, ids=stack_id)
@pytest.mark.parametrize("T,lengths", CASES, ids=lambda v: str(v).replace(" ", ""))
@pytest.mark.parametrize("variant", sorted(CELL_VARIANTS))
def test_lengths_match_torch_packed_sequences(backend, variant, T, lengths, stack,
                                              batch_first):
    pytest.importorskip("torch")
    B, I, H = len(lengths), 3, 9
    module = torch_stack(variant, I, H, *stack, batch_first=batch_first, seed=T)
    layer = make_stack(variant, I, H, *stack, backend=backend, batch_first=batch_first)
    layer.load_state_dict({k: v.numpy() for k, v in module.state_dict().items()})
    problem = stack_problem(variant, T, B, I, H, *stack, batch_first=batch_first, seed=B)
    assert_same_results(fastrnn_results(layer, *problem, lengths=lengths),
                        torch_results(module, *problem, lengths=lengths), np.float64)


def sequence(state, b):
    """Sequence b's share of a state or its gradient: (L*D, 1, H) each."""
    if isinstance(state, tuple):
        return tuple(s[:, b:b + 1] for s in state)
    return state[:, b:b + 1]


@pytest.mark.parametrize("stack", STACKS, ids=stack_id)
@pytest.mark.parametrize("variant", sorted(CELL_VARIANTS))
def test_every_sequence_gives_what_it_gives_alone_and_nothing_past_its_length_counts(
        backend, variant, stack):
    T, I, H = 6, 2, 5
    lengths = np.array([4, 6, 1, 4])
    layer = make_stack(variant, I, H, *stack, backend=backend, seed=3)
    x, state, dy, dstate = stack_problem(variant, T, 4, I, H, *stack, seed=1)
    got = fastrnn_results(layer, x, state, dy, dstate, lengths=lengths)
    # what lies past a length, in x and in dy, changes nothing
    noisy_x, noisy_dy = x.copy(), dy.copy()
    for b, n in enumerate(lengths):
        noisy_x[b, n:] = 1e6
        noisy_dy[b, n:] = -1e6
    noisy = fastrnn_results(layer, noisy_x, state, noisy_dy, dstate, lengths=lengths)
    for key in ("y", "dx"):
        np.testing.assert_array_equal(noisy[key], got[key])
    for b, n in enumerate(lengths):
        assert not got["y"][b, n:].any() and not got["dx"][b, n:].any()
        alone = fastrnn_results(layer, x[b:b + 1, :n], sequence(state, b), dy[b:b + 1, :n],
                                sequence(dstate, b))
        assert_close(got["y"][b, :n], alone["y"][0], "output", np.float64, f"y[{b}]")
        assert_close(got["dx"][b, :n], alone["dx"][0], "grad", np.float64, f"dx[{b}]")
        for s, s_alone in zip(got["state_T"], alone["state_T"]):
            assert_close(s[:, b], s_alone[:, 0], "output", np.float64, f"state_T[{b}]")
        for d, d_alone in zip(got["dstate0"], alone["dstate0"]):
            assert_close(d[:, b], d_alone[:, 0], "grad", np.float64, f"dstate0[{b}]")


@pytest.mark.parametrize("variant", sorted(CELL_VARIANTS))
def test_full_lengths_give_exactly_the_unpacked_results(backend, variant):
    T, B, I, H = 5, 3, 4, 6
    layer = make_stack(variant, I, H, 2, True, backend=backend, seed=2)
    problem = stack_problem(variant, T, B, I, H, 2, True, seed=4)
    full = fastrnn_results(layer, *problem, lengths=[T] * B)
    plain = fastrnn_results(layer, *problem)
    for key in ("y", "dx"):
        np.testing.assert_array_equal(full[key], plain[key])
    for key in ("state_T", "dstate0"):
        for a, b in zip(full[key], plain[key]):
            np.testing.assert_array_equal(a, b)


def test_lengths_may_be_any_integer_sequence(backend):
    layer = make_stack("lstm", 2, 3, backend=backend)
    x = np.random.default_rng(0).standard_normal((3, 4, 2))
    want, _ = layer.forward(x, lengths=np.array([4, 2, 1], np.int64), training=False)
    for lengths in ([4, 2, 1], (4, 2, 1), np.array([4, 2, 1], np.int32),
                    np.array([4, 2, 1], np.uint8)):
        got, _ = layer.forward(x, lengths=lengths, training=False)
        np.testing.assert_array_equal(got, want)
    torch = pytest.importorskip("torch")
    got, _ = layer.forward(x, lengths=torch.tensor([4, 2, 1]), training=False)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("lengths, error, match", [
    ([4.0, 2.0, 1.0], TypeError, r"lengths must be integers.*dtype float64"),
    ([True, True, False], TypeError, r"lengths must be integers.*dtype bool"),
    (["4", "2", "1"], TypeError, r"lengths must be integers"),
    ([4, 2], ValueError, r"lengths must have shape \(B,\) = \(3,\).*got shape \(2,\)"),
    ([[4, 2, 1]], ValueError, r"lengths must have shape \(B,\) = \(3,\)"),
    (4, ValueError, r"lengths must have shape \(B,\)"),
    ([4, 0, 1], ValueError, r"lengths must lie in \[1, T\] = \[1, 4\], got 0 for sequence 1"),
    ([4, 5, 1], ValueError, r"lengths must lie in \[1, T\] = \[1, 4\], got 5 for sequence 1"),
    ([4, 2, -3], ValueError, r"got -3 for sequence 2"),
])
def test_bad_lengths_are_refused_with_the_fix(backend, lengths, error, match):
    for variant in CELL_VARIANTS:
        layer = make_stack(variant, 2, 3, 2, True, backend=backend)
        with pytest.raises(error, match=match):
            layer.forward(np.zeros((3, 4, 2)), lengths=lengths)
