"""Matrix products for the Numba kernels: `gemm`, in the BLAS NumPy multiplies with.

Numba's own np.dot calls SciPy's BLAS, copies any operand whose rows are not
adjacent, and always overwrites its output. `gemm` calls BLAS's gemm itself:
operands may be row slices of wider arrays (any row stride, unit column
stride), and beta=1 adds the product to the output in place.

Which BLAS. NumPy's wheels bundle their own OpenBLAS (64-bit integers,
symbols `scipy_sgemm_64_`), SciPy's wheels another (32-bit integers), often
of another version: here NumPy's 0.3.31 ran the weight gradients' long
transposed GEMMs 10-40% faster than SciPy's 0.3.30, which is where the Numba
backward lost to the NumPy reference. So the kernels call NumPy's when it is
found, else SciPy's (through scipy.linalg.cython_blas): the same products,
the same threads (fastrnn.set_num_threads limits both), run in the same
library as the reference's.

How, with compiled kernels cached on disk: the kernels call the external
symbols `fastrnn_sgemm` and `fastrnn_dgemm`, always with the 64-bit-integer
Fortran interface, and this module binds those names at import to NumPy's
gemm or, without it, to adapters that pass 32-bit integers on to SciPy's. A
cached kernel so never depends on which BLAS it found when it was compiled.
"""

import ctypes
import os

import numpy as np
import scipy.linalg.cython_blas as cython_blas
from llvmlite import binding, ir
from numba import cfunc, njit, types
from numba.core import cgutils
from numba.extending import intrinsic

# The symbols the kernels call, by element type.
_KERNEL_SYMBOLS = {types.float32: "fastrnn_sgemm", types.float64: "fastrnn_dgemm"}
# SciPy's gemm, for the adapters: 32-bit integers.
_SCIPY_SYMBOLS = {types.float32: "fastrnn_scipy_sgemm", types.float64: "fastrnn_scipy_dgemm"}
_TRANSPOSED, _NOT_TRANSPOSED = ord("T"), ord("N")


