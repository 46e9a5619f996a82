"""Deprecated: moved to :mod:`dmireid.inference.grouping` (this path is removed in dmireid 0.4)."""

from ..deprecation import moved_names

__getattr__ = moved_names(__name__, "dmireid.inference.grouping")
