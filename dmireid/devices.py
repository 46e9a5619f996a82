"""Devices and mixed precision, decided in one place.

    device = resolve_device("auto")                       # cuda when available, else cpu
    dtype = autocast_dtype(device, enabled=True, requested="bf16")   # torch.bfloat16 | float16 | None
    with autocast(device, dtype):                         # nullcontext when dtype is None
        out = model(images)
    scaler = torch.amp.GradScaler("cuda", enabled=needs_grad_scaler(dtype))

The decision table of :func:`autocast_dtype`:

=============================  ================  ==============
device                          requested bf16    requested fp16
=============================  ================  ==============
CPU (any), or ``enabled`` off   None (fp32)       None (fp32)
CUDA with bf16 support          bfloat16          float16
CUDA without bf16 support       float16           float16
=============================  ================  ==============

The GradScaler rule: a scaler is needed (``enabled=True``) iff the autocast dtype is float16;
bf16 has fp32's exponent range and fp32 needs no scaling.
"""

from __future__ import annotations

import contextlib

import os

import torch

from .errors import DmireidError

__all__ = ["AMP_DTYPES", "resolve_device", "autocast_dtype", "autocast", "needs_grad_scaler"]

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str | torch.device | None) -> torch.device:
    """``auto``/None → cuda when available else cpu; asking for CUDA without one is a one-line error."""
    name = "auto" if name is None else str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DmireidError(f"device={name} was asked for but no CUDA device is available (use device=cpu or auto)")
    try:
        return torch.device(name)
    except RuntimeError:
        raise DmireidError(f"device={name} is not a device name (use cpu, cuda, cuda:N or auto)") from None


def training_device(name: str | torch.device | None) -> torch.device:
    """:func:`resolve_device`, and under a multi-process CUDA launch (``WORLD_SIZE`` > 1) this
    process's own GPU ``cuda:LOCAL_RANK``."""
    device = resolve_device(name)
    if device.type == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def autocast_dtype(device: torch.device | str, enabled: bool, requested: str = "bf16") -> torch.dtype | None:
    """The autocast dtype for ``device``: None (fp32) on the CPU or when not ``enabled``; on CUDA
    bfloat16 when ``requested`` is ``"bf16"`` and the GPU supports it, else float16."""
    if requested not in AMP_DTYPES:
        raise DmireidError(f"train.amp_dtype {requested!r} is not one of {', '.join(AMP_DTYPES)}")
    if not enabled or torch.device(device).type != "cuda":
        return None
    if requested == "bf16" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def autocast(device: torch.device | str, dtype: torch.dtype | None):
    """``torch.autocast`` on ``device`` with ``dtype``; a no-op context when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def needs_grad_scaler(dtype: torch.dtype | None) -> bool:
    """Whether training under ``dtype`` needs a GradScaler: exactly when it is float16."""
    return dtype == torch.float16
