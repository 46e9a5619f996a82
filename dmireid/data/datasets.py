"""Dataset folders -> sorted lists of ``(path, pid, camid)`` samples (spec §5).

Loading checks the folder layout and the file names only; it never decodes pixels (see
:func:`dmireid.data.images.check_images`). Names are parsed from the *basename* only, so a parent
folder called ``x_c1s1`` cannot change an id. Every malformed input raises :class:`DmireidError`
with one line naming the path and what was expected.

    ds = load_dataset("market1501", "/data")   # /data/Market-1501-v15.09.15 or the folder itself
    print(ds.statistics_table())
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DmireidError

log = logging.getLogger(__name__)

Sample = tuple[str, int, int]  # (path, pid, camid); camid = camera number - 1

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
MARKET_SPLITS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
MARKET_NAME = re.compile(r"^(-?\d+)_c(\d+)")


@dataclass
class ReIDDataset:
    """Train / query / gallery sample lists of one dataset (each sorted by path)."""

    name: str
    root: str
    train: list[Sample] = field(default_factory=list)
    query: list[Sample] = field(default_factory=list)
    gallery: list[Sample] = field(default_factory=list)

    def split_stats(self, split: str) -> tuple[int, int, int]:
        """(# ids, # images, # cameras) of ``split``; ids count pid >= 0 (distractor 0 included)."""
        samples = getattr(self, split)
        pids = {pid for _, pid, _ in samples if pid >= 0}
        return len(pids), len(samples), len({cam for _, _, cam in samples})

    @property
    def num_train_ids(self) -> int:
        return self.split_stats("train")[0]

    @property
    def num_cameras(self) -> int:
        """Cameras over all splits (max camid + 1)."""
        cams = [cam for split in (self.train, self.query, self.gallery) for _, _, cam in split]
        return max(cams) + 1 if cams else 0

    def statistics_table(self) -> str:
        """The usual table: subset | # ids | # images | # cameras, for train/query/gallery."""
        lines = [f"{self.name} ({self.root})",
                 "  subset   | # ids | # images | # cameras",
                 "  ---------+-------+----------+----------"]
        for split in ("train", "query", "gallery"):
            ids, images, cams = self.split_stats(split)
            lines.append(f"  {split:<8} | {ids:5d} | {images:8d} | {cams:9d}")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# helpers


def _list_images(folder: Path, recursive: bool = False) -> list[Path]:
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


def _find_root(root, subs: tuple[str, ...], aliases: tuple[str, ...], label: str) -> Path:
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


def _check_camera(path, cam: int, num_cams: int | None, label: str) -> int:
    """Camera number (1-based) -> camid, checking the range."""
    if cam < 1 or (num_cams is not None and cam > num_cams):
        expected = f"1..{num_cams}" if num_cams is not None else "numbers start at 1"
        raise DmireidError(f"{path}: camera {cam} out of range ({expected}) for {label}")
    return cam - 1


def _parse_market_dir(folder: Path, split: str, num_cams: int | None, label: str,
                      example: str, pid0_distractor: bool = True) -> list[Sample]:
    """``<pid>_c<cam>...`` images of one split; skips junk (-1) and, in train, distractors (0)."""
    samples = []
    for path in _list_images(folder):
        m = MARKET_NAME.match(path.name)
        if m is None:
            raise DmireidError(f"{path}: file name does not match <pid>_c<camera>... "
                               f"(expected e.g. {example}) for {label}")
        pid, cam = int(m.group(1)), int(m.group(2))
        camid = _check_camera(path, cam, num_cams, label)
        if pid < -1:
            raise DmireidError(f"{path}: negative person id {pid} (expected >= 0, or -1 for junk)")
        if pid == -1 or (pid == 0 and pid0_distractor and split == "train"):
            continue
        samples.append((str(path), pid, camid))
    return samples


def _load_market_layout(root: Path, name: str, num_cams: int | None, label: str, example: str,
                        pid0_distractor: bool = True) -> ReIDDataset:
    splits = {split: _parse_market_dir(root / sub, split, num_cams, label, example, pid0_distractor)
              for split, sub in MARKET_SPLITS.items()}
    return ReIDDataset(name, str(root), **splits)


# --------------------------------------------------------------------------------------------
# Market-1501, DukeMTMC-reID, custom folders


def _load_market1501(root) -> ReIDDataset:
    root = _find_root(root, tuple(MARKET_SPLITS.values()),
                      ("Market-1501-v15.09.15", "Market-1501", "market1501"), "Market-1501")
    return _load_market_layout(root, "market1501", 6, "Market-1501", "0002_c1s1_000451_03.jpg")


def _load_duke(root) -> ReIDDataset:
    root = _find_root(root, tuple(MARKET_SPLITS.values()), ("DukeMTMC-reID",), "DukeMTMC-reID")
    return _load_market_layout(root, "dukemtmcreid", 8, "DukeMTMC-reID", "0001_c2_f0046182.jpg")


def _load_folder(root, camera_pattern: str | None = None) -> ReIDDataset:
    """A Market-layout folder, or any folder of unlabelled images (train only, pid -1)."""
    path = Path(root).expanduser().absolute()
    if path.is_dir() and any((path / s).exists() for s in MARKET_SPLITS.values()):
        path = _find_root(path, tuple(MARKET_SPLITS.values()), (), "Market-layout")
        return _load_market_layout(path, "folder", None, "a Market-layout folder", "0001_c1_0001.jpg")
    path = _find_root(root, (), (), "folder")
    regex = None
    if camera_pattern is not None:
        try:
            regex = re.compile(camera_pattern)
        except re.error as exc:
            raise DmireidError(f"camera_pattern {camera_pattern!r} is not a valid regex ({exc})") from None
        if regex.groups < 1:
            raise DmireidError(f"camera_pattern {camera_pattern!r} needs a group (...) capturing the camera number")
    train = []
    for image in _list_images(path, recursive=True):
        camid = 0
        if regex is not None:
            m = regex.search(image.name)
            if m is None or not m.group(1) or not m.group(1).isdigit():
                raise DmireidError(f"{image}: file name does not match camera_pattern {camera_pattern!r} "
                                   "(group 1 = camera number)")
            camid = _check_camera(image, int(m.group(1)), None, "camera_pattern")
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
        samples.append((str(path), pid, _check_camera(path, int(fields[2]), 15, "MSMT17")))
    return samples


def _load_msmt17(root) -> ReIDDataset:
    """Official release (list files) or the Market-style repack, detected automatically."""
    base = Path(root).expanduser().absolute()
    for cand in (base, *(base / a for a in MSMT_ALIASES)):
        if (cand / "list_train.txt").is_file():
            root = _find_root(cand, MSMT_LISTS, (), "MSMT17 (official lists)")
            train, val, query, gallery = (_read_msmt_list(root, n, "train" if i < 2 else "test")
                                          for i, n in enumerate(MSMT_LISTS))
            return ReIDDataset("msmt17", str(root), sorted(train + val), sorted(query), sorted(gallery))
    root = _find_root(root, tuple(MARKET_SPLITS.values()), MSMT_ALIASES,
                      "MSMT17 (list_train.txt ... or bounding_box_train/, query/, bounding_box_test/)")
    # MSMT17 ids start at 0: pid 0 is a real person, not a distractor
    return _load_market_layout(root, "msmt17", 15, "MSMT17", "0000_c1_0000.jpg", pid0_distractor=False)


# --------------------------------------------------------------------------------------------
# entry point

_OPTIONS = {
    "market1501": (),
    "dukemtmcreid": (),
    "msmt17": (),
    "folder": ("camera_pattern",),
    "synthetic": ("num_ids", "num_cameras", "seed", "height", "width", "images_per_camera"),
}


def load_dataset(name: str, root: str | os.PathLike | None, **options) -> ReIDDataset:
    """Read dataset ``name`` (market1501 | msmt17 | dukemtmcreid | folder | synthetic) at ``root``.

    ``root`` is the dataset folder or a folder holding it under its usual name. Options:
    ``folder``: ``camera_pattern`` (regex on file names, group 1 = camera number);
    ``synthetic``: the :func:`make_synthetic` arguments (root None = a cache folder).
    """
    key = name.lower().replace("-", "").replace("_", "")
    if key not in _OPTIONS:
        raise DmireidError(f"unknown dataset {name!r} (known: {', '.join(_OPTIONS)})")
    unknown = sorted(set(options) - set(_OPTIONS[key]))
    if unknown:
        known = ", ".join(_OPTIONS[key]) or "none"
        raise DmireidError(f"unknown option(s) {', '.join(unknown)} for dataset {key} (known: {known})")
    if root is None and key != "synthetic":
        raise DmireidError(f"dataset {key} needs a root folder (data.root)")
    if key == "synthetic":
        from .synthetic import load_synthetic
        dataset = load_synthetic(root, **options)
    else:
        loader = {"market1501": _load_market1501, "dukemtmcreid": _load_duke,
                  "msmt17": _load_msmt17, "folder": _load_folder}[key]
        dataset = loader(root, **options)
    log.info("%s", dataset.statistics_table())
    return dataset
