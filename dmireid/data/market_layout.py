"""Folder checks and the Market-1501 layout (``<pid>_c<camera>...`` files in three split folders).

Shared by the loaders of :mod:`dmireid.data.datasets` and by the synthetic set. Names are parsed
from the *basename* only, so a parent folder called ``x_c1s1`` cannot change an id. Every
malformed input raises :class:`DmireidError` with one line naming the path and what was expected.

    naming = MarketNaming("Market-1501", "0002_c1s1_000451_03.jpg", cameras=6)
    ds = load_market_layout(root, "market1501", naming)
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import DmireidError
from .images import IMAGE_EXTENSIONS
from .samples import ReIDDataset, Sample

MARKET_SPLITS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
MARKET_NAME = re.compile(r"^(-?\d+)_c(\d+)")


@dataclass(frozen=True)
class MarketNaming:
    """How one dataset names its ``<pid>_c<camera>...`` files.

    ``cameras``: the number of cameras (file numbers 1..n, camid = number - 1), or the tuple of
    the camera numbers used (camid = position in the tuple), or None (any number >= 1).
    ``pid0_distractor``: pid 0 is a distractor (dropped from train, kept in query/gallery); else
    a real person. ``max_pid``: the largest valid person id (None: no bound). pid -1 = junk, dropped.
    """

    label: str  # the dataset's name in error messages
    example: str  # a valid file name, shown in error messages
    cameras: int | tuple[int, ...] | None
    pid0_distractor: bool = True
    max_pid: int | None = None


def list_images(folder: Path, recursive: bool = False) -> list[Path]:
    """Image files in ``folder`` (sorted by path string); raises if there are none."""
    if not folder.is_dir():
        raise DmireidError(f"{folder}: expected a folder of images")
    try:
        if recursive:
            files = [Path(d) / f for d, _, names in os.walk(folder) for f in names]
        else:
            files = [Path(e.path) for e in os.scandir(folder) if e.is_file()]
    except OSError as exc:
        raise DmireidError(f"{folder}: cannot list the folder ({exc.strerror or exc})") from None
    images = sorted((p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS), key=str)
    if not images:
        raise DmireidError(f"{folder}: no images found (expected {', '.join(IMAGE_EXTENSIONS)} files)")
    return images


def find_root(root, subs: tuple[str, ...], aliases: tuple[str, ...], label: str) -> Path:
    """``root`` itself or ``root/<alias>`` holding every entry of ``subs``."""
    root = Path(root).expanduser().absolute()
    if not root.is_dir():
        raise DmireidError(f"dataset folder {root} does not exist")
    for cand in (root, *(root / a for a in aliases)):
        if all((cand / s).exists() for s in subs):
            return cand
    present = [s for s in subs if (root / s).exists()]
    where = f" (here or in a sub-folder named {', '.join(aliases)})" if aliases else ""
    if present:
        missing = ", ".join(s for s in subs if s not in present)
        raise DmireidError(f"{root}: missing {missing} for {label} (expected {', '.join(subs)}{where})")
    raise DmireidError(f"{root}: not a {label} folder (expected {', '.join(subs)}{where})")


def check_camera(path, cam: int, cameras: int | tuple[int, ...] | None, label: str) -> int:
    """Camera number of a file name -> camid (see :class:`MarketNaming`), checking the range."""
    if isinstance(cameras, tuple):
        if cam not in cameras:
            raise DmireidError(f"{path}: camera {cam} out of range (one of {', '.join(map(str, cameras))}) "
                               f"for {label}")
        return cameras.index(cam)
    if cam < 1 or (cameras is not None and cam > cameras):
        expected = f"1..{cameras}" if cameras is not None else "numbers start at 1"
        raise DmireidError(f"{path}: camera {cam} out of range ({expected}) for {label}")
    return cam - 1


def parse_market_dir(folder: Path, split: str, naming: MarketNaming) -> list[Sample]:
    """``<pid>_c<cam>...`` images of one split; skips junk (-1) and, in train, distractors (0)."""
    samples = []
    for path in list_images(folder):
        m = MARKET_NAME.match(path.name)
        if m is None:
            raise DmireidError(f"{path}: file name does not match <pid>_c<camera>... "
                               f"(expected e.g. {naming.example}) for {naming.label}")
        pid, cam = int(m.group(1)), int(m.group(2))
        camid = check_camera(path, cam, naming.cameras, naming.label)
        if pid < -1:
            raise DmireidError(f"{path}: negative person id {pid} (expected >= 0, or -1 for junk)")
        if naming.max_pid is not None and pid > naming.max_pid:
            raise DmireidError(f"{path}: person id {pid} out of range (0..{naming.max_pid}) for {naming.label}")
        if pid == -1 or (pid == 0 and naming.pid0_distractor and split == "train"):
            continue
        samples.append((str(path), pid, camid))
    return samples


def load_market_layout(root: Path, name: str, naming: MarketNaming,
                       splits: dict[str, str] = MARKET_SPLITS) -> ReIDDataset:
    """The three split folders ``splits`` (train/query/gallery -> folder name) under ``root``."""
    parsed = {split: parse_market_dir(root / sub, split, naming) for split, sub in splits.items()}
    return ReIDDataset(name, str(root), **parsed)
