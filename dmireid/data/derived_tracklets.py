"""Tracklets derived from a labelled Market-layout set, for benchmarks (issue 23, point 2).

Each (identity, camera) group of the training split is one tracklet (in CUHK03 these are the crops
of one walk past one camera). ``fragments`` k cuts every group, in path order, into k contiguous
pieces of near-equal size (a group of fewer than k images gives one piece per image: no empty
tracklet); ``switches`` p moves round(p · N) training images, drawn without replacement with the
seeded generator, each into another tracklet of the same camera drawn uniformly (a tracker's
identity switches; an image whose camera has a single tracklet stays). Frames come from the file
name where it carries them (``<pid>_c<cam>s<seq>_<frame>_...``: frame = seq · 10^7 + frame), else -1;
``frames="none"`` gives -1 everywhere (CUHK03's repack numbers the images of each identity from 0:
those are not frames).

    tracklets, frames = derive_tracklets(dataset.train, fragments=2, switches=0.05, seed=0)
    dataset = with_derived_tracklets(dataset, "identity_camera", fragments=2, switches=0.05)
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..errors import DmireidError
from .samples import ReIDDataset, Sample

FRAME_NAME = re.compile(r"^-?\d+_c\d+s(\d+)_(\d+)")
TRACKLET_MODES = ("none", "identity_camera")


def frame_of(path: str) -> int:
    """The frame number of a Market-style name (seq · 10^7 + frame), -1 where the name has none."""
    m = FRAME_NAME.match(Path(path).name)
    return int(m.group(1)) * 10**7 + int(m.group(2)) if m else -1


def check_tracklet_options(mode: str, fragments: int, switches: float) -> None:
    """One-line errors naming the ``data.options`` key of a bad value."""
    if mode not in TRACKLET_MODES:
        raise DmireidError(f"data.options.tracklets={mode!r}: expected one of {', '.join(TRACKLET_MODES)}")
    if isinstance(fragments, bool) or not isinstance(fragments, int) or fragments < 1:
        raise DmireidError(f"data.options.tracklet_fragments={fragments!r}: expected an integer >= 1")
    if isinstance(switches, bool) or not isinstance(switches, (int, float)) or not 0.0 <= switches < 1.0:
        raise DmireidError(f"data.options.tracklet_switches={switches!r}: expected a fraction in [0, 1)")
    if mode == "none" and (fragments != 1 or switches != 0):
        raise DmireidError("data.options.tracklet_fragments / tracklet_switches need data.options.tracklets="
                           "identity_camera")


def derive_tracklets(train: list[Sample], fragments: int = 1, switches: float = 0.0,
                     seed: int = 0) -> np.ndarray:
    """N int64 tracklet ids (0..T-1) of ``train`` samples: (pid, camera) groups, fragmented, corrupted."""
    check_tracklet_options("identity_camera", fragments, switches)
    n = len(train)
    groups: dict[tuple[int, int], list[int]] = {}
    for i in sorted(range(n), key=lambda i: train[i][0]):
        groups.setdefault((train[i][1], train[i][2]), []).append(i)
    tracklets = np.full(n, -1, dtype=np.int64)
    camera_of: list[int] = []
    for (_, camera), members in sorted(groups.items()):
        for piece in np.array_split(np.asarray(members), min(fragments, len(members))):
            tracklets[piece] = len(camera_of)
            camera_of.append(camera)
    moved = int(round(switches * n))
    if moved:
        rng = np.random.default_rng(seed)
        by_camera: dict[int, np.ndarray] = {}
        for t, camera in enumerate(camera_of):
            by_camera.setdefault(camera, []).append(t)
        for i in rng.choice(n, size=moved, replace=False):
            others = [t for t in by_camera[train[i][2]] if t != tracklets[i]]
            if others:
                tracklets[i] = others[int(rng.integers(len(others)))]
    return tracklets


def with_derived_tracklets(dataset: ReIDDataset, mode: str = "none", fragments: int = 1, switches: float = 0.0,
                           seed: int = 0, frames: str = "name") -> ReIDDataset:
    """``dataset`` with ``train_tracklets`` / ``train_frames`` derived (``mode="none"``: unchanged)."""
    check_tracklet_options(mode, fragments, switches)
    if frames not in ("name", "none"):
        raise DmireidError(f"data.options.tracklet_frames={frames!r}: expected name or none")
    if mode == "none":
        return dataset
    if any(pid < 0 for _, pid, _ in dataset.train):
        raise DmireidError(f"data.options.tracklets={mode}: {dataset.root} has training images without an "
                           f"identity (derived tracklets need a labelled set)")
    tracklets = derive_tracklets(dataset.train, fragments, switches, seed)
    frame_numbers = [frame_of(p) if frames == "name" else -1 for p, _, _ in dataset.train]
    return replace(dataset, train_tracklets=tracklets.tolist(), train_frames=frame_numbers)
