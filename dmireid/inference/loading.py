"""Deprecated: moved to :mod:`dmireid.embedding.encoder` (this path is removed in dmireid 0.4)."""

from ..deprecation import moved_names

__getattr__ = moved_names(__name__, "dmireid.embedding.encoder")
