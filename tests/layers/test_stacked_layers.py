"""Stacked and bidirectional layers: torch's parameters, state layout and results, the
reference against every backend, dropout, step() and the errors that name the fix."""

import hashlib

import numpy as np
import pytest

import fastrnn
from fastrnn.cells import CELLS
from helpers import (BACKENDS, CELL_VARIANTS, assert_close, assert_same_results,
                     fastrnn_results, flat_state, make_stack, numeric_gradient, relative_error,
                     stack_problem, torch_results, torch_stack)

STACKS = [(1, False), (1, True), (2, False), (3, True)]   # (num_layers, bidirectional)


def stack_id(stack):
    return f"L{stack[0]}-{'bi' if stack[1] else 'uni'}"


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


# -- parameters -------------------------------------------------------------------


def test_one_layer_weights_of_a_seed_are_those_of_fastrnn_0_1():
    # sha256 of the state_dict's bytes and two entries, computed with fastrnn 0.1.0:
    # checkpoints, seeds and accuracy figures of one-layer runs stay valid.
    expected = {"rnn": ("330b65e3b2c738f2", 0.33213603496551514),
                "lstm": ("dde4a287a3c41b08", 0.03434276580810547),
                "gru": ("f08bb632133ad02a", 0.40333136916160583)}
    for variant, (digest, last_bias) in expected.items():
        state = make_stack(variant, 3, 5, backend="numpy", dtype=np.float32, seed=7).state_dict()
        assert hashlib.sha256(b"".join(v.tobytes() for v in state.values())).hexdigest()[:16] \
            == digest, variant
        assert float(state["weight_ih_l0"][0, 0]) == 0.11188878864049911
        assert float(state["bias_hh_l0"][-1]) == last_bias
    model = fastrnn.SequenceClassifier(3, 5, 4, seed=7, backend="numpy")
    params = model.parameters()
    assert hashlib.sha256(b"".join(params[k].tobytes() for k in sorted(params))).hexdigest()[
        :16] == "be410914cec97647"


@pytest.mark.parametrize("stack", [(3, True), (2, False)], ids=stack_id)
@pytest.mark.parametrize("variant", sorted(CELL_VARIANTS))
def test_a_torch_state_dict_of_any_stack_loads_unchanged_and_gives_torchs_results(
        backend, variant, stack):
    T, B, I, H = 5, 3, 4, 7
    module = torch_stack(variant, I, H, *stack, seed=11)
    layer = make_stack(variant, I, H, *stack, backend=backend)
    state_dict = {k: v.numpy() for k, v in module.state_dict().items()}
    layer.load_state_dict(state_dict)
    assert list(layer.state_dict()) == list(state_dict)
    for key, value in layer.state_dict().items():
        assert value.shape == state_dict[key].shape and value.dtype == np.float64
    problem = stack_problem(variant, T, B, I, H, *stack, seed=2)
    assert_same_results(fastrnn_results(layer, *problem), torch_results(module, *problem),
                        np.float64)


def test_one_layers_shapes_keys_and_dtypes_follow_the_table_of_cells(cell, backend):
    B, T, I, H = 3, 4, 5, 7
    G = CELLS[cell].G
    for dtype in (np.float32, np.float64):
        layer = make_stack(cell, I, H, backend=backend, dtype=dtype, seed=0)
        assert (layer.cell, layer.gates, layer.backend) == (cell, G, backend)
        assert {k: v.shape for k, v in layer.state_dict().items()} == {
            "weight_ih_l0": (G * H, I), "weight_hh_l0": (G * H, H),
            "bias_ih_l0": (G * H,), "bias_hh_l0": (G * H,)}
        y, final = layer.forward(np.ones((B, T, I)))
        assert y.shape == (B, T, H) and y.dtype == dtype
        assert [(s.shape, s.dtype) for s in flat_state(final)] == \
            [((1, B, H), dtype)] * len(CELLS[cell].states)
        np.testing.assert_array_equal(flat_state(final)[0][0], y[:, -1])
        dx, dstate0 = layer.backward(np.ones_like(y))
        assert dx.shape == (B, T, I) and flat_state(dstate0)[0].shape == (1, B, H)
        assert {k: (g.shape, g.dtype) for k, g in layer.grads.items()} == \
            {k: (v.shape, dtype) for k, v in layer.state_dict().items()}
    assert repr(layer).startswith(f"{CELLS[cell].layer}(5, 7, batch_first=True")


