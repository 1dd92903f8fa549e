"""Frozen layers and classifiers: the layer's inference outputs, bit for bit, from weights
prepared once; streams that give forward's outputs one frame at a time."""

import gc
import threading

import numpy as np
import pytest

import fastrnn
from helpers import (BACKENDS, CELL_VARIANTS, assert_close, flat_state, make_stack,
                     stack_problem)

QUANTIZE = [None, "bf16", "int8"]


def frozen_problem(variant, T=6, B=3, I=5, H=9, num_layers=1, bidirectional=False,
                   backend=None, seed=0):
    """A float32 layer and its x (B, T, I) and a nonzero state."""
    layer = make_stack(variant, I, H, num_layers, bidirectional, backend=backend,
                       dtype=np.float32, seed=seed)
    x, state, _, _ = stack_problem(variant, T, B, I, H, num_layers, bidirectional,
                                   dtype=np.float32, seed=seed)
    return layer, x, state


def same_bits(got, want):
    return all(np.array_equal(g, w) for g, w in zip(flat_state(got), flat_state(want)))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("variant", CELL_VARIANTS)
@pytest.mark.parametrize("num_layers, bidirectional", [(1, False), (2, False), (2, True)])
def test_a_float_frozen_layer_gives_the_layers_outputs_bit_for_bit(backend, variant, num_layers,
                                                                     bidirectional):
    layer, x, state = frozen_problem(variant, num_layers=num_layers, bidirectional=bidirectional,
                                     backend=backend)
    frozen = layer.freeze()
    lengths = np.array([6, 1, 4])
    for kwargs in ({}, {"lengths": lengths}):
        y, final = layer.forward(x, state, training=False, **kwargs)
        y_frozen, final_frozen = frozen.forward(x, state, **kwargs)
        assert np.array_equal(y_frozen, y) and same_bits(final_frozen, final)
    y, final = layer.forward(x, training=False)
    assert same_bits((frozen(x)[0], *flat_state(frozen(x)[1])), (y, *flat_state(final)))


@pytest.mark.parametrize("quantize", QUANTIZE)
def test_later_changes_to_the_layer_do_not_reach_the_frozen_copy(quantize):
    layer, x, state = frozen_problem("lstm")
    frozen = layer.freeze(quantize)
    before = frozen.forward(x, state)
    for value in layer.parameters().values():
        value *= 2.0
    after = frozen.forward(x, state)
    assert np.array_equal(before[0], after[0]) and same_bits(before[1], after[1])
    assert not np.array_equal(layer.forward(x, state, training=False)[0], after[0])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("quantize", QUANTIZE)
@pytest.mark.parametrize("variant", CELL_VARIANTS)
@pytest.mark.parametrize("B, num_layers", [(1, 1), (3, 2)])
def test_a_stream_of_t_steps_gives_forwards_outputs_and_final_state_bit_for_bit(
        backend, quantize, variant, B, num_layers):
    layer, x, state = frozen_problem(variant, T=7, B=B, num_layers=num_layers, backend=backend)
    frozen = layer.freeze(quantize)
    y, final = frozen.forward(x, state)
    stream = frozen.stream(B)
    stream.reset(state)
    # The compiled kernels compute a step alike whatever T; the other float backends
    # project every step's input in one BLAS product, whose rounding may depend on T.
    exact = backend == "cpp" or quantize == "int8"
    for t in range(x.shape[1]):
        h_t = stream.step(np.ascontiguousarray(x[:, t]))
        if exact:
            assert np.array_equal(h_t, y[:, t]), t
        else:
            assert_close(h_t, y[:, t], "output", np.float32, f"h_{t}")
    if exact:
        assert same_bits(stream.state, final)
    for got, want in zip(flat_state(stream.state), flat_state(final)):
        assert_close(got, want, "output", np.float32, "state_T")


