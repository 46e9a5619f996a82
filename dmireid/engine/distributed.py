"""Re-export of :mod:`dmireid.distributed` (its old place)."""

from ..distributed import *  # noqa: F401,F403
from ..distributed import __all__  # noqa: F401
