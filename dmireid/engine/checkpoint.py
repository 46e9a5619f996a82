"""Re-export of :mod:`dmireid.checkpoint` (its old place)."""

from ..checkpoint import *  # noqa: F401,F403
from ..checkpoint import __all__  # noqa: F401