@pytest.mark.parametrize("quantize", QUANTIZE)
@pytest.mark.parametrize("variant", CELL_VARIANTS)
@pytest.mark.parametrize("B", [1, 2])
def test_small_batches_that_project_their_inputs_first_give_the_steps_bits_on_every_path(
        isa, threads, quantize, variant, B):
    # A frozen forward of a few rows computes x_t W_ih^T for several steps at once, then
    # each step's h_{t-1} W_hh^T, every other step through its blocks of units in reverse;
    # a stream computes [x_t | h_{t-1}] [W_ih | W_hh]^T one step at a time. T spans
    # several chunks of projected steps, H several blocks of units, the last one partial,
    # and is large enough for the LSTM and GRU to split their units between two threads.
    layer, x, state = frozen_problem(variant, T=21, B=B, I=28, H=130)
    frozen = layer.freeze(quantize)
    y, final = frozen.forward(x, state)
    stream = frozen.stream(B)
    stream.reset(state)
    for t in range(x.shape[1]):
        assert np.array_equal(stream.step(np.ascontiguousarray(x[:, t])), y[:, t]), t
    assert same_bits(stream.state, final)
    if quantize is None:
        want = layer.forward(x, state, training=False)
        assert np.array_equal(y, want[0]) and same_bits(final, want[1])
    # Packed by length: the chunks hold fewer rows as sequences end.
    lengths = np.array([21, 8])[:B]
    y, final = frozen.forward(x, state, lengths=lengths)
    for b, length in enumerate(lengths):
        alone = frozen.forward(x[b:b + 1, :length], [s[:, b:b + 1] for s in flat_state(state)]
                               if isinstance(state, tuple) else state[:, b:b + 1])
        assert np.array_equal(y[b, :length], alone[0][0])
        assert all(np.array_equal(f[:, b], a[:, 0])
                   for f, a in zip(flat_state(final), flat_state(alone[1])))


@pytest.mark.parametrize("quantize", QUANTIZE)
def test_reset_and_state_round_trip(quantize):
    layer, x, state = frozen_problem("lstm", T=8, B=2)
    stream = layer.freeze(quantize).stream(2)
    frames = [np.ascontiguousarray(x[:, t]) for t in range(8)]
    for frame in frames[:3]:
        stream.step(frame)
    middle = stream.state
    rest = [stream.step(frame) for frame in frames[3:]]
    end = stream.state
    stream.reset(middle)
    assert same_bits(stream.state, middle)
    assert all(np.array_equal(stream.step(frame), r) for frame, r in zip(frames[3:], rest))
    assert same_bits(stream.state, end)
    stream.reset()
    assert all(not s.any() for s in flat_state(stream.state))
    # the state handed out is a copy: changing it leaves the stream alone
    flat_state(stream.state)[0][...] = 1.0
    assert not flat_state(stream.state)[0].any()


@pytest.mark.parametrize("quantize", QUANTIZE)
def test_many_streams_of_one_frozen_model_run_from_several_threads_each_correct(quantize):
    layer, x, _ = frozen_problem("gru", T=12, B=2, I=6, H=20, num_layers=2)
    frozen = layer.freeze(quantize)
    inputs = [np.random.default_rng(s).standard_normal((2, 12, 6)).astype(np.float32)
              for s in range(6)]
    expected = [frozen.forward(x_s)[0] for x_s in inputs]
    results, errors = [None] * len(inputs), []

    def run(i):
        try:
            stream = frozen.stream(2)
            for _ in range(3):   # again and again, from zeros each time
                stream.reset()
                out = [stream.step(np.ascontiguousarray(inputs[i][:, t])) for t in range(12)]
            results[i] = np.stack(out, axis=1)
        except Exception as exc:   # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(np.array_equal(r, e) for r, e in zip(results, expected))