def test_a_seed_draws_the_same_weights_on_every_backend(cell):
    weights = [make_stack(cell, 8, 16, 2, True, backend=name, dtype=np.float32,
                          seed=3).state_dict() for name in BACKENDS]
    for other in weights[1:]:
        for key, value in weights[0].items():
            np.testing.assert_array_equal(other[key], value)


@pytest.mark.parametrize("variant", sorted(CELL_VARIANTS))
def test_parameters_are_drawn_like_torchs_in_state_dict_order(backend, variant):
    pytest.importorskip("torch")
    H, L = 16, 3
    layer = make_stack(variant, 5, H, L, True, backend=backend, dtype=np.float32, seed=3)
    module = torch_stack(variant, 5, H, L, True)
    assert {k: v.shape for k, v in layer.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in module.state_dict().items()}
    bound = 1 / np.sqrt(H)
    values = []
    for key, value in layer.parameters().items():
        value = value.copy()
        if variant == "lstm" and key.startswith("bias_ih"):
            value[H:2 * H] -= 1.0   # forget_bias=1.0, in every layer and direction
        assert np.abs(value).max() <= bound, key
        values.append(value.ravel())
    values = np.concatenate(values)   # thousands of draws: they fill U(-bound, bound)
    assert np.abs(values).max() > 0.99 * bound and abs(values.mean()) < 0.05 * bound
    again = make_stack(variant, 5, H, L, True, backend=backend, dtype=np.float32, seed=3)
    for key, value in again.state_dict().items():
        np.testing.assert_array_equal(value, layer.state_dict()[key])


# -- every backend against the reference and torch --------------------------------


@pytest.mark.parametrize("batch_first", [True, False], ids=["batch_first", "time_major"])
@pytest.mark.parametrize("stack", STACKS, ids=stack_id)
@pytest.mark.parametrize("T,B,I,H", [(1, 1, 1, 1), (4, 1, 3, 5), (6, 3, 2, 17)],
                         ids=lambda v: str(v))
@pytest.mark.parametrize("variant", sorted(CELL_VARIANTS))
def test_stacks_match_torch_and_the_reference(backend, variant, T, B, I, H, stack,
                                              batch_first):
    pytest.importorskip("torch")
    module = torch_stack(variant, I, H, *stack, batch_first=batch_first, seed=T + H)
    state_dict = {k: v.numpy() for k, v in module.state_dict().items()}
    problem = stack_problem(variant, T, B, I, H, *stack, batch_first=batch_first, seed=B)
    want = torch_results(module, *problem)
    for dtype in (np.float64, np.float32):
        layer = make_stack(variant, I, H, *stack, backend=backend, dtype=dtype,
                           batch_first=batch_first)
        layer.load_state_dict(state_dict)
        cast = [tuple(np.asarray(a, dtype) for a in flat_state(v)) if isinstance(v, tuple)
                else np.asarray(v, dtype) for v in problem]
        got = fastrnn_results(layer, *cast)
        if dtype == np.float64:
            assert_same_results(got, want, dtype)
        else:   # float32: against the reference in float32
            reference = make_stack(variant, I, H, *stack, backend="numpy", dtype=dtype,
                                   batch_first=batch_first)
            reference.load_state_dict(state_dict)
            assert_same_results(got, fastrnn_results(reference, *cast), dtype)


