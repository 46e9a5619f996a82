"""Re-export of the extraction loop, now :mod:`dmireid.inference.extraction` (its old place).

``autocast_for(device, enabled)`` is kept for old callers: the autocast that
:func:`dmireid.devices.autocast_dtype` decides (bf16 where the GPU supports it, else fp16; fp32 on
the CPU or when not ``enabled``).
"""

from __future__ import annotations

import torch

from ..devices import autocast, autocast_dtype
from ..inference.extraction import extract_features

__all__ = ["extract_features", "autocast_for"]


def autocast_for(device: torch.device, enabled: bool):
    """``autocast(device, autocast_dtype(device, enabled))``: the one AMP decision."""
    return autocast(device, autocast_dtype(device, enabled))
