"""Seeding and resumability of a run: per-epoch seeds, RNG-independent resume, config checks."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from ..config import Config, config_from_dict
from ..errors import DmireidError

# Keys that may change when a run is resumed; every other key must match the checkpoint's config.
RESUMABLE_KEYS = {"train.epochs", "train.eval_every", "output_dir", "device", "data.root", "data.num_workers",
                  "train.extract_batch_size", "train.max_empty_epochs", "data.corrupt_images",
                  "train.save_pseudo_labels", "plugins"}


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of every random stream of ``epoch`` (so a resumed epoch repeats exactly)."""
    return seed * 1_000_003 + epoch


def flatten(values: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (free mappings such as ``data.options`` stay values)."""
    out = {}
    for key, value in values.items():
        if isinstance(value, dict) and not key.endswith("options"):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def check_resumable(saved: dict, cfg: Config, path: Path) -> None:
    """Raise a one-line error when ``cfg`` differs from the checkpoint's config beyond RESUMABLE_KEYS.

    ``saved`` is the checkpoint's config dict (keys of earlier versions are mapped first).
    """
    old, new = flatten(config_from_dict(saved).to_dict()), flatten(cfg.to_dict())
    diffs = [k for k in new if k not in RESUMABLE_KEYS and old.get(k) != new[k]]
    if diffs:
        shown = ", ".join(f"{k}: {old.get(k)!r} -> {new[k]!r}" for k in diffs[:3])
        raise DmireidError(f"cannot resume from {path}: its config differs ({shown}); "
                           f"use another output_dir or the same settings")