@pytest.mark.parametrize("variant", sorted(CELL_VARIANTS))
def test_state_is_laid_out_as_torchs_and_one_layer_takes_b_by_h(backend, variant):
    T, B, I, H = 3, 2, 4, 5
    layer = make_stack(variant, I, H, 2, True, backend=backend)
    x, state, dy, dstate = stack_problem(variant, T, B, I, H, 2, True)
    y, final = layer.forward(x, state)
    assert y.shape == (B, T, 2 * H)
    assert [s.shape for s in flat_state(final)] == [(4, B, H)] * len(flat_state(state))
    _, dstate0 = layer.backward(dy, dstate)
    assert [s.shape for s in flat_state(dstate0)] == [(4, B, H)] * len(flat_state(state))
    # the last layer's forward direction ends at y[:, -1], the reverse one at y[:, 0]
    np.testing.assert_array_equal(flat_state(final)[0][2], y[:, -1, :H])
    np.testing.assert_array_equal(flat_state(final)[0][3], y[:, 0, H:])

    single = make_stack(variant, I, H, backend=backend)
    x, state, _, _ = stack_problem(variant, T, B, I, H)
    y_full, final_full = single.forward(x, state)
    y_flat, final_flat = single.forward(x, tuple(s[0] for s in flat_state(state))
                                        if variant == "lstm" else state[0])
    np.testing.assert_array_equal(y_flat, y_full)
    for a, b in zip(flat_state(final_flat), flat_state(final_full)):
        assert a.shape == (1, B, H)
        np.testing.assert_array_equal(a, b)


# -- dropout --------------------------------------------------------------------------


def see_through_stack(backend, p, seed=0):
    """A 2-layer tanh RNN whose layer 1 shows what it was given: W_ih = identity, no
    recurrence, no bias, so its y is tanh(mask * y0) for layer 0's output y0; and a
    one-layer twin of layer 0 that gives y0."""
    layer = make_stack("rnn", 4, 32, 2, backend=backend, dropout=p, seed=seed)
    params = layer.parameters()
    params["weight_ih_l1"][...] = np.eye(32)
    for key in ("weight_hh_l1", "bias_ih_l1", "bias_hh_l1"):
        params[key][...] = 0.0
    twin = make_stack("rnn", 4, 32, backend=backend)
    twin.load_state_dict({key: value for key, value in layer.state_dict().items()
                          if key.endswith("_l0")})
    return layer, twin


def test_dropout_keeps_outputs_with_probability_one_minus_p_and_scales_them(backend):
    p = 0.3
    layer, twin = see_through_stack(backend, p)
    x = np.random.default_rng(0).standard_normal((40, 25, 4))
    y, _ = layer.forward(x)
    y0, _ = twin.forward(x, training=False)
    kept = y != 0
    assert abs(kept.mean() - (1 - p)) < 0.012   # 32000 draws: 5 standard deviations
    np.testing.assert_allclose(np.arctanh(y[kept]), y0[kept] / (1 - p), rtol=1e-9)


def test_dropout_acts_in_training_only_and_the_same_seed_gives_the_same_masks(backend):
    x = np.random.default_rng(1).standard_normal((3, 6, 4))
    plain, _ = see_through_stack(backend, 0.0, seed=5)[0].forward(x)
    inference, _ = see_through_stack(backend, 0.5, seed=5)[0].forward(x, training=False)
    np.testing.assert_array_equal(inference, plain)
    first, second = see_through_stack(backend, 0.5, seed=5)[0], \
        see_through_stack(backend, 0.5, seed=5)[0]
    draws = []
    for _ in range(2):   # the masks of the first forward, then of the second
        y1, _ = first.forward(x)
        y2, _ = second.forward(x)
        np.testing.assert_array_equal(y1, y2)
        draws.append(y1 != 0)
    assert not np.array_equal(*draws)   # each forward draws masks of its own
    assert not np.array_equal(draws[0], see_through_stack(backend, 0.5, seed=6)[0].forward(
        x)[0] != 0)


@pytest.mark.parametrize("lengths", [None, [5, 1, 3, 5, 2, 4, 5]], ids=["full", "lengths"])
def test_dropout_masks_depend_on_seed_step_layer_and_row_not_on_how_the_batch_is_split(
        backend, lengths):
    # What ranks rely on: rows 0-2 and rows 3-6, each given their first row, are masked as
    # rows 0-6 of one forward are.
    T, B, I, H = 5, 7, 3, 6
    x, state, _, _ = stack_problem("gru", T, B, I, H, 3, True)
    layer = make_stack("gru", I, H, 3, True, backend=backend, dropout=0.5, seed=1)
    layer.seed_dropout(11, step=4)
    whole, _ = layer.forward(x, state, lengths=lengths)
    parts = []
    for rows in (slice(0, 3), slice(3, B)):
        layer.seed_dropout(11, step=4, first_row=rows.start)
        parts.append(layer.forward(x[rows], state[:, rows],
                                   lengths=None if lengths is None else lengths[rows])[0])
    assert_close(np.concatenate(parts), whole, "output", np.float64, "y")
    # The next forward takes the next step: step 5's masks, not step 4's again.
    layer.seed_dropout(11, step=4)
    layer.forward(x, state, lengths=lengths)
    following, _ = layer.forward(x, state, lengths=lengths)
    layer.seed_dropout(11, step=5)
    np.testing.assert_array_equal(layer.forward(x, state, lengths=lengths)[0], following)
    assert not np.array_equal(following, whole)
    for other in ({"seed": 12, "step": 4}, {"seed": 11, "step": 3}):
        layer.seed_dropout(**other)
        assert not np.array_equal(layer.forward(x, state, lengths=lengths)[0], whole), other