@pytest.mark.parametrize("quantize", QUANTIZE)
def test_a_stream_keeps_working_after_its_frozen_model_is_deleted(quantize):
    layer, x, _ = frozen_problem("lstm", B=1)
    frozen = layer.freeze(quantize)
    want = frozen.forward(x)[0]
    stream = frozen.stream()
    del frozen, layer
    gc.collect()
    got = np.stack([stream.step(np.ascontiguousarray(x[:, t])) for t in range(x.shape[1])], 1)
    assert np.array_equal(got, want)


@pytest.mark.parametrize("quantize", QUANTIZE)
@pytest.mark.parametrize("variant", CELL_VARIANTS)
def test_nan_in_a_frame_propagates_and_reset_recovers(quantize, variant):
    layer, x, _ = frozen_problem(variant, B=2)
    stream = layer.freeze(quantize).stream(2)
    frame = np.ascontiguousarray(x[:, 0])
    frame[1, 2] = np.nan
    out = stream.step(frame)
    assert np.all(np.isnan(out[1])) and np.all(np.isfinite(out[0]))
    stream.reset()
    assert np.all(np.isfinite(stream.step(np.ascontiguousarray(x[:, 0]))))


@pytest.mark.parametrize("quantize", QUANTIZE)
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_a_frozen_classifier_gives_the_models_logits_and_predictions(quantize, cell):
    rng = np.random.default_rng(1)
    model = fastrnn.SequenceClassifier(6, 10, 4, cell=cell, num_layers=2, seed=3)
    x = rng.standard_normal((7, 5, 6)).astype(np.float32)
    labels = rng.integers(0, 4, 7)
    lengths = np.array([5, 2, 5, 1, 3, 4, 5])
    frozen = model.freeze(quantize)
    for kwargs in ({}, {"lengths": lengths}):
        logits = frozen.logits(x, **kwargs)
        assert logits.shape == (7, 4)
        if quantize is None:
            assert np.array_equal(logits, model.logits(x, **kwargs))
        else:
            assert np.abs(logits - model.logits(x, **kwargs)).max() < 0.05
        assert np.array_equal(frozen.predict(x, **kwargs), logits.argmax(axis=1))
        loss, accuracy = frozen.evaluate(x, labels, **kwargs)
        assert accuracy == np.mean(logits.argmax(axis=1) == labels) and loss > 0
    stream = frozen.stream(7)
    for t in range(5):
        out = stream.step(np.ascontiguousarray(x[:, t]))
    # the recurrent part bit for bit; the head sums in its own order (NumPy's BLAS here)
    assert same_bits(stream.state, frozen.layer.forward(x)[1])
    assert_close(out, frozen.logits(x), "output", np.float32, "logits")


def test_frozen_int8_weights_take_a_quarter_of_the_float_bytes_plus_scales():
    layer = fastrnn.LSTM(28, 128, seed=0)
    float_bytes, int8_bytes = layer.freeze().nbytes, layer.freeze("int8").nbytes
    weights = 4 * 128 * (28 + 128)
    assert float_bytes == 4 * weights + 4 * 512
    assert int8_bytes < float_bytes / 3.5


# -- bad input: a clear error, never a crash -----------------------------------------


def test_a_stream_refuses_frames_of_the_wrong_width_dtype_or_batch():
    layer, x, _ = frozen_problem("lstm", I=5)
    stream = layer.freeze().stream(3)
    with pytest.raises(ValueError, match=r"x_t must have shape \(B, I\) = \(3, 5\)"):
        stream.step(np.zeros((3, 4), np.float32))
    with pytest.raises(ValueError, match=r"batch_size=3, got \(2, 5\)"):
        stream.step(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match=r"got \(3, 1, 5\)"):
        stream.step(np.zeros((3, 1, 5), np.float32))
    with pytest.raises(TypeError, match=r"dtype float64, the stream takes float32"):
        stream.step(np.zeros((3, 5)))
    with pytest.raises(TypeError, match="numpy.ndarray"):
        stream.step([[0.0] * 5] * 3)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        layer.freeze().stream(0)
    with pytest.raises(ValueError, match=r"c0 must have shape"):
        stream.reset((np.zeros((1, 3, 9), np.float32), np.zeros((1, 2, 9), np.float32)))


