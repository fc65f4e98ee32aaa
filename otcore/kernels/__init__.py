"""Device kernels, grouped by device: ``numba`` (CPU) and ``cuda`` (.cu sources for CuPy)."""
