"""Re-export of :mod:`dmireid.inference.search` (its old place)."""

from ..inference.search import SearchResult, check_compatible, load_features, save_features, search

__all__ = ["search", "SearchResult", "save_features", "load_features", "check_compatible"]
