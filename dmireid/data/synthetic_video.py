"""Synthetic multi-person video: the synthetic pedestrians walking on a camera's background.

A *site* is a population of look-alike identities and a few fixed cameras (background, colour
cast, blur, noise: :func:`dmireid.data.synthetic_drawing.random_camera`). A *scene* (one seed)
picks some of the population; each camera films them walking across its view at several depths,
crossing and occluding each other (nearer people are drawn over farther ones), so the boxes and
identities of every frame are known and no detector is needed. Clips are written as
MOTChallenge sequences::

    OUT/img1/000001.jpg ...   frames (RGB JPEG, 1-based numbers)
    OUT/gt/gt.txt             frame, id, left, top, width, height, 1, 1, visibility (global ids)
    OUT/seqinfo.ini

    clip = render_clip(site_seed=0, scene_seed=3, camera=1)      # Clip: frames (T×H×W×3 uint8), gt
    write_clip(clip, "site/c1-s3")
"""

from __future__ import annotations

import configparser
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from ..errors import DmireidError
from .synthetic_drawing import SIDE, Camera, _background, _draw_person, look_alike_identities, random_camera

FRAME_SIZE = (160, 320)  # H, W
BOX_ASPECT = 0.45  # box width / person height
MIN_VISIBILITY = 0.35  # a person less visible than this is not detected (not in the ground truth)


@dataclass
class Clip:
    """One camera's clip: ``frames`` T×H×W×3 uint8 RGB; ``gt`` rows (frame 1-based, global id,
    left, top, width, height, visibility), boxes clipped at the frame, one row per detected person."""

    frames: np.ndarray
    gt: np.ndarray  # K×7 float64
    camera: int  # 1-based
    site_seed: int
    scene_seed: int


@dataclass(frozen=True)
class Walker:
    ident_index: int  # into the site population (global id = index + 1)
    start: int  # first frame (0-based)
    x0: float  # centre x at ``start`` (px)
    speed: float  # px per frame (sign = direction)
    bottom: float  # feet y (px): depth; nearer people are lower and taller
    height: float  # person height (px)
    phase: float


def site_cameras(site_seed: int, num_cameras: int = 2) -> list[Camera]:
    """The site's fixed cameras (the same for every scene of the site)."""
    return [random_camera(np.random.default_rng([site_seed, 11, c])) for c in range(num_cameras)]


def scene_people(site_seed: int, scene_seed: int, population: int, people: int) -> np.ndarray:
    """Indices into the site population of the ``people`` identities of one scene."""
    if not 1 <= people <= population:
        raise DmireidError(f"synthetic video: people must be in 1..{population} (the population), got {people}")
    return np.sort(np.random.default_rng([site_seed, 12, scene_seed]).choice(population, people, replace=False))