def _fortran_gemm(symbols, int_bits):
    """An intrinsic calling Fortran gemm (every argument by reference) through
    symbols[dtype], with int_bits-wide integers. Its matrices are arrays (their
    data pointers are passed) or raw pointers; its scalars are values."""

    @intrinsic
    def call(typingctx, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
        dtype = c.dtype
        sig = types.void(transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)

        def codegen(context, builder, signature, args):
            integer = ir.IntType(int_bits)
            real = context.get_value_type(dtype)
            argtypes = signature.args

            def by_reference(index, kind):
                value, vtype = args[index], argtypes[index]
                if kind == "char":
                    value = builder.trunc(context.cast(builder, value, vtype, types.int64),
                                          ir.IntType(8))
                elif kind == "int":
                    value = builder.trunc(context.cast(builder, value, vtype, types.int64),
                                          integer) if int_bits < 64 else \
                        context.cast(builder, value, vtype, types.int64)
                else:
                    value = context.cast(builder, value, vtype, dtype)
                return cgutils.alloca_once_value(builder, value)

            def data(index):
                value, vtype = args[index], argtypes[index]
                if isinstance(vtype, types.Array):
                    value = context.make_array(vtype)(context, builder, value).data
                return builder.bitcast(value, real.as_pointer())

            kinds = ("char", "char", "int", "int", "int", "real", None, "int", None, "int",
                     "real", None, "int")
            call_args = [data(i) if kind is None else by_reference(i, kind)
                         for i, kind in enumerate(kinds)]
            fnty = ir.FunctionType(ir.VoidType(), [arg.type for arg in call_args])
            fn = cgutils.get_or_insert_function(builder.module, fnty, symbols[dtype])
            builder.call(fn, call_args)
            return context.get_dummy_value()
        return sig, codegen
    return call


_gemm64 = _fortran_gemm(_KERNEL_SYMBOLS, 64)


@njit(cache=True, nogil=True)
def gemm(a, transpose_a, b, transpose_b, c, beta):
    """c = op(a) op(b) + beta c, op(m) = m.T if its flag is set, else m.

    Row-major 2-D arrays of one dtype whose last axis is contiguous, rows at
    any stride (a row slice of a wider array, a view of every other row...).
    beta 0 overwrites c (which may hold garbage), 1 adds to it.
    """
    M, N = c.shape
    K = a.shape[0] if transpose_a else a.shape[1]
    # BLAS is column-major: row-major c = op(a) op(b) is column-major
    # c^T = op(b)^T op(a)^T, whose operands are b's and a's memory as they lie.
    _gemm64(_TRANSPOSED if transpose_b else _NOT_TRANSPOSED,
            _TRANSPOSED if transpose_a else _NOT_TRANSPOSED,
            N, M, K, 1.0, b, _leading_dimension(b), a, _leading_dimension(a),
            beta, c, _leading_dimension(c))


@njit(cache=True, nogil=True)
def _leading_dimension(m):
    # BLAS wants it >= the row length even where the stride says nothing (one row).
    return max(m.strides[0] // m.itemsize, m.shape[1], 1)


# ----------------------------------------------------------------- binding


def _numpy_gemm_addresses():
    """{float32: address, float64: address} of the 64-bit-integer gemm in the
    OpenBLAS that NumPy loaded from its own wheel, or None."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    numpy_home = os.path.dirname(os.path.dirname(os.path.abspath(np.__file__)))
    for library in ThreadpoolController().select(internal_api="openblas").lib_controllers:
        path = os.path.abspath(library.filepath)
        if not os.path.basename(os.path.dirname(path)).startswith("numpy") or \
                os.path.dirname(os.path.dirname(path)) != numpy_home:
            continue
        handle = ctypes.CDLL(path)
        for prefix in ("scipy_", ""):
            try:
                return {dtype: ctypes.cast(getattr(handle, f"{prefix}{letter}gemm_64_"),
                                           ctypes.c_void_p).value
                        for dtype, letter in ((types.float32, "s"), (types.float64, "d"))}
            except AttributeError:
                continue
    return None


def _cython_blas_address(name):
    """The address of a function that scipy.linalg.cython_blas exports."""
    capsule = cython_blas.__pyx_capi__[name]
    ctypes.pythonapi.PyCapsule_GetName.restype = ctypes.c_char_p
    ctypes.pythonapi.PyCapsule_GetName.argtypes = [ctypes.py_object]
    ctypes.pythonapi.PyCapsule_GetPointer.restype = ctypes.c_void_p
    ctypes.pythonapi.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    return ctypes.pythonapi.PyCapsule_GetPointer(
        capsule, ctypes.pythonapi.PyCapsule_GetName(capsule))


_gemm32 = _fortran_gemm(_SCIPY_SYMBOLS, 32)


def _scipy_adapter(dtype):
    """A C function with the kernels' gemm interface (64-bit integers, by
    reference) that calls SciPy's gemm (32-bit integers)."""
    char, integer, real = (types.CPointer(types.uint8), types.CPointer(types.int64),
                           types.CPointer(dtype))

    @cfunc(types.void(char, char, integer, integer, integer, real, real, integer, real,
                      integer, real, real, integer), cache=True, nogil=True)
    def adapter(transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
        _gemm32(transa[0], transb[0], m[0], n[0], k[0], alpha[0], a, lda[0], b, ldb[0],
                beta[0], c, ldc[0])
    return adapter


def _bind():
    """Binds fastrnn_sgemm/dgemm to NumPy's gemm, else to SciPy's; returns which.

    FASTRNN_NUMBA_BLAS=scipy asks for SciPy's (to compare them); =numpy, for
    NumPy's or an error.
    """
    wanted = os.environ.get("FASTRNN_NUMBA_BLAS") or None
    if wanted not in (None, "numpy", "scipy"):
        raise ValueError(f"FASTRNN_NUMBA_BLAS must be numpy or scipy, got {wanted!r}")
    addresses = None if wanted == "scipy" else _numpy_gemm_addresses()
    if addresses is None and wanted == "numpy":
        raise RuntimeError("FASTRNN_NUMBA_BLAS=numpy: NumPy's own OpenBLAS (a wheel's, with "
                           "64-bit integers) is not loaded here; unset it to use SciPy's")
    if addresses is not None:
        provider = "numpy"
    else:
        provider = "scipy"
        for dtype, name in (types.float32, "sgemm"), (types.float64, "dgemm"):
            binding.add_symbol(_SCIPY_SYMBOLS[dtype], _cython_blas_address(name))
        adapters = {dtype: _scipy_adapter(dtype) for dtype in _KERNEL_SYMBOLS}
        addresses = {dtype: adapter.address for dtype, adapter in adapters.items()}
        _ADAPTERS.update(adapters)   # kept alive: the symbols point into them
    for dtype, address in addresses.items():
        binding.add_symbol(_KERNEL_SYMBOLS[dtype], address)
    return provider


_ADAPTERS = {}
provider = _bind()   # "numpy" or "scipy": whose gemm the kernels call
