"""A deterministic synthetic re-ID dataset in the Market-1501 layout (spec §5).

Identities come in look-alike groups and cameras change viewpoint, colour, blur, background and
occlusion (:mod:`dmireid.data.synthetic_drawing`). Same-identity images in two cameras thus often
differ more than two look-alikes in one camera: raw pixels give a low mAP, a learned model can do
well. Registered as the dataset ``synthetic`` (its options: the :func:`make_synthetic` arguments).

    root = make_synthetic("/tmp/synth", num_ids=200)    # ~1,100 train / ~1,200 test images
    ds = load_dataset("synthetic", "/tmp/synth")         # regenerated only if parameters differ

Everything is drawn with numpy masks on an H×W grid and written with PIL; the output is
byte-identical for the same arguments.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np

from ..errors import DmireidError
from .catalog import register_dataset
from .market_layout import MarketNaming, load_market_layout
from .samples import ReIDDataset
from .synthetic_drawing import look_alike_identities, random_camera, random_identity, render

log = logging.getLogger(__name__)

MARKER = "synthetic.json"
GENERATOR = "dmireid-synthetic/1"
SPLIT_DIRS = ("bounding_box_train", "query", "bounding_box_test")

# --------------------------------------------------------------------------------------------
# the dataset


def _plan(num_ids: int, num_cameras: int, images_per_camera, rng) -> list[tuple[str, int, int, int]]:
    """(folder, pid, camid, identity index) per image: train/test id split, query choice,
    distractors (pid 0) and junk (pid -1), both with identity index -1 (a random person)."""
    lo, hi = images_per_camera
    pids = rng.permutation(np.arange(1, num_ids + 1))
    train_ids = set(pids[: num_ids // 2].tolist())
    plan = []
    for pid in [*sorted(train_ids), *sorted(pids[num_ids // 2:].tolist())]:
        cams = np.sort(rng.choice(num_cameras, int(rng.integers(min(3, num_cameras), num_cameras + 1)), replace=False))
        counts = rng.integers(lo, hi + 1, len(cams))
        query_cams = set(rng.choice(cams, int(rng.integers(1, len(cams))), replace=False).tolist())
        for cam, n in zip(cams.tolist(), counts.tolist()):
            for k in range(n):
                if pid in train_ids:
                    folder = "bounding_box_train"
                else:
                    folder = "query" if (cam in query_cams and k == 0) else "bounding_box_test"
                plan.append((folder, int(pid), cam, int(pid) - 1))
    for _ in range(max(1, num_ids // 2)):
        plan.append(("bounding_box_test", 0, int(rng.integers(num_cameras)), -1))
    for _ in range(max(1, num_ids // 20)):
        plan.append(("bounding_box_test", -1, int(rng.integers(num_cameras)), -1))
    return plan


def _check_params(num_ids, num_cameras, height, width, images_per_camera) -> tuple[int, int]:
    lo, hi = (int(x) for x in images_per_camera)
    checks = [(num_ids >= 2, f"num_ids must be >= 2, got {num_ids}"),
              (2 <= num_cameras <= 99, f"num_cameras must be in 2..99, got {num_cameras}"),
              (height >= 16 and width >= 8, f"height and width must be >= 16 and >= 8, got {height}x{width}"),
              (1 <= lo <= hi, f"images_per_camera must be (lo, hi) with 1 <= lo <= hi, got {images_per_camera}")]
    for ok, message in checks:
        if not ok:
            raise DmireidError(f"synthetic dataset: {message}")
    return lo, hi


def _marker(num_ids, num_cameras, seed, height, width, images_per_camera) -> dict:
    return {"generator": GENERATOR, "num_ids": int(num_ids), "num_cameras": int(num_cameras), "seed": int(seed),
            "height": int(height), "width": int(width), "images_per_camera": [int(x) for x in images_per_camera]}


def make_synthetic(out, num_ids: int = 200, num_cameras: int = 6, seed: int = 0, height: int = 128,
                   width: int = 64, images_per_camera: tuple[int, int] = (1, 4)) -> Path:
    """Write a Market-1501-layout synthetic dataset to ``out``; returns ``out`` as a Path.

    ids 1..num_ids, half train / half test (disjoint); each id in >= 2 cameras with
    ``images_per_camera`` (lo, hi) images per camera; per test id one query image in each of a
    subset of its cameras (never all), the rest in the gallery; plus num_ids/2 distractors (pid 0)
    and num_ids/20 junk images (pid -1) in the gallery. A ``synthetic.json`` marker records the
    parameters. Overwrites an earlier synthetic dataset in ``out``, nothing else.
    """
    lo, hi = _check_params(num_ids, num_cameras, height, width, images_per_camera)
    out = Path(out).expanduser().absolute()
    if out.exists():
        foreign = sorted(p.name for p in out.iterdir() if p.name not in (*SPLIT_DIRS, MARKER))
        if foreign or not out.is_dir():
            raise DmireidError(f"{out}: not empty and not a synthetic dataset (found {', '.join(foreign[:3]) or 'a file'})")
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    for d in SPLIT_DIRS:
        (tmp / d).mkdir(parents=True)
    root_rng = np.random.default_rng([seed, 0])
    identities = look_alike_identities(num_ids, root_rng)
    cameras = [random_camera(np.random.default_rng([seed, 1, c])) for c in range(num_cameras)]
    plan = _plan(num_ids, num_cameras, (lo, hi), root_rng)
    for k, (folder, pid, cam, index) in enumerate(plan):
        rng = np.random.default_rng([seed, 2, k])
        ident = identities[index] if index >= 0 else random_identity(rng)
        image = render(ident, cameras[cam], rng, height, width, zoom=2.2 if pid == -1 else 1.0)
        pid_text = f"{pid:04d}" if pid >= 0 else "-1"
        name = f"{pid_text}_c{cam + 1}s{rng.integers(1, 7)}_{5 * k:06d}_{rng.integers(0, 8):02d}.jpg"
        image.save(tmp / folder / name, quality=90)
    (tmp / MARKER).write_text(json.dumps(_marker(num_ids, num_cameras, seed, height, width, (lo, hi)), indent=1) + "\n")
    _swap_in(tmp, out)
    return out


def _swap_in(tmp: Path, out: Path) -> None:
    """Replace ``out``'s dataset entries by ``tmp``'s (marker last), then drop ``tmp``."""
    if not out.exists():
        os.replace(tmp, out)
        return
    (out / MARKER).unlink(missing_ok=True)
    for d in SPLIT_DIRS:
        shutil.rmtree(out / d, ignore_errors=True)
        os.replace(tmp / d, out / d)
    os.replace(tmp / MARKER, out / MARKER)
    tmp.rmdir()


def default_synthetic_root(num_ids=200, num_cameras=6, seed=0, height=128, width=64, images_per_camera=(1, 4)) -> Path:
    """``~/.cache/dmireid/synthetic-n<ids>-c<cams>-s<seed>-<H>x<W>[-i<lo>-<hi>]``."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "dmireid"
    suffix = "" if tuple(images_per_camera) == (1, 4) else f"-i{images_per_camera[0]}-{images_per_camera[1]}"
    return cache / f"synthetic-n{num_ids}-c{num_cameras}-s{seed}-{height}x{width}{suffix}"


@register_dataset("synthetic")
def load_synthetic(root=None, num_ids: int = 200, num_cameras: int = 6, seed: int = 0, height: int = 128,
                   width: int = 64, images_per_camera: tuple[int, int] = (1, 4)) -> ReIDDataset:
    """Load the synthetic dataset at ``root``, generating it first if absent or made with other
    parameters (root None = :func:`default_synthetic_root`)."""
    params = dict(num_ids=num_ids, num_cameras=num_cameras, seed=seed, height=height, width=width,
                  images_per_camera=tuple(images_per_camera))
    root = Path(root).expanduser().absolute() if root is not None else default_synthetic_root(**params)
    marker = root / MARKER
    try:
        current = json.loads(marker.read_text()) if marker.is_file() else None
    except (OSError, ValueError):
        current = {}
    if current != _marker(**params):
        if current is None and root.is_dir() and any(root.iterdir()):
            raise DmireidError(f"{root}: not a synthetic dataset (no {MARKER}); use an empty or new folder")
        log.info("generating the synthetic dataset in %s", root)
        make_synthetic(root, **params)
    return load_market_layout(root, "synthetic", MarketNaming("the synthetic dataset", "0001_c1s1_000123_00.jpg",
                                                              num_cameras))
