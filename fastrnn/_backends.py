"""Finding the kernels: which backends load here, which one a layer uses, threads.

A backend is a module that implements the kernel contract written at the top
of `fastrnn/_reference.py` (same function names and argument order) plus
`name` and `set_num_threads(n)`.
"""

import importlib
import os
import sys
import warnings

from . import cells

# Best first: the compiled extension, then Numba, then the NumPy reference.
BACKEND_MODULES = {
    "cpp": "fastrnn._core",
    "numba": "fastrnn._numba",
    "numpy": "fastrnn._reference",
}

# What a backend module must define: every cell's kernels, and the thread setting.
KERNELS = tuple(f"{kernel}_{stage}" for kernel in cells.KERNELS
                for stage in ("forward", "backward")) + ("set_num_threads",)

# The compiled backend's pool refuses more (its kMaxThreads, csrc/parallel.h, which it
# exports as fastrnn._core.max_threads: a test holds the two equal). Checked once, in
# _thread_count, for every backend.
MAX_THREADS = 1024

_loaded = {}          # name -> module
_load_errors = {}     # name -> why it could not be loaded
_num_threads = None
_warned_fallback = False


def _try_load(name):
    if name in _loaded or name in _load_errors:
        return _loaded.get(name)
    try:
        module = importlib.import_module(BACKEND_MODULES[name])
    except ImportError as exc:
        # A bad setting (FASTRNN_ISA naming an unknown path or more than the
        # CPU has) is the user's to fix: say so rather than fall back silently.
        if isinstance(exc.__cause__, ValueError):
            raise exc.__cause__
        _load_errors[name] = f"{type(exc).__name__}: {exc}"
        return None
    except Exception as exc:  # an extension that fails to load can raise anything
        _load_errors[name] = f"{type(exc).__name__}: {exc}"
        return None
    missing = [kernel for kernel in KERNELS if not hasattr(module, kernel)]
    if missing:
        _load_errors[name] = f"{module.__name__} lacks {', '.join(missing)}"
        return None
    _loaded[name] = module
    module.set_num_threads(get_num_threads())
    return module


def available_backends():
    """Names of the backends that can run here, best first."""
    return [name for name in BACKEND_MODULES if _try_load(name) is not None]


def unavailable_backends():
    """{name: reason} for the backends that failed to load."""
    available_backends()
    return dict(_load_errors)


def release_cached_memory():
    """Give the compiled backend's cached large buffers back to the system.

    The cpp kernels keep freed buffers of 1 MiB and more (up to 1 GiB in all)
    for the next call of the same sizes, which then costs no page faults.
    Returns the bytes released; 0 where the compiled backend is not loaded.
    """
    core = _loaded.get("cpp")
    return int(core.release_cached_memory()) if core is not None else 0


def compiled_module():
    """fastrnn._core when it loads here, else None (for helpers beside the kernels)."""
    return _try_load("cpp")


def optional_kernel(backend, name):
    """The function `name` of the backend called `backend` where it has one, else None:
    kernels beside the cells' that only some backends have (the classifier head)."""
    return getattr(get_backend(backend), name, None)


def get_backend(name=None):
    """The backend module for `name`, else $FASTRNN_BACKEND, else the best available."""
    global _warned_fallback
    if name is None:
        name = os.environ.get("FASTRNN_BACKEND") or None
    if name is not None:
        if not isinstance(name, str) or name not in BACKEND_MODULES:
            raise ValueError(
                f"unknown backend {name!r}; choose one of {sorted(BACKEND_MODULES)}")
        module = _try_load(name)
        if module is None:
            raise ValueError(
                f"backend {name!r} is not available here ({_load_errors[name]}); "
                f"available: {available_backends()}")
        return module
    # The first that loads: the others (Numba compiles, and imports SciPy) load only
    # if asked for.
    best = next(name for name in BACKEND_MODULES if _try_load(name) is not None)
    if best != "cpp" and not _warned_fallback:
        _warned_fallback = True
        warnings.warn(
            f"fastrnn: compiled backend unavailable ({_load_errors.get('cpp')}); "
            f"using {best!r} instead (FASTRNN_BACKEND={best} selects it without "
            f"this warning)", RuntimeWarning, stacklevel=_user_stacklevel())
    return _loaded[best]


def _user_stacklevel():
    """The warnings stacklevel of the first caller outside fastrnn, seen from get_backend."""
    package_dir = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frame, level = sys._getframe(2), 2  # frame 2, stacklevel 2: who called get_backend
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package_dir):
        frame, level = frame.f_back, level + 1
    return level


def _default_num_threads():
    env = os.environ.get("FASTRNN_NUM_THREADS")
    if env:
        try:
            n = int(env)
        except ValueError:
            n = None
        return _thread_count(n, "FASTRNN_NUM_THREADS", env)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _thread_count(n, what, given):
    """n if it is an int from 1 to MAX_THREADS, else ValueError naming `what` and what
    was `given`."""
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_THREADS:
        raise ValueError(f"{what} must be an integer from 1 to {MAX_THREADS}, got {given!r}")
    return n


def get_num_threads():
    """Threads the kernels use (default: $FASTRNN_NUM_THREADS, else the usable CPUs)."""
    global _num_threads
    if _num_threads is None:
        _num_threads = _default_num_threads()
    return _num_threads


def set_num_threads(n):
    """Set the threads every backend uses from now on (1 to MAX_THREADS)."""
    global _num_threads
    _num_threads = _thread_count(n, "number of threads", n)
    for module in _loaded.values():
        module.set_num_threads(n)
