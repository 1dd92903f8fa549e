"""The kernels: every backend against the NumPy reference, the reference against finite
differences and torch, the compiled module's own contract."""