def test_dropout_masks_of_each_layer_and_of_each_row_differ():
    from fastrnn._dropout import dropout_mask
    masks = [dropout_mask(0.5, np.dtype(np.float32), 3, 0, k, (4, 6, 8)) for k in (1, 2)]
    assert not np.array_equal(*masks)
    rows = masks[0].transpose(1, 0, 2).reshape(6, -1)
    assert len({row.tobytes() for row in rows}) == 6
    assert set(np.unique(masks[0])) == {0.0, 2.0}


@pytest.mark.parametrize("seed, step, first_row", [(-1, 0, 0), (0, 1.5, 0), (0, 0, True)])
def test_seed_dropout_refuses_what_is_not_a_non_negative_integer(seed, step, first_row):
    layer = make_stack("gru", 3, 4, 2, backend="numpy", dropout=0.5)
    with pytest.raises(ValueError, match="must be an integer >= 0"):
        layer.seed_dropout(seed, step, first_row)


def test_dropout_backward_uses_the_forwards_masks_and_matches_finite_differences(backend):
    T, B, I, H = 4, 3, 2, 5
    x, state, dy, dstate = stack_problem("lstm", T, B, I, H, 3, True, seed=3)
    params = make_stack("lstm", I, H, 3, True, backend="numpy", seed=2).state_dict()

    def loss():
        # a new layer of the same seed: its first forward draws the same masks
        layer = make_stack("lstm", I, H, 3, True, backend=backend, dropout=0.4, seed=2)
        layer.load_state_dict(params)
        y, final = layer.forward(x, state)
        return float(np.sum(y * dy)) + sum(float(np.sum(s * d))
                                           for s, d in zip(final, dstate))

    layer = make_stack("lstm", I, H, 3, True, backend=backend, dropout=0.4, seed=2)
    layer.load_state_dict(params)
    layer.forward(x, state)
    layer.forward(x, state)   # the second forward's masks differ from the first's ...
    assert loss() != pytest.approx(float(np.sum(layer.forward(x, state)[0] * dy)) + sum(
        float(np.sum(s * d)) for s, d in zip(layer.forward(x, state)[1], dstate)))
    layer = make_stack("lstm", I, H, 3, True, backend=backend, dropout=0.4, seed=2)
    layer.load_state_dict(params)
    layer.forward(x, state)   # ... so the gradients are the first forward's
    dx, dstate0 = layer.backward(dy, dstate)
    analytic = {"x": dx, "h0": dstate0[0], **layer.grads}
    for name, array in {"x": x, "h0": state[0], "weight_hh_l1": params["weight_hh_l1"],
                        "bias_ih_l2_reverse": params["bias_ih_l2_reverse"],
                        "weight_ih_l1_reverse": params["weight_ih_l1_reverse"]}.items():
        assert relative_error(analytic[name], numeric_gradient(loss, array)) < 1e-6, name


# -- what the kernels are handed --------------------------------------------------


def recording(stack, stage):
    """Replaces the stack's <stage> kernel by one that records each call's arguments."""
    calls, kernel = [], getattr(stack, f"{stage}_kernel")

    def record(*args, **kwargs):
        calls.append((args, kwargs))
        return kernel(*args, **kwargs)

    setattr(stack, f"{stage}_kernel", record)
    return calls


