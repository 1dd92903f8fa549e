"""fastrnn's kernels and torch's operators on one team of threads.

In one process, torch's intra-op threads (an OpenMP team) and fastrnn's pool starve
each other: after a parallel region torch's OpenMP workers keep spinning (libgomp's
default spin, measured here as 3.5 ms of CPU after a 512x512 Linear's forward and
backward), on the very cores fastrnn's workers then need, and with a barrier at every
time step the kernels wait for whichever thread the OS put aside. So where torch runs
on OpenMP, fastrnn's kernels run their parallel jobs on torch's OpenMP team
(`_core._use_openmp_runtime`): the workers spinning after torch's last operator take
fastrnn's next job at once, and no third thread competes for the cores. And the
kernels use torch.get_num_threads() threads unless the user chose a count for fastrnn.
"""

import ctypes
import functools
import glob
import os

import torch

from .. import _backends


@functools.lru_cache(maxsize=None)
def share_torch_openmp():
    """Hand torch's OpenMP runtime to the compiled kernels, once; whether it was."""
    core = _backends.compiled_module()
    if core is None or not hasattr(core, "_use_openmp_runtime") \
            or "parallel backend: OpenMP" not in torch.__config__.parallel_info():
        return False
    entry_points = _torch_openmp_entry_points()
    if entry_points is None:
        return False
    core._use_openmp_runtime(*entry_points)
    return True


def _torch_openmp_entry_points():
    """The addresses of GOMP_parallel, omp_get_thread_num and omp_get_num_threads in the
    OpenMP runtime torch's own library loaded (looked up through that library, so it is
    torch's runtime even where another one is loaded too), or None."""
    lib_dir = os.path.join(os.path.dirname(torch.__file__), "lib")
    for path in sorted(glob.glob(os.path.join(lib_dir, "libtorch_cpu.*"))):
        try:
            library = ctypes.CDLL(path, mode=getattr(os, "RTLD_NOLOAD", 0)
                                  | getattr(os, "RTLD_LAZY", 0))
            functions = [getattr(library, name) for name in
                         ("GOMP_parallel", "omp_get_thread_num", "omp_get_num_threads")]
        except (OSError, AttributeError):
            continue
        return tuple(ctypes.cast(f, ctypes.c_void_p).value for f in functions)
    return None


def follow_torch():
    """The kernels' thread count: torch.get_num_threads(), unless the user chose one."""
    _backends.follow_num_threads(torch.get_num_threads())
