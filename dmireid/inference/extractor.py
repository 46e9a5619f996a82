"""Deprecated: moved to :mod:`dmireid.embedding.feature_extractor` (this path is removed in dmireid 0.4)."""

from ..deprecation import moved_names

__getattr__ = moved_names(__name__, "dmireid.embedding.feature_extractor")