def by_direction(calls):
    """Recorded calls of a bidirectional stack, each layer's forward direction first (on two
    threads the two directions run at once and may be recorded either way)."""
    pairs = [calls[i:i + 2] for i in range(0, len(calls), 2)]
    return [call for pair in pairs
            for call in sorted(pair, key=lambda call: call[1].get("reverse", False))]


@pytest.mark.parametrize("variant", sorted(CELL_VARIANTS))
def test_directions_and_layers_over_full_sequences_hand_the_kernels_views_not_copies(
        backend, variant):
    """Two layers of two directions: the reverse direction reads the layer's input itself
    (reverse=True), both write their halves of one output (out=), which the next layer
    reads as it is; backward hands each direction its half of dy, and y, as views."""
    T, B, I, H = 4, 3, 5, 6
    layer = make_stack(variant, I, H, 2, bidirectional=True, backend=backend,
                       batch_first=False)
    forwards = recording(layer._stack, "forward")
    backwards = recording(layer._stack, "backward")
    x, state, dy, dstate = stack_problem(variant, T, B, I, H, 2, True, batch_first=False)
    y, _ = layer.forward(x, state)
    layer.backward(dy, dstate)
    forwards, backwards = by_direction(forwards), by_direction(backwards)
    inputs = [args[0] for args, _ in forwards]
    outs = [kwargs["out"] for _, kwargs in forwards]
    assert [kwargs.get("reverse", False) for _, kwargs in forwards] == [False, True] * 2
    assert inputs[0] is x and inputs[1] is x
    assert outs[0].base is outs[1].base is inputs[2] is inputs[3]
    assert outs[2].base is outs[3].base is y
    n = len(flat_state(state))   # backward's arguments: saved, states, w_ih, w_hh, y, dy
    ys = [args[n + 3] for args, _ in backwards]
    dys = [args[n + 4] for args, _ in backwards]
    assert [kwargs.get("reverse", False) for _, kwargs in backwards] == [False, True] * 2
    assert all(got is want for got, want in zip(ys, [outs[2], outs[3], outs[0], outs[1]]))
    assert dys[0].base is dys[1].base is dy
    assert dys[2].base is dys[3].base is not None   # the halves of layer 1's dx


@pytest.mark.parametrize("variant", sorted(CELL_VARIANTS))
def test_the_reverse_direction_is_a_one_way_layer_on_the_reversed_input_to_the_bit(
        backend, variant):
    """reverse=True reads x backwards where it lies, and its dx rows come in x's order,
    not the order the recurrence ran: the results must not depend on it. H = 100 makes
    BPTT's input gradient a product deeper than one block of the compiled GEMM, whose
    last rows fall in a partial tile."""
    T, B, I, H = 5, 7, 3, 100
    layer = make_stack(variant, I, H, 1, bidirectional=True, backend=backend,
                       batch_first=False, dtype=np.float32)
    x, _, dy, _ = stack_problem(variant, T, B, I, H, 1, True, batch_first=False,
                                dtype=np.float32)
    dy[..., :H] = 0    # a loss on the reverse direction's outputs only
    y, _ = layer.forward(x, training=True)
    dx = layer.backward(dy)[0]
    reverse = layer.sublayer(range(1), direction=1)
    y_one_way, _ = reverse.forward(x[::-1].copy(), training=True)
    dx_one_way = reverse.backward(dy[::-1, :, H:].copy())[0]
    assert np.array_equal(y[..., H:], y_one_way[::-1])
    assert np.array_equal(dx, dx_one_way[::-1])   # the forward direction's dx is 0


# -- step() --------------------------------------------------------------------------


@pytest.mark.parametrize("variant", sorted(CELL_VARIANTS))
def test_step_runs_every_layer_and_ends_where_forward_ends(backend, variant):
    T, B, I, H = 5, 2, 3, 7
    layer = make_stack(variant, I, H, 3, backend=backend, dropout=0.5, seed=1)
    x, state, _, _ = stack_problem(variant, T, B, I, H, 3)
    y, final = layer.forward(x, state, training=False)
    s = state
    for t in range(T):
        s = layer.step(x[:, t], s)
        assert_close(flat_state(s)[0][-1], y[:, t], "output", np.float64, f"h_{t + 1}")
    for got, want in zip(flat_state(s), flat_state(final)):
        assert got.shape == (3, B, H)
        assert_close(got, want, "output", np.float64, "state_T")


