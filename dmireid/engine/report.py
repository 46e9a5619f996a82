"""Re-export of :mod:`dmireid.inference.report` (its old place)."""

from ..inference.report import Report, resolve_run, visualize_run

__all__ = ["visualize_run", "resolve_run", "Report"]
