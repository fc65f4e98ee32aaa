"""Numba CPU kernels.

Importing this package compiles nothing: kernels are compiled lazily on first call and
cached on disk (``cache=True``).
"""
