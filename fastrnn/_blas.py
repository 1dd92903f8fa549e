"""BLAS threads. The numpy and numba backends multiply matrices in OpenBLAS (NumPy's
copy and SciPy's), so `fastrnn.set_num_threads` must reach its thread pools too."""

from threadpoolctl import threadpool_limits


def limit_threads(n):
    """Limit every BLAS loaded so far (threadpoolctl cannot reach one loaded later)."""
    threadpool_limits(limits=int(n), user_api="blas")
