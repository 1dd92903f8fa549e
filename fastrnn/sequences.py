"""Variable-length data: sequences of their own lengths as one padded batch and its lengths."""

import numbers

import numpy as np

from ._arrays import as_real_array


def pad_sequences(seqs, *, padding_value=0.0, dtype=np.float32):
    """(x, lengths) of a list of B sequences, each a (T_b, I) array-like: x (B, max T_b, I)
    batch-first with sequence b in x[b, :T_b] and `padding_value` after it, lengths (B,)
    int64, ready for a layer's or a classifier's `lengths=`.

    Like torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True), which gives no lengths.
    Every sequence needs at least one time step and the same I.
    """
    if isinstance(seqs, (str, bytes)) or not hasattr(seqs, "__iter__"):
        raise TypeError(f"seqs must be a list of (T_b, I) arrays, got {type(seqs).__name__}")
    if not np.issubdtype(np.dtype(dtype), np.floating):
        raise TypeError(f"dtype must be a floating type such as numpy.float32, got {dtype!r}")
    if isinstance(padding_value, bool) or not isinstance(padding_value, numbers.Real):
        raise TypeError(f"padding_value must be a real number, got {padding_value!r}")
    arrays = [as_real_array(seq, dtype, f"seqs[{b}]") for b, seq in enumerate(seqs)]
    if not arrays:
        raise ValueError("pad_sequences needs at least one sequence, got none")
    I = arrays[0].shape[-1] if arrays[0].ndim == 2 else None
    for b, array in enumerate(arrays):
        if array.ndim != 2:
            raise ValueError(f"seqs[{b}] must be 2-D (T_b, I), got shape {array.shape} "
                             f"(a sequence of scalars is (T_b, 1): reshape(-1, 1))")
        if array.shape[0] == 0:
            raise ValueError(f"seqs[{b}] has no time steps: every sequence needs at least "
                             f"one (lengths lie in [1, T])")
        if array.shape[1] != I:
            raise ValueError(f"seqs[{b}] has {array.shape[1]} features and seqs[0] {I}: "
                             f"every sequence needs the same input size I")
    lengths = np.array([array.shape[0] for array in arrays], dtype=np.int64)
    x = np.full((len(arrays), int(lengths.max()), I), padding_value, dtype=dtype)
    for row, array in zip(x, arrays):
        row[:array.shape[0]] = array
    return x, lengths