def test_stream_of_a_bidirectional_model_is_refused():
    layer, _, _ = frozen_problem("gru", bidirectional=True)
    with pytest.raises(ValueError, match="bidirectional.*forward\\(x\\)"):
        layer.freeze().stream()


@pytest.mark.parametrize("quantize", ["int4", "INT8", "fp16", 8, True])
def test_an_unknown_quantize_is_refused(quantize):
    layer, _, _ = frozen_problem("rnn")
    with pytest.raises(ValueError, match="quantize must be one of None, 'bf16', 'int8', got"):
        layer.freeze(quantize)


def test_int8_of_a_float64_layer_is_refused():
    layer = fastrnn.GRU(3, 4, dtype=np.float64)
    with pytest.raises(ValueError, match="float32 layer, this one is float64"):
        layer.freeze("int8")


@pytest.mark.parametrize("variant", CELL_VARIANTS)
def test_a_bf16_frozen_layer_runs_the_bf16_kernels_bit_for_bit(variant):
    core = pytest.importorskip("fastrnn._core")
    layer, x, state = frozen_problem(variant, T=5, B=4, I=7, H=33)
    p = layer.parameters()
    w_ih, w_hh, b_ih, b_hh = (p[key] for key in ("weight_ih_l0", "weight_hh_l0",
                                                 "bias_ih_l0", "bias_hh_l0"))
    x_tm = np.ascontiguousarray(x.transpose(1, 0, 2))
    states = [s[0] for s in flat_state(state)]
    want = getattr(core, f"{layer.kernel}_forward")(x_tm, *states, w_ih, w_hh, b_ih, b_hh,
                                                    False, precision="bf16")
    y, final = layer.freeze("bf16").forward(x, state)
    assert np.array_equal(y, want[0].transpose(1, 0, 2))
    if variant == "lstm":
        assert np.array_equal(final[1][0], want[1])


def test_a_float64_layer_freezes_to_float64_and_streams():
    layer = fastrnn.LSTM(5, 9, num_layers=2, dtype=np.float64, seed=1)
    x = np.random.default_rng(2).standard_normal((3, 6, 5))
    frozen = layer.freeze()
    y, final = frozen.forward(x)
    want_y, want_final = layer.forward(x, training=False)
    assert y.dtype == np.float64 and np.array_equal(y, want_y) and same_bits(final, want_final)
    stream = frozen.stream(3)
    steps = [stream.step(np.ascontiguousarray(x[:, t])) for t in range(6)]
    assert np.array_equal(np.stack(steps, 1), y[:, :, :])
    with pytest.raises(TypeError, match="dtype float32, the stream takes float64"):
        stream.step(x[:, 0].astype(np.float32))


def test_one_stream_stepped_from_two_threads_at_once_refuses_rather_than_mix_states():
    pytest.importorskip("fastrnn._core")
    layer = fastrnn.LSTM(64, 256, backend="cpp", seed=0)
    stream = layer.freeze().stream(64)
    frame = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    outcomes = []

    def hammer():
        for _ in range(30):
            try:
                stream.step(frame)
                outcomes.append("stepped")
            except RuntimeError as exc:
                assert "stepping in another thread" in str(exc)
                outcomes.append("refused")

    threads = [threading.Thread(target=hammer) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(outcomes) == 60 and "stepped" in outcomes
    # whatever interleaving happened, the stream is whole: from a reset it is forward's
    stream.reset()
    steps = [stream.step(frame) for _ in range(3)]
    y, _ = layer.freeze().forward(np.repeat(frame[:, None], 3, axis=1))
    assert np.array_equal(np.stack(steps, 1), y)
