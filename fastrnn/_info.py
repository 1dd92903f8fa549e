"""What fastrnn finds on this machine: version, backends, CPU, kernel path, threads."""

from importlib import metadata

from . import _backends

try:
    __version__ = metadata.version("fastrnn")
except metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0+unknown"


def _cpu_flags():
    """x86 feature flags the kernels care about, from /proc/cpuinfo (Linux)."""
    wanted = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_bf16",
              "amx_bf16")
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return [name for name in wanted if name in flags]
    except OSError:
        pass
    return []


def info():
    """A dict describing this installation; `fastrnn info` prints it.

    `default_backend` is the backend a layer gets without backend=: FASTRNN_BACKEND's
    where that is set. Where the variable names no backend that loads here (so that
    every such layer refuses to build), `default_backend` is None and `backend_error`
    says why.
    """
    backends = _backends.available_backends()
    try:
        default, error = _backends.default_backend(), None
    except ValueError as exc:
        default, error = None, str(exc)
    result = {
        "version": __version__,
        "backends": backends,
        "default_backend": default,
        **({"backend_error": error} if error else {}),
        "unavailable": _backends.unavailable_backends(),
        "threads": _backends.get_num_threads(),
        "cpu_features": _cpu_flags(),
    }
    if "cpp" in backends:
        core = _backends.get_backend("cpp")
        result.update(core.build_info())
    else:  # precision "bf16" on Numba or NumPy: float32 products of the rounded operands
        result["bf16_path"] = "portable"
    return result
