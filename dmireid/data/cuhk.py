"""CUHK03 (the CUHK03-NP protocol) and CUHK01 loaders, in the layouts users get from torchreid.

CUHK03: ``images_labeled/`` and ``images_detected/`` hold ``<pair>_<person>_<view>_<image>.png``
(``1_001_1_01.png``: camera pair 1-5, person within the pair, view 1-2, image 01-10), the names
torchreid writes when it unpacks ``cuhk-03.mat``; the new-protocol split of Zhong et al. (CVPR 2017)
comes from ``cuhk03_new_protocol_config_{labeled,detected}.mat`` (``filelist`` = those names,
``labels``, 1-based ``train_idx`` / ``query_idx`` / ``gallery_idx``): 767 train / 700 test ids.
CUHK01: ``campus/<PPPP><III>.png`` (971 ids x 4 images; images 1-2 camera A, 3-4 camera B), split
485 / 486 ids by a seeded permutation as torchreid does.

    ds = load_dataset("cuhk03", "/data/cuhk03", boxes="detected")
    ds = load_dataset("cuhk01", "/data", split_seed=3)
"""

from __future__ import annotations

import numbers
import re
from pathlib import Path
from typing import Literal

import numpy as np

from ..errors import DmireidError
from .catalog import register_dataset
from .market_layout import find_root, list_images
from .samples import ReIDDataset, Sample

# --------------------------------------------------------------------------------------------- CUHK03

CUHK03_NAME = re.compile(r"^([1-5])_(\d{3})_([12])_(\d{2})\.png$")
CUHK03_EXAMPLE = "<pair>_<person>_<view>_<image>.png (e.g. 1_001_1_01.png)"
CUHK03_SPLITS = ("train_idx", "query_idx", "gallery_idx")
CUHK03_KEYS = (*CUHK03_SPLITS, "labels", "filelist")


def _mat_string(entry) -> str | None:
    """A ``filelist`` cell as loadmat returns it (``array(['1_001_1_01.png'])`` or a str) -> str."""
    values = np.asarray(entry, dtype=object).ravel()
    if values.size == 1 and isinstance(values[0], np.ndarray):
        values = values[0].ravel()
    return str(values[0]) if values.size == 1 and isinstance(values[0], str) else None


def _indices(mat: dict, key: str, count: int, path: Path) -> np.ndarray:
    """A 1-based MATLAB index vector -> 0-based int64 positions into ``filelist`` (checked)."""
    values = np.asarray(mat[key]).ravel()
    if values.size == 0:
        raise DmireidError(f"{path}: {key} is empty")
    if not np.issubdtype(values.dtype, np.number) or np.any(values != np.round(values)):
        raise DmireidError(f"{path}: {key} must hold integer indices into filelist")
    values = values.astype(np.int64)
    if values.min() < 1 or values.max() > count:
        raise DmireidError(f"{path}: {key} has an index out of range (1..{count}, the length of filelist)")
    return values - 1


def read_cuhk03_config(path: Path) -> tuple[list[str], np.ndarray, dict[str, np.ndarray]]:
    """``cuhk03_new_protocol_config_*.mat`` -> (filelist names, labels N, {split key: 0-based indices})."""
    from scipy.io import loadmat

    try:
        mat = loadmat(str(path))
    except Exception as exc:  # noqa: BLE001 - scipy raises several types for a broken file
        raise DmireidError(f"{path}: cannot read as a MATLAB .mat file ({' '.join(str(exc).split())})") from None
    missing = [k for k in CUHK03_KEYS if k not in mat]
    if missing:
        raise DmireidError(f"{path}: missing {', '.join(missing)} (expected the CUHK03-NP keys "
                           f"{', '.join(CUHK03_KEYS)})")
    names = [_mat_string(e) for e in np.asarray(mat["filelist"], dtype=object).ravel()]
    labels = np.asarray(mat["labels"]).ravel()
    if len(labels) != len(names) or not np.issubdtype(labels.dtype, np.number):
        raise DmireidError(f"{path}: labels must be {len(names)} numbers, one per filelist entry")
    return names, labels.astype(np.int64), {k: _indices(mat, k, len(names), path) for k in CUHK03_SPLITS}


def _cuhk03_split(folder: Path, present: set[str], config: Path, names: list[str], labels: np.ndarray,
                  rows: np.ndarray, relabel: dict[int, int] | None) -> list[Sample]:
    """Samples of the filelist ``rows`` (``present``: the file names in ``folder``): camid =
    2 (pair - 1) + view - 1; pid = the label, or ``relabel[label]``."""
    samples = []
    for row in rows:
        name = names[row]
        m = CUHK03_NAME.match(name) if name is not None else None
        if m is None:
            raise DmireidError(f"{config}: filelist entry {row + 1} ({name!r}) does not match {CUHK03_EXAMPLE}")
        if name not in present:
            raise DmireidError(f"{config}: listed image {folder / name} does not exist")
        camid = 2 * (int(m.group(1)) - 1) + int(m.group(3)) - 1
        pid = int(labels[row])
        samples.append((str(folder / name), relabel[pid] if relabel is not None else pid, camid))
    return sorted(samples)