# -- errors ---------------------------------------------------------------------------


def test_step_on_a_bidirectional_layer_says_to_use_forward(backend):
    layer = make_stack("gru", 3, 4, bidirectional=True, backend=backend)
    with pytest.raises(ValueError, match=r"bidirectional.*forward\(x\)"):
        layer.step(np.zeros((2, 3)))


@pytest.mark.parametrize("dropout, error", [(-0.1, ValueError), (1.0, ValueError),
                                            (float("nan"), ValueError), ("0.5", TypeError),
                                            (None, TypeError), (True, TypeError)])
def test_dropout_outside_zero_to_one_or_not_a_number_is_refused(dropout, error):
    for variant in CELL_VARIANTS:
        with pytest.raises(error, match=r"dropout must .*\[0, 1\)"):
            make_stack(variant, 3, 4, 2, dropout=dropout, backend="numpy")


@pytest.mark.parametrize("num_layers", [0, -1, 1.5, True, "2"])
def test_num_layers_below_one_or_not_an_integer_is_refused(num_layers):
    with pytest.raises(ValueError, match="num_layers must be a positive integer"):
        make_stack("lstm", 3, 4, num_layers, backend="numpy")


def test_nonlinearity_other_than_tanh_or_relu_is_refused():
    with pytest.raises(ValueError, match=r"nonlinearity must be 'tanh' or 'relu'"):
        fastrnn.RNN(3, 4, nonlinearity="sigmoid")


@pytest.mark.parametrize("variant", sorted(CELL_VARIANTS))
def test_a_state_of_the_wrong_layout_names_the_expected_one(backend, variant):
    layer = make_stack(variant, 3, 4, 2, True, backend=backend)
    x = np.zeros((5, 6, 3))
    wrong = np.zeros((5, 4))   # (B, H) is for one layer and direction only
    pair = (lambda h: (h, np.zeros((4, 5, 4)))) if variant == "lstm" else (lambda h: h)
    with pytest.raises(ValueError, match=r"h0 must have shape \(num_layers \* "
                                         r"num_directions, B, H\) = \(4, 5, 4\)"):
        layer.forward(x, pair(wrong))
    with pytest.raises(ValueError, match=r"= \(4, 5, 4\)"):
        layer.forward(x, pair(np.zeros((2, 5, 4))))
    layer.forward(x)
    with pytest.raises(ValueError, match=r"dh_T.*= \(4, 5, 4\)"):
        layer.backward(None, pair(np.zeros((4, 5, 3))))
    with pytest.raises(ValueError, match=r"dy must have shape \(5, 6, 8\)"):
        layer.backward(np.zeros((5, 6, 4)))


@pytest.mark.skipif("cpp" not in BACKENDS, reason="the compiled backend is not built here")
def test_two_threads_run_the_directions_side_by_side_with_the_bits_of_one_thread(
        keep_thread_settings, monkeypatch):
    from fastrnn import _stack
    rng = np.random.default_rng(4)
    x = rng.standard_normal((7, 9, 5)).astype(np.float32)
    lengths = np.array([9, 1, 4, 9, 2, 7, 3])
    dy = rng.standard_normal((7, 9, 2 * 33)).astype(np.float32)

    def run():
        layer = fastrnn.GRU(5, 33, num_layers=2, bidirectional=True, backend="cpp", seed=0)
        y, h_T = layer.forward(x, lengths=lengths)
        dx, dh0 = layer.backward(dy, np.ones_like(h_T))
        return [y, h_T, dx, dh0] + [layer.grads[k] for k in sorted(layer.grads)]

    fastrnn.set_num_threads(1)
    one_thread = run()
    worker = _stack._direction_worker()
    submitted = []
    monkeypatch.setattr(worker, "submit",
                        lambda fn, **kw: submitted.append(fn) or type(worker).submit(worker, fn, **kw))
    fastrnn.set_num_threads(2)
    side_by_side = run()
    assert len(submitted) == 4   # the reverse direction of 2 layers, forward and backward
    for got, want in zip(side_by_side, one_thread):
        assert np.array_equal(got, want)
