"""Numba CPU kernels.

Importing this package compiles nothing: kernels are compiled lazily on first call and
cached on disk (``cache=True``).
"""

#: Below this many cost entries a kernel runs on one thread: waking the thread pool costs
#: more than it saves, and far more when the machine is loaded.
SERIAL_BELOW = 1 << 17
