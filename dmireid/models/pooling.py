"""Pooling layers: generalised-mean (GeM) pooling with a trainable exponent."""

from __future__ import annotations

import torch
from torch import nn


class GeM(nn.Module):
    """Generalised-mean pooling: ``(mean_{h,w} clamp(x, eps)^p)^(1/p)`` with trainable ``p``.

    B×C×H×W -> B×C×1×1 (like ``nn.AdaptiveAvgPool2d(1)``). ``p = 1`` is average pooling,
    ``p -> inf`` max pooling. Computed in float32 (``x^3`` can overflow float16 under autocast).
    """

    def __init__(self, p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.ones(1) * float(p))
        self.eps = float(eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.p.float()
        pooled = x.float().clamp(min=self.eps).pow(p).mean(dim=(2, 3), keepdim=True)
        return pooled.pow(1.0 / p)

    def extra_repr(self) -> str:
        return f"p={self.p.detach().item():.4f}, eps={self.eps}"