def _walkers(people: np.ndarray, frames: int, rng, size) -> list[Walker]:
    """Each person crosses the view once, entering from a random side at a random time."""
    H, W = size
    walkers = []
    for k, index in enumerate(people.tolist()):
        height = H * rng.uniform(0.55, 0.8)
        bottom = min(H - 1.0, H * 0.2 + height * rng.uniform(1.0, 1.08))
        speed = rng.uniform(2.0, 4.0) * (1 if rng.random() < 0.5 else -1)
        span = W + height  # from fully outside to fully outside
        duration = int(span / abs(speed))
        start = int(rng.integers(-duration // 2, max(1, frames - duration // 2)))
        x0 = -0.3 * height if speed > 0 else W + 0.3 * height
        walkers.append(Walker(int(index), start, x0, float(speed), float(bottom), float(height),
                              float(rng.uniform(0, 2 * np.pi))))
    return walkers


def render_clip(site_seed: int = 0, scene_seed: int = 0, camera: int = 1, frames: int = 120, people: int = 8,
                population: int = 24, num_cameras: int = 2, size: tuple[int, int] = FRAME_SIZE) -> Clip:
    """Render one camera's clip of one scene (see the module docstring); deterministic in its arguments."""
    if not 1 <= camera <= num_cameras:
        raise DmireidError(f"synthetic video: camera must be in 1..{num_cameras}, got {camera}")
    if frames < 1:
        raise DmireidError(f"synthetic video: frames must be >= 1, got {frames}")
    H, W = size
    identities = look_alike_identities(population, np.random.default_rng([site_seed, 10]))
    cam = site_cameras(site_seed, num_cameras)[camera - 1]
    rng = np.random.default_rng([site_seed, 13, scene_seed, camera])
    walkers = _walkers(scene_people(site_seed, scene_seed, population, people), frames, rng, size)
    Y, X = np.mgrid[0:H, 0:W].astype(np.float32)
    background = _background(cam, np.random.default_rng([site_seed, 14, camera]), Y, X, H)
    out = np.empty((frames, H, W, 3), np.uint8)
    gt = []
    for t in range(frames):
        img = background.copy()
        cover = np.full((H, W), -1, np.int32)  # which walker owns each pixel (nearest drawn last)
        boxes = {}
        for w_index in sorted(range(len(walkers)), key=lambda i: walkers[i].bottom):
            w = walkers[w_index]
            cx = w.x0 + w.speed * (t - w.start)
            left, top = cx - BOX_ASPECT * w.height / 2, w.bottom - w.height
            x0, x1 = int(max(0, np.floor(left))), int(min(W, np.ceil(left + BOX_ASPECT * w.height)))
            y0, y1 = int(max(0, np.floor(top))), int(min(H, np.ceil(w.bottom)))
            if t < w.start or x1 - x0 < 2 or y1 - y0 < 2:
                continue
            patch, before = img[y0:y1, x0:x1], img[y0:y1, x0:x1].copy()
            spread = abs(np.sin(w.phase + 0.35 * (t - w.start)))
            _draw_person(patch, identities[w.ident_index], SIDE, 1 if w.speed > 0 else -1,
                         (top, cx, w.height, spread), Y[y0:y1, x0:x1], X[y0:y1, x0:x1])
            painted = np.any(patch != before, axis=2)
            cover[y0:y1, x0:x1][painted] = w_index
            boxes[w_index] = (x0, y0, x1, y1, int(painted.sum()))
        for w_index, (x0, y0, x1, y1, area) in boxes.items():
            visible = int((cover[y0:y1, x0:x1] == w_index).sum()) / max(area, 1)
            if area and visible >= MIN_VISIBILITY:
                gt.append((t + 1, walkers[w_index].ident_index + 1, x0, y0, x1 - x0, y1 - y0, round(visible, 3)))
        out[t] = _finish(img, cam, rng)
    return Clip(out, np.array(gt, np.float64).reshape(-1, 7), camera, site_seed, scene_seed)


def _finish(img: np.ndarray, cam: Camera, rng) -> np.ndarray:
    """The camera's colour cast, contrast, noise and blur on one H×W×3 float frame -> uint8."""
    img = img * cam.gain * cam.brightness
    mean = img.mean()
    img = (img - mean) * cam.contrast + mean + rng.normal(0, cam.noise, img.shape)
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    radius = cam.blur * img.shape[0] / 256
    return np.asarray(pil.filter(ImageFilter.GaussianBlur(radius)) if radius > 0.25 else pil)


def write_clip(clip: Clip, out: str | Path) -> Path:
    """Write ``clip`` as a MOTChallenge sequence folder (img1/, gt/gt.txt, seqinfo.ini); replaces
    an earlier clip there. Returns the folder."""
    out = Path(out)
    if out.exists() and not (out / "seqinfo.ini").is_file():
        raise DmireidError(f"{out}: exists and is not a clip written by dmireid (no seqinfo.ini)")
    shutil.rmtree(out, ignore_errors=True)
    (out / "img1").mkdir(parents=True)
    (out / "gt").mkdir()
    for t, frame in enumerate(clip.frames, 1):
        Image.fromarray(frame).save(out / "img1" / f"{t:06d}.jpg", quality=92)
    lines = [f"{int(f)},{int(i)},{l:g},{t:g},{w:g},{h:g},1,1,{v:g}" for f, i, l, t, w, h, v in clip.gt]
    (out / "gt" / "gt.txt").write_text("\n".join(lines) + "\n")
    info = configparser.ConfigParser()
    info["Sequence"] = {"name": out.name, "imDir": "img1", "frameRate": "25", "seqLength": str(len(clip.frames)),
                        "imWidth": str(clip.frames.shape[2]), "imHeight": str(clip.frames.shape[1]),
                        "imExt": ".jpg", "camera": str(clip.camera), "siteSeed": str(clip.site_seed),
                        "sceneSeed": str(clip.scene_seed)}
    with open(out / "seqinfo.ini", "w") as handle:
        info.write(handle)
    return out


def write_labelled_crops(clips: list[Clip], out: str | Path, query_per_id: int = 1, every: int = 4) -> Path:
    """Market-layout ``query/`` and ``bounding_box_test/`` from the clips' ground truth (names
    ``<id>_c<camera>_f<frame>.jpg``): per identity and camera, ``query_per_id`` crops go to the query
    folder of the first camera that sees the person, the others (every ``every``-th frame) to the gallery."""
    out = Path(out)
    for sub in ("query", "bounding_box_test"):
        shutil.rmtree(out / sub, ignore_errors=True)
        (out / sub).mkdir(parents=True)
    first_camera: dict[int, int] = {}
    in_query: dict[tuple[int, int], int] = {}
    for clip in clips:
        for row in clip.gt[np.argsort(clip.gt[:, 0], kind="stable")]:
            frame, pid, left, top, width, height = (int(v) for v in row[:6])
            if (frame - 1) % every:
                continue
            first_camera.setdefault(pid, clip.camera)
            query = first_camera[pid] == clip.camera and in_query.get((pid, clip.camera), 0) < query_per_id
            if query:
                in_query[(pid, clip.camera)] = in_query.get((pid, clip.camera), 0) + 1
            crop = clip.frames[frame - 1, top:top + height, left:left + width]
            folder = "query" if query else "bounding_box_test"
            Image.fromarray(crop).save(out / folder / f"{pid:04d}_c{clip.camera}_f{frame:06d}.jpg", quality=92)
    return out
