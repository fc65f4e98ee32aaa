"""Benchmarks of otcore against other optimal-transport libraries.

Each benchmark is a module runnable as ``python -m bench.<name>``; it prints its tables,
writes ``bench/results/<name>.md`` and ``bench/results/<name>.png``, and refreshes the
README table between the ``<!-- bench:<name> -->`` and ``<!-- /bench:<name> -->`` markers.
Shared helpers (timing, peak memory, problems, reporting) live in :mod:`bench._common`.
"""
