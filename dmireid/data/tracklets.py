"""The ``tracklets`` dataset: crops cut by ``dmireid crops`` (camera, track and frame in every name).

    ds = load_dataset("tracklets", "crops")                      # train only, pid -1
    ds = load_dataset("tracklets", "crops", test_root="site/test")   # + a labelled query / gallery

Every ``c{camera}_t{track}_f{frame}.jpg`` in the folder is a training image with no identity
(pid -1), camid = camera - 1; ``train_tracklets`` holds one global id per (camera, track) (numbered
in (camera, track) order from 0) and ``train_frames`` the frame numbers. ``test_root``: a
Market-layout folder with ``query/`` and ``bounding_box_test/`` (``<pid>_c<camera>...`` names) for
evaluation, e.g. labelled crops of held-out footage; without it the dataset has no test split.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import DmireidError
from .catalog import register_dataset
from .market_layout import MARKET_SPLITS, MarketNaming, find_root, parse_market_dir
from .samples import ReIDDataset

CROP_NAME = re.compile(r"^c(\d+)_t(\d+)_f(\d+)\.jpg$")
CROP_PATTERN = "c<camera>_t<track>_f<frame>.jpg (e.g. c1_t000007_f000123.jpg, as dmireid crops writes them)"


def crop_name(camera: int, track: int, frame: int) -> str:
    """The file name of one crop: ``c{camera}_t{track:06d}_f{frame:06d}.jpg``."""
    return f"c{camera}_t{track:06d}_f{frame:06d}.jpg"


def parse_crop_name(path: Path) -> tuple[int, int, int]:
    """``(camera, track, frame)`` of a ``dmireid crops`` file name."""
    m = CROP_NAME.match(path.name)
    if m is None:
        raise DmireidError(f"{path}: file name does not match {CROP_PATTERN}")
    camera, track, frame = (int(g) for g in m.groups())
    if camera < 1:
        raise DmireidError(f"{path}: camera {camera} out of range (numbers start at 1)")
    return camera, track, frame


@register_dataset("tracklets")
def load_tracklets(root, test_root: str | None = None) -> ReIDDataset:
    """Crops of ``dmireid crops`` in ``root`` -> train (pid -1) with tracklets and frames; see the module."""
    folder = Path(root).expanduser().absolute() if root is not None else None
    if folder is None or not folder.is_dir():
        raise DmireidError(f"tracklets: data.root {folder} is not a folder of crops (made by dmireid crops)")
    try:
        names = sorted(e.name for e in os.scandir(folder) if e.is_file() and e.name.lower().endswith(".jpg"))
    except OSError as exc:
        raise DmireidError(f"{folder}: cannot list the folder ({exc.strerror or exc})") from None
    if not names:
        raise DmireidError(f"{folder}: no crops (expected {CROP_PATTERN})")
    parsed = [(str(folder / name), *parse_crop_name(folder / name)) for name in names]
    keys = sorted({(camera, track) for _, camera, track, _ in parsed})
    tracklet_of = {key: i for i, key in enumerate(keys)}
    train = [(path, -1, camera - 1) for path, camera, _, _ in parsed]
    dataset = ReIDDataset("tracklets", str(folder), train=train,
                          train_tracklets=[tracklet_of[(camera, track)] for _, camera, track, _ in parsed],
                          train_frames=[frame for *_, frame in parsed])
    if test_root is not None:
        subs = (MARKET_SPLITS["query"], MARKET_SPLITS["gallery"])
        test = find_root(test_root, subs, (), "labelled query / gallery (tracklets test_root)")
        naming = MarketNaming("a labelled query / gallery", "0001_c1_f000123.jpg", None)
        dataset.query = parse_market_dir(test / subs[0], "query", naming)
        dataset.gallery = parse_market_dir(test / subs[1], "gallery", naming)
    return dataset
