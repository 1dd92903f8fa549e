"""Shared fixtures; the shared helpers are in helpers.py."""

import sys

import pytest

import fastrnn
from fastrnn import _backends
from fastrnn.cells import CELLS
from helpers import FAST_BACKENDS


@pytest.fixture(params=list(CELLS))
def cell(request):
    return request.param


@pytest.fixture
def keep_thread_settings():
    """Put every library's thread settings back after a test that changes them."""
    from threadpoolctl import threadpool_limits
    threads = fastrnn.get_num_threads()
    torch_threads = sys.modules["torch"].get_num_threads() if "torch" in sys.modules else None
    limits = threadpool_limits(limits=None)  # restores what it saw, on request
    yield
    fastrnn.set_num_threads(threads)
    if torch_threads is not None:
        sys.modules["torch"].set_num_threads(torch_threads)
    limits.restore_original_limits()


try:  # the kernel paths of the compiled backend this CPU runs
    from fastrnn import _core as _compiled
    _ISAS = _compiled.build_info()["isa_supported"]
except ImportError:
    _compiled, _ISAS = None, []


def _use_isa(isa):
    """Switch the compiled backend to `isa`; returns the path to switch back to."""
    before = _compiled.build_info()["kernel_path"]
    _compiled._set_isa(isa)
    return before


# The avx512_bf16 and amx_bf16 copies' float32 kernels are avx512's, compiled again with
# more flags (the layer and training tests run them: one is this CPU's default where it
# has AVX512_BF16); the float32 kernel tests run the paths whose code differs, the bf16
# ones (bf16_kernels) every path.
_FP32_ISAS = [isa for isa in _ISAS if isa not in ("avx512_bf16", "amx_bf16")]


@pytest.fixture(params=_FP32_ISAS or ["none"])
def isa(request):
    """Runs the test once on every kernel path of the compiled backend."""
    if _compiled is None:
        pytest.skip("the compiled backend is not built here")
    before = _use_isa(request.param)
    yield request.param
    _compiled._set_isa(before)


# Every fast backend, the compiled one once per kernel path: "numba", "cpp-avx2", ...
def _kernel_paths(isas):
    return [f"cpp-{isa}" for isa in isas if "cpp" in FAST_BACKENDS] + \
        [name for name in FAST_BACKENDS if name != "cpp"]


_KERNEL_PATHS = _kernel_paths(_FP32_ISAS)


@pytest.fixture(params=_KERNEL_PATHS or ["none"])
def fast_kernels(request):
    """The kernel module of one fast backend, on one kernel path of the compiled backend."""
    yield from _on_kernel_path(request.param)


@pytest.fixture(params=_kernel_paths(_ISAS) or ["none"])
def bf16_kernels(request):
    """fast_kernels over every kernel path, avx512_bf16's vdpbf16ps products included."""
    yield from _on_kernel_path(request.param)


def _on_kernel_path(param):
    if param == "none":
        pytest.skip("no fast backend loads here")
    backend, _, isa = param.partition("-")
    if not isa:
        yield _backends.get_backend(backend)
        return
    before = _use_isa(isa)
    yield _backends.get_backend(backend)
    _compiled._set_isa(before)


@pytest.fixture(params=[1, 2], ids=lambda n: f"threads{n}")
def threads(request):
    """Every backend on one and on two threads; the setting is put back after."""
    before = fastrnn.get_num_threads()
    fastrnn.set_num_threads(request.param)
    yield request.param
    fastrnn.set_num_threads(before)
