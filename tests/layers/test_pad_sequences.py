"""fastrnn.pad_sequences: sequences of their own lengths into one batch for `lengths=`, and
the errors that name the fix, its own and those of a ragged x given to a layer."""

import numpy as np
import pytest

import fastrnn
from helpers import needs_torch

I = 3
# A length of 1 beside the longest, lengths in no order
LENGTHS = [4, 1, 7, 7, 2]


def sequences(lengths=LENGTHS, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((T_b, I)) for T_b in lengths]


def test_pad_sequences_is_public():
    assert "pad_sequences" in fastrnn.__all__


def test_sequences_are_padded_batch_first_with_int64_lengths():
    seqs = sequences()
    x, lengths = fastrnn.pad_sequences(seqs, padding_value=-2.0)
    assert x.shape == (5, 7, I) and x.dtype == np.float32
    assert lengths.dtype == np.int64 and lengths.tolist() == LENGTHS
    for b, seq in enumerate(seqs):
        np.testing.assert_array_equal(x[b, :len(seq)], seq.astype(np.float32))
        assert np.all(x[b, len(seq):] == -2.0)
    x64, _ = fastrnn.pad_sequences([seq.tolist() for seq in seqs], dtype=np.float64)
    assert x64.dtype == np.float64
    np.testing.assert_array_equal(x64[2], seqs[2])


@needs_torch
def test_the_padded_batch_is_torchs_pad_sequence():
    import torch
    seqs = sequences()
    x, _ = fastrnn.pad_sequences(seqs, padding_value=0.5, dtype=np.float64)
    expected = torch.nn.utils.rnn.pad_sequence([torch.from_numpy(s) for s in seqs],
                                               batch_first=True, padding_value=0.5)
    np.testing.assert_array_equal(x, expected.numpy())


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_a_classifier_on_the_padded_batch_gives_each_sequence_its_logits_alone(cell):
    seqs = sequences(seed=1)
    model = fastrnn.SequenceClassifier(I, 5, 4, cell=cell, bidirectional=True, seed=2)
    x, lengths = fastrnn.pad_sequences(seqs)
    logits = model.logits(x, lengths=lengths)
    for b, seq in enumerate(seqs):
        alone = model.logits(seq[None].astype(np.float32))
        np.testing.assert_allclose(logits[b], alone[0], rtol=0, atol=1e-5)


@pytest.mark.parametrize("seqs,error,match", [
    ([], ValueError, "at least one sequence"),
    ([np.zeros((2, 3)), np.zeros((4, 2))], ValueError, r"seqs\[1\] has 2 features and "
                                                       r"seqs\[0\] 3"),
    ([np.zeros((2, 3)), np.zeros(4)], ValueError, r"seqs\[1\] must be 2-D \(T_b, I\), "
                                                  r"got shape \(4,\)"),
    ([np.zeros((2, 3, 1))], ValueError, r"seqs\[0\] must be 2-D"),
    ([np.zeros((2, 3)), np.zeros((0, 3))], ValueError, r"seqs\[1\] has no time steps"),
    ([np.zeros((2, 3)), np.zeros((2, 3), complex)], TypeError, r"seqs\[1\] must hold real"),
    ([np.ones((2, 3), bool)], TypeError, r"seqs\[0\] must hold real"),
    ([["a", "b"]], TypeError, r"seqs\[0\] must hold real"),
    ([[[1.0, 2.0], [3.0]]], TypeError, r"seqs\[0\] must be an array of real numbers"),
    (np.float32(1.0), TypeError, "seqs must be a list of"),
    ("abc", TypeError, "seqs must be a list of"),
], ids=["empty", "feature-sizes", "1-D-item", "3-D-item", "no-steps", "complex", "bool",
        "strings", "ragged-item", "scalar", "string"])
def test_bad_sequences_are_refused_naming_the_item(seqs, error, match):
    with pytest.raises(error, match=match):
        fastrnn.pad_sequences(seqs)


@pytest.mark.parametrize("options,match", [
    ({"dtype": np.int64}, "dtype must be a floating type"),
    ({"padding_value": "0"}, "padding_value must be a real number"),
    ({"padding_value": True}, "padding_value must be a real number"),
])
def test_bad_options_are_refused(options, match):
    with pytest.raises(TypeError, match=match):
        fastrnn.pad_sequences(sequences(), **options)


RAGGED = [np.zeros((4, I), np.float32), np.zeros((2, I), np.float32)]


@pytest.mark.parametrize("call", [
    lambda: fastrnn.GRU(I, 4).forward(RAGGED),
    lambda: fastrnn.LSTM(I, 4, batch_first=False).forward(RAGGED),
    lambda: fastrnn.SequenceClassifier(I, 4, 2).loss_and_grads(RAGGED, [0, 1]),
    lambda: fastrnn.SequenceClassifier(I, 4, 2).logits(RAGGED),
    lambda: fastrnn.SequenceClassifier(I, 4, 2).predict(RAGGED),
    lambda: fastrnn.SequenceClassifier(I, 4, 2).evaluate(RAGGED, [0, 1]),
], ids=["layer", "time-major-layer", "loss_and_grads", "logits", "predict", "evaluate"])
def test_a_ragged_x_is_refused_with_the_advice_to_pad_it(call):
    with pytest.raises(ValueError, match=r"x is a list of sequences of different shapes.*"
                                         r"fastrnn\.pad_sequences\(seqs\).*lengths=lengths"):
        call()
