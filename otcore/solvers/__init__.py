"""Solvers: each one takes weights and a geometry and returns an :class:`~otcore.OTResult`."""
