"""Self-contained, atomically written checkpoints that load with ``weights_only=True``.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts (no pickled objects),
so ``torch.load(path, weights_only=True)`` reads it without running arbitrary code:

    {"format": "dmireid/1", "config": {...}, "epoch": E (epochs finished),
     "model": state_dict, "ema_model": state_dict | None, "optimizer": ..., "scheduler": ...,
     "scaler": ..., "best": {...}, "empty_epochs": n, "metrics": {...}, "rng": {...}}
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DmireidError

FORMAT = "dmireid/1"

# The keys of a training checkpoint, spelled here only.
FORMAT_KEY = "format"
CONFIG_KEY = "config"  # the run's config dict (Config.to_dict())
MODEL_KEY = "model"  # θ's state_dict
EMA_MODEL_KEY = "ema_model"  # θ''s state_dict, or None
OPEN_SET_KEY = "open_set"  # the open-set threshold estimate (after training / calibrate)
METRICS_KEY = "metrics"  # the epoch's metrics
TRAINING_KEYS = ("config", "epoch", "model", "ema_model", "optimizer", "scheduler", "scaler", "best",
                 "stage2_start", "empty_epochs", "metrics", "rng")

__all__ = ["FORMAT", "CONFIG_KEY", "MODEL_KEY", "EMA_MODEL_KEY", "OPEN_SET_KEY", "METRICS_KEY", "TRAINING_KEYS",
           "training_checkpoint", "save_checkpoint", "load_checkpoint", "store_open_set", "weights_fingerprint",
           "capture_rng_state", "restore_rng_state"]


def training_checkpoint(**values: Any) -> dict[str, Any]:
    """The payload of a training checkpoint: exactly the :data:`TRAINING_KEYS` (one missing or
    unknown is a ValueError: the format has one definition)."""
    if set(values) != set(TRAINING_KEYS):
        missing, unknown = set(TRAINING_KEYS) - set(values), set(values) - set(TRAINING_KEYS)
        raise ValueError(f"training checkpoint keys: missing {sorted(missing)}, unknown {sorted(unknown)}")
    return {key: values[key] for key in TRAINING_KEYS}


def save_checkpoint(payload: dict[str, Any], path: str | Path) -> None:
    """Write ``payload`` to ``path`` atomically: temp file + fsync + rename + directory fsync.

    A kill or a full disk during the write leaves the previous file at ``path`` untouched.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as handle:
            torch.save({"format": FORMAT, **payload}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        reason = "disk full" if exc.errno == errno.ENOSPC else exc.strerror or str(exc)
        raise DmireidError(f"could not write checkpoint {path}: {reason}; the previous checkpoint is intact") from None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise DmireidError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # corrupt, truncated or not a torch file
        raise DmireidError(f"checkpoint {path} cannot be read ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})") from None
    if not isinstance(payload, dict):
        raise DmireidError(f"checkpoint {path} is not a dmireid checkpoint or a state_dict")
    return payload


def capture_rng_state() -> dict[str, Any]:
    """Every global RNG state as weights_only-safe values (lists and tensors)."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def weights_fingerprint(weights: dict[str, torch.Tensor]) -> str:
    """sha256 (hex) of a state_dict: every tensor's name, dtype, shape and bytes, in name order.

    Equal for a checkpoint's encoder weights and the ``state_dict()`` of the model loaded from them
    (:func:`dmireid.embedding.encoder.load_encoder` loads strictly), so it identifies the model that made a set of features.
    """
    digest = hashlib.sha256()
    for name in sorted(weights):
        tensor = weights[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def store_open_set(path: str | Path, estimate: dict, state: dict | None = None) -> None:
    """Write ``estimate`` as the checkpoint's ``open_set`` entry (atomic rewrite, all else kept)."""
    state = load_checkpoint(path) if state is None else state
    save_checkpoint({**state, OPEN_SET_KEY: estimate}, path)