def _check_one_pair_per_label(config: Path, names: list[str], labels: np.ndarray, rows: np.ndarray) -> None:
    """Each identity lives in one camera pair (what makes the pair-wise camids safe to evaluate)."""
    seen: dict[int, str] = {}
    for row in rows:
        pair = names[row][0]  # names already checked by _cuhk03_split
        first = seen.setdefault(int(labels[row]), pair)
        if first != pair:
            raise DmireidError(f"{config}: label {int(labels[row])} is given to images of camera pairs "
                               f"{' and '.join(sorted((first, pair)))} (expected one identity per pair)")


@register_dataset("cuhk03")
def load_cuhk03(root, boxes: Literal["labeled", "detected"] = "labeled") -> ReIDDataset:
    """CUHK03-NP with hand-drawn (``labeled``) or detector (``detected``) boxes, torchreid's layout.

    767 train ids (7,368 labeled / 7,365 detected images), 700 test ids: 1,400 queries and 5,328 /
    5,332 gallery images. As in torchreid the camera comes from the name and the ids from the
    .mat's ``labels``: train ids relabelled 0..n-1 in ascending label order, query / gallery ids
    kept as the labels. Unlike torchreid (camid = view - 1 in every pair) camid = 2 (pair - 1) +
    view - 1 (0..9): view 1 of one pair is not the camera of view 1 of another (the five pairs use
    six cameras; the release does not say which), and the camera-aware sampler should not take them
    for one. Each identity lives in one pair (checked), so the same-id-same-camera rule of
    evaluation leaves out the same gallery items and the metrics equal torchreid's.
    """
    images, config = f"images_{boxes}", f"cuhk03_new_protocol_config_{boxes}.mat"
    root = find_root(root, (images, config), ("cuhk03", "CUHK03"), f"CUHK03 ({boxes} boxes)")
    names, labels, rows = read_cuhk03_config(root / config)
    present = {p.name for p in list_images(root / images)}
    relabel = {int(pid): k for k, pid in enumerate(np.unique(labels[rows["train_idx"]]))}
    split = {key.removesuffix("_idx"): _cuhk03_split(root / images, present, root / config, names, labels, idx,
                                                     relabel if key == "train_idx" else None)
             for key, idx in rows.items()}
    _check_one_pair_per_label(root / config, names, labels, np.concatenate(list(rows.values())))
    return ReIDDataset("cuhk03", str(root), **split)


# --------------------------------------------------------------------------------------------- CUHK01

CUHK01_NAME = re.compile(r"^(\d{4})(\d{3})\.png$", re.IGNORECASE)


def _cuhk01_images(campus: Path) -> list[tuple[str, int, int]]:
    """``campus/PPPPIII.png`` -> (path, person number, camid): images 1-2 camera A (0), 3-4 B (1)."""
    parsed = []
    for path in list_images(campus):
        m = CUHK01_NAME.match(path.name)
        if m is None:
            raise DmireidError(f"{path}: file name does not match <person:4 digits><image:3 digits>.png "
                               "(e.g. 0001001.png) for CUHK01")
        person, image = int(m.group(1)), int(m.group(2))
        if person < 1 or not 1 <= image <= 4:
            raise DmireidError(f"{path}: person {person} / image {image} out of range (person >= 1, image 1..4) "
                               "for CUHK01")
        parsed.append((str(path), person, (image - 1) // 2))
    return parsed


def cuhk01_train_ids(persons: list[int], split_seed: int) -> list[int]:
    """The ``len // 2`` training persons (sorted) of ``split_seed``: the first of the seeded
    permutation of the sorted persons, as torchreid's ``np.random.seed(s); shuffle(arange(n))``."""
    order = np.random.RandomState(split_seed).permutation(len(persons))
    return sorted(persons[i] for i in order[: len(persons) // 2])


@register_dataset("cuhk01")
def load_cuhk01(root, split_seed: int = 0) -> ReIDDataset:
    """CUHK01, torchreid's protocol: 485 train / 486 test ids of 971 by a permutation seeded with
    ``split_seed``; train ids relabelled 0..484 (ascending person number); query = the test ids'
    camera A images, gallery = their camera B images, ids = person number - 1 (torchreid's)."""
    if isinstance(split_seed, bool) or not isinstance(split_seed, numbers.Integral) or not 0 <= split_seed < 2**32:
        raise DmireidError(f"data.options.split_seed must be an integer in [0, 2**32), got {split_seed!r}")
    root = find_root(root, ("campus",), ("cuhk01", "CUHK01"), "CUHK01")
    images = _cuhk01_images(root / "campus")
    persons = sorted({person for _, person, _ in images})
    if len(persons) < 2:
        raise DmireidError(f"{root / 'campus'}: {len(persons)} person(s); the split needs at least 2 for CUHK01")
    label = {person: k for k, person in enumerate(cuhk01_train_ids(persons, split_seed))}
    train = [(p, label[person], cam) for p, person, cam in images if person in label]
    test = [(p, person - 1, cam) for p, person, cam in images if person not in label]
    return ReIDDataset("cuhk01", str(root), train, [s for s in test if s[2] == 0], [s for s in test if s[2] == 1])
