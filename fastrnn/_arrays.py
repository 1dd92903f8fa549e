"""Array arguments from outside, converted and checked once on the way in.

Every public entry (the layers, the model, checkpoints) takes array-likes through these:
each returns an array the kernels can use or raises TypeError / ValueError naming the fix.
"""

import functools

import numpy as np

DTYPES = (np.float32, np.float64)


def check_dtype(dtype):
    """`dtype` as a numpy dtype if it is float32 or float64, else ValueError."""
    if np.dtype(dtype) not in [np.dtype(d) for d in DTYPES]:
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
    return np.dtype(dtype)


@functools.lru_cache(maxsize=16)
def zeros(shape, dtype):
    """A read-only array of zeros, one per (shape, dtype), for the states and gradients
    a caller leaves out: no new allocation at every step. (np.zeros takes its pages from
    calloc, so a large one costs address space, not memory.)"""
    array = np.zeros(shape, dtype)
    array.flags.writeable = False
    return array


def as_real_array(value, dtype, what):
    """`value` as a C-contiguous array of `dtype`, refusing what is not real numbers."""
    if type(value) is np.ndarray and value.dtype == dtype and value.flags.c_contiguous:
        return value  # the common case, without the dtype checks below
    try:
        array = np.asarray(value)
    except Exception as exc:
        raise TypeError(f"{what} must be an array of real numbers: {exc}") from None
    if array.dtype == np.bool_ or not (np.issubdtype(array.dtype, np.integer)
                                      or np.issubdtype(array.dtype, np.floating)):
        raise TypeError(f"{what} must hold real numbers, got dtype {array.dtype}")
    return np.ascontiguousarray(array, dtype=dtype)


def check_shape(array, shape, what):
    if array.shape != tuple(shape):
        raise ValueError(f"{what} must have shape {tuple(shape)}, got {array.shape}")


def check_lengths(lengths, T, B):
    """`lengths` as B int64 in [1, T], else TypeError or ValueError naming the fix."""
    try:
        array = np.asarray(lengths)
    except Exception as exc:
        raise TypeError(f"lengths must be B integers in [1, T]: {exc}") from None
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"lengths must be integers, one per sequence, got dtype {array.dtype} "
                        f"(pass numpy.asarray(lengths, dtype=numpy.int64))")
    if array.ndim != 1 or array.size != B:
        raise ValueError(f"lengths must have shape (B,) = ({B},), one length per sequence of "
                         f"x, got shape {array.shape}")
    outside = np.flatnonzero((array < 1) | (array > T))
    if outside.size:
        b = int(outside[0])
        raise ValueError(f"lengths must lie in [1, T] = [1, {T}], got {array[b]} for "
                         f"sequence {b}")
    return array.astype(np.int64)


def check_keys(mapping, params, what):
    """TypeError unless `mapping` is a mapping; ValueError naming the missing and the
    unexpected keys unless it has exactly the keys of `params`."""
    if not hasattr(mapping, "keys"):
        raise TypeError(f"{what} must be a mapping keyed like the parameters, "
                        f"got {type(mapping).__name__}")
    if mapping.keys() != params.keys():   # (two dicts' keys compare as sets, at once)
        missing = sorted(set(params) - set(mapping))
        unexpected = sorted(set(mapping) - set(params))
        if missing or unexpected:
            raise ValueError(f"{what} keys do not match the parameters: missing {missing}, "
                             f"unexpected {unexpected}")


def load_parameters(params, state_dict):
    """Copy `state_dict` into the live arrays `params` (same keys and shapes), in place.

    Every entry is checked before any is changed, so a bad one leaves all as they were.
    """
    check_keys(state_dict, params, "state_dict")
    converted = {}
    for key, target in params.items():
        value = as_real_array(state_dict[key], target.dtype, f"state_dict[{key!r}]")
        check_shape(value, target.shape, f"state_dict[{key!r}]")
        converted[key] = value
    for key, target in params.items():
        np.copyto(target, converted[key])
