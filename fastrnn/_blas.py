"""BLAS threads. The numpy and numba backends multiply matrices in OpenBLAS (NumPy's
copy and SciPy's), so `fastrnn.set_num_threads` must reach its thread pools too."""

# Loads SciPy's BLAS now: threadpoolctl only limits libraries already loaded, and
# Numba's matrix products call this one.
import scipy.linalg.cython_blas  # noqa: F401
from threadpoolctl import threadpool_limits


def limit_threads(n):
    threadpool_limits(limits=int(n), user_api="blas")
