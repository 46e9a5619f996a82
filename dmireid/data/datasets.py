"""The built-in dataset loaders: dataset folders -> sorted lists of ``(path, pid, camid)`` (spec §5).

Loading checks the folder layout and the file names only; it never decodes pixels (see
:func:`dmireid.data.images.check_images`). Each loader is registered under its name next to its
definition (:func:`dmireid.data.register_dataset`); every malformed input raises
:class:`DmireidError` with one line naming the path and what was expected.

    ds = load_dataset("market1501", "/data")   # /data/Market-1501-v15.09.15 or the folder itself
    print(ds.statistics_table())
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from ..errors import DmireidError
from .catalog import register_dataset
from .derived_tracklets import with_derived_tracklets
from .market_layout import (MARKET_SPLITS, MarketNaming, check_camera, find_root, list_images,
                            load_market_layout)
from .samples import ReIDDataset, Sample

MARKET_SUBS = tuple(MARKET_SPLITS.values())

# --------------------------------------------------------------------------------------------
# Market layout: Market-1501, DukeMTMC-reID, PersonX, VeRi-776


@register_dataset("market1501")
def load_market1501(root, tracklets: Literal["none", "identity_camera"] = "none", tracklet_fragments: int = 1,
                   tracklet_switches: float = 0.0, tracklet_seed: int = 0,
                   tracklet_frames: Literal["name", "none"] = "name") -> ReIDDataset:
    """Market-1501: 751 / 750 ids, 6 cameras; pid 0 = distractor, -1 = junk. ``tracklets=identity_camera``
    derives training tracklets (:mod:`dmireid.data.derived_tracklets`; also on dukemtmcreid, personx)."""
    root = find_root(root, MARKET_SUBS, ("Market-1501-v15.09.15", "Market-1501", "market1501"), "Market-1501")
    dataset = load_market_layout(root, "market1501", MarketNaming("Market-1501", "0002_c1s1_000451_03.jpg", 6))
    return with_derived_tracklets(dataset, tracklets, tracklet_fragments, tracklet_switches, tracklet_seed,
                                  tracklet_frames)


@register_dataset("dukemtmcreid")
def load_dukemtmcreid(root, tracklets: Literal["none", "identity_camera"] = "none", tracklet_fragments: int = 1,
                   tracklet_switches: float = 0.0, tracklet_seed: int = 0,
                   tracklet_frames: Literal["name", "none"] = "name") -> ReIDDataset:
    """DukeMTMC-reID: 702 / 702 (+408 distractor) ids, 8 cameras."""
    root = find_root(root, MARKET_SUBS, ("DukeMTMC-reID",), "DukeMTMC-reID")
    dataset = load_market_layout(root, "dukemtmcreid", MarketNaming("DukeMTMC-reID", "0001_c2_f0046182.jpg", 8))
    return with_derived_tracklets(dataset, tracklets, tracklet_fragments, tracklet_switches, tracklet_seed,
                                  tracklet_frames)


PERSONX_CAMERAS = (3, 4, 8, 10, 11, 12)  # the camera numbers of the released subset, camid 0..5


@register_dataset("personx")
def load_personx(root, tracklets: Literal["none", "identity_camera"] = "none", tracklet_fragments: int = 1,
                   tracklet_switches: float = 0.0, tracklet_seed: int = 0,
                   tracklet_frames: Literal["name", "none"] = "name") -> ReIDDataset:
    """PersonX (the synthetic set in the Cluster Contrast / SpCL release): Market layout under
    ``PersonX/``; 1,266 ids, 9,840 train / 5,136 query / 30,816 gallery images, 6 cameras
    numbered c3, c4, c8, c10, c11, c12 in the file names (camid 0..5 in that order). Only the
    ``<pid>_c<camera>`` prefix of a name is read; every pid >= 0 is a person (-1 = junk)."""
    root = find_root(root, MARKET_SUBS, ("PersonX", "personx"), "PersonX")
    naming = MarketNaming("PersonX", "0001_c3_0001.jpg", PERSONX_CAMERAS, pid0_distractor=False)
    return with_derived_tracklets(load_market_layout(root, "personx", naming), tracklets, tracklet_fragments,
                                  tracklet_switches, tracklet_seed, tracklet_frames)


VERI_SPLITS = {"train": "image_train", "query": "image_query", "gallery": "image_test"}


@register_dataset("veri776")
def load_veri776(root) -> ReIDDataset:
    """VeRi-776 (vehicles): ``image_train``, ``image_query``, ``image_test`` under ``VeRi/``;
    names ``<pid>_c<camera>_<frame>_<n>.jpg`` (e.g. 0001_c001_00016450_0.jpg), camid = camera - 1.
    576 ids / 37,778 train images, 200 ids / 1,678 query / 11,579 gallery images, 20 cameras.
    Ids are kept as in the names (0..776; 0 is a real id, -1 = junk, dropped)."""
    root = find_root(root, tuple(VERI_SPLITS.values()), ("VeRi", "VeRi-776", "VeRi776", "veri", "veri776"),
                     "VeRi-776")
    naming = MarketNaming("VeRi-776", "0001_c001_00016450_0.jpg", 20, pid0_distractor=False, max_pid=776)
    return load_market_layout(root, "veri776", naming, VERI_SPLITS)


# --------------------------------------------------------------------------------------------
# custom folders


@register_dataset("folder")
def load_folder(root, camera_pattern: str | None = None) -> ReIDDataset:
    """A Market-layout folder (any camera count), or any folder of unlabelled images (train only,
    pid -1); ``camera_pattern``: regex on the file names, group 1 = camera number."""
    path = Path(root).expanduser().absolute()
    if path.is_dir() and any((path / s).exists() for s in MARKET_SUBS):
        path = find_root(path, MARKET_SUBS, (), "Market-layout")
        return load_market_layout(path, "folder", MarketNaming("a Market-layout folder", "0001_c1_0001.jpg", None))
    path = find_root(root, (), (), "folder")
    regex = None
    if camera_pattern is not None:
        try:
            regex = re.compile(camera_pattern)
        except re.error as exc:
            raise DmireidError(f"camera_pattern {camera_pattern!r} is not a valid regex ({exc})") from None
        if regex.groups < 1:
            raise DmireidError(f"camera_pattern {camera_pattern!r} needs a group (...) capturing the camera number")
    train = []
    for image in list_images(path, recursive=True):
        camid = 0
        if regex is not None:
            m = regex.search(image.name)
            if m is None or not m.group(1) or not m.group(1).isdigit():
                raise DmireidError(f"{image}: file name does not match camera_pattern {camera_pattern!r} "
                                   "(group 1 = camera number)")
            camid = check_camera(image, int(m.group(1)), None, "camera_pattern")
        train.append((str(image), -1, camid))
    return ReIDDataset("folder", str(path), train=train)


# --------------------------------------------------------------------------------------------
# MSMT17

MSMT_LISTS = ("list_train.txt", "list_val.txt", "list_query.txt", "list_gallery.txt")
MSMT_IMAGE_DIRS = {"train": ("train", "mask_train_v2"), "test": ("test", "mask_test_v2")}
MSMT_ALIASES = ("MSMT17_V1", "MSMT17_V2", "MSMT17")
MSMT_PATTERN = "<pid>_<n>_<camera>_<date><time>_<n>_<n>.jpg (e.g. 0000_000_01_0303morning_0015_0.jpg)"


def _msmt_image_dir(root: Path, list_path: Path, kind: str, first: str) -> Path:
    """The folder (V1 ``train``/``test``, V2 ``mask_*_v2``) that holds the list's images."""
    candidates = [root / d for d in MSMT_IMAGE_DIRS[kind]]
    existing = [c for c in candidates if c.is_dir()]
    if not existing:
        raise DmireidError(f"{root}: no image folder for {list_path.name} "
                           f"(expected {' or '.join(MSMT_IMAGE_DIRS[kind])})")
    return next((c for c in existing if (c / first).is_file()), existing[0])


def _read_msmt_list(root: Path, list_name: str, kind: str) -> list[Sample]:
    """Lines ``<dir>/<file>.jpg <label>`` -> samples; camera = 3rd ``_`` field of the file name."""
    list_path = root / list_name
    rows = []
    for lineno, line in enumerate(list_path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[1].isdigit():
            raise DmireidError(f"{list_path}:{lineno}: expected '<dir>/<file>.jpg <label>', got {line.strip()!r}")
        rows.append((lineno, parts[0], int(parts[1])))
    if not rows:
        raise DmireidError(f"{list_path}: no images listed (expected lines '<dir>/<file>.jpg <label>')")
    image_dir = _msmt_image_dir(root, list_path, kind, rows[0][1])
    samples = []
    for lineno, rel, pid in rows:
        path = image_dir / rel
        if not path.is_file():
            raise DmireidError(f"{list_path}:{lineno}: listed image {path} does not exist")
        fields = path.name.split("_")
        if len(fields) < 4 or not fields[2].isdigit():
            raise DmireidError(f"{path}: file name does not match {MSMT_PATTERN} for MSMT17")
        samples.append((str(path), pid, check_camera(path, int(fields[2]), 15, "MSMT17")))
    return samples


@register_dataset("msmt17")
def load_msmt17(root) -> ReIDDataset:
    """MSMT17, 1,041 / 3,060 ids, 15 cameras: the official release (list files) or the
    Market-style repack, detected automatically."""
    base = Path(root).expanduser().absolute()
    for cand in (base, *(base / a for a in MSMT_ALIASES)):
        if (cand / "list_train.txt").is_file():
            root = find_root(cand, MSMT_LISTS, (), "MSMT17 (official lists)")
            train, val, query, gallery = (_read_msmt_list(root, n, "train" if i < 2 else "test")
                                          for i, n in enumerate(MSMT_LISTS))
            return ReIDDataset("msmt17", str(root), sorted(train + val), sorted(query), sorted(gallery))
    root = find_root(root, MARKET_SUBS, MSMT_ALIASES,
                     "MSMT17 (list_train.txt ... or bounding_box_train/, query/, bounding_box_test/)")
    # MSMT17 ids start at 0: pid 0 is a real person, not a distractor
    return load_market_layout(root, "msmt17", MarketNaming("MSMT17", "0000_c1_0000.jpg", 15, pid0_distractor=False))
