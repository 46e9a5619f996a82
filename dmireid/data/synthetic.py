"""A deterministic synthetic re-ID dataset in the Market-1501 layout (spec §5).

Identities are combinations of clothing / body / accessory attributes, drawn in *look-alike groups*
that share most attributes. Cameras change the viewpoint (front / back / side: a backpack shows
from the back only, a logo from the front only), scale and position, colour cast, brightness,
contrast, blur, noise and background, and add occluders. Same-identity images in two cameras thus
often differ more than two look-alikes in one camera: raw pixels give a low mAP, a learned model
can do well.

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
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from ..errors import DmireidError

log = logging.getLogger(__name__)

MARKER = "synthetic.json"
GENERATOR = "dmireid-synthetic/1"
SPLIT_DIRS = ("bounding_box_train", "query", "bounding_box_test")
GROUP_SIZE = 4  # identities per look-alike group
# camera nuisance strengths, tuned so that raw pixels give ~0.13 mAP on the default set
CAST = 0.10  # log-sd of the per-camera RGB gains (colour cast)
CONTRAST = (0.75, 1.1)  # per-camera contrast range
VIEW_BIAS = 0.5  # probability of a camera's preferred view (front / back / side)
BG_GREY = 0.9  # background colour = BG_GREY·grey + (1 - BG_GREY)·a palette colour
BG_LEVEL = (100, 130)  # grey level range of the backgrounds
BG_CONTRAST = 10.0  # sd of the difference between a camera's two background colours
OCCLUSION = (0.05, 0.15)  # per-camera range of the occluder probability
CLUTTER = 1  # at most this many background rectangles per image

CLOTHES = np.array([
    [200, 30, 30], [30, 60, 170], [240, 240, 235], [25, 25, 28], [60, 140, 60], [235, 200, 40],
    [120, 120, 125], [130, 40, 150], [240, 130, 40], [90, 170, 220], [110, 70, 40], [230, 150, 170],
    [20, 90, 90], [180, 170, 120], [70, 30, 30], [150, 200, 80]], dtype=np.float32)
SKIN = np.array([[240, 200, 170], [210, 160, 120], [170, 120, 80], [110, 70, 45]], dtype=np.float32)
HAIR = np.array([[20, 15, 10], [90, 55, 25], [200, 160, 90], [140, 140, 140], [150, 50, 20]],
                dtype=np.float32)
SOLID, STRIPES, CHECKS, LOGO = range(4)
FRONT, BACK, SIDE = range(3)


@dataclass(frozen=True)
class _Identity:
    shirt: np.ndarray
    shirt2: np.ndarray
    pattern: int
    trousers: np.ndarray
    shorts: bool
    shoes: np.ndarray
    skin: np.ndarray
    hair: np.ndarray
    long_hair: bool
    height: float
    width: float
    head: float
    bag: np.ndarray | None
    backpack: np.ndarray | None
    hat: np.ndarray | None


@dataclass(frozen=True)
class _Camera:
    gain: np.ndarray  # per-channel colour cast
    brightness: float
    contrast: float
    blur: float  # Gaussian radius at 128 px height
    noise: float
    bg_kind: int
    bg_a: np.ndarray
    bg_b: np.ndarray
    bg_period: float  # texture period, fraction of the image height
    horizon: float
    views: np.ndarray  # probabilities of front / back / side
    scale: float  # person height / image height
    occlusion: float  # probability of an occluder


def _colour(rng, palette, jitter=14.0) -> np.ndarray:
    return np.clip(palette[rng.integers(len(palette))] + rng.normal(0, jitter, 3), 0, 255).astype(np.float32)


def _maybe(rng, p) -> np.ndarray | None:
    return _colour(rng, CLOTHES) if rng.random() < p else None


def _random_identity(rng) -> _Identity:
    return _Identity(
        shirt=_colour(rng, CLOTHES), shirt2=_colour(rng, CLOTHES), pattern=int(rng.integers(4)),
        trousers=_colour(rng, CLOTHES[[1, 3, 6, 10, 13, 14, 2, 12]]), shorts=bool(rng.random() < 0.2),
        shoes=_colour(rng, CLOTHES[[2, 3, 10, 6, 0]]), skin=_colour(rng, SKIN, 8),
        hair=_colour(rng, HAIR, 8), long_hair=bool(rng.random() < 0.3),
        height=float(rng.uniform(0.86, 1.0)), width=float(rng.uniform(0.8, 1.2)),
        head=float(rng.uniform(0.85, 1.15)),
        bag=_maybe(rng, 0.25), backpack=_maybe(rng, 0.3), hat=_maybe(rng, 0.15))


def _mutate(ident: _Identity, what: str, rng) -> _Identity:
    """Change one attribute (look-alikes differ in one or two of these)."""
    if what == "shirt":
        return replace(ident, shirt=_colour(rng, CLOTHES))
    if what == "pattern":
        return replace(ident, pattern=int((ident.pattern + rng.integers(1, 4)) % 4), shirt2=_colour(rng, CLOTHES))
    if what == "trousers":
        return replace(ident, trousers=_colour(rng, CLOTHES), shorts=bool(rng.random() < 0.2))
    if what == "shoes":
        return replace(ident, shoes=_colour(rng, CLOTHES))
    if what == "hair":
        return replace(ident, hair=_colour(rng, HAIR, 8), long_hair=not ident.long_hair)
    if what == "body":
        return replace(ident, height=float(rng.uniform(0.86, 1.0)), width=float(rng.uniform(0.8, 1.2)))
    if what in ("bag", "backpack", "hat"):
        return replace(ident, **{what: None if getattr(ident, what) is not None else _colour(rng, CLOTHES)})
    raise ValueError(what)


MUTATIONS = ("shirt", "pattern", "trousers", "shoes", "hair", "body", "bag", "backpack", "hat")


def _jitter(ident: _Identity, rng, sigma=6.0) -> _Identity:
    """Small colour differences between group members."""
    def j(c):
        return None if c is None else np.clip(c + rng.normal(0, sigma, 3), 0, 255).astype(np.float32)
    return replace(ident, shirt=j(ident.shirt), trousers=j(ident.trousers), shoes=j(ident.shoes),
                   hair=j(ident.hair), skin=j(ident.skin))


def _look_alike_identities(count: int, rng) -> list[_Identity]:
    """``count`` identities in groups of GROUP_SIZE sharing a prototype (1-2 attributes differ)."""
    out = []
    while len(out) < count:
        proto = _random_identity(rng)
        for member in range(GROUP_SIZE):
            ident = proto
            if member:
                for what in rng.choice(MUTATIONS, size=int(rng.integers(1, 3)), replace=False):
                    ident = _mutate(ident, str(what), rng)
            out.append(_jitter(ident, rng))
    return out[:count]


def _random_camera(rng) -> _Camera:
    views = np.full(3, (1 - VIEW_BIAS) / 2)
    views[rng.integers(3)] = VIEW_BIAS
    bg_a = BG_GREY * rng.uniform(*BG_LEVEL) + (1 - BG_GREY) * _colour(rng, CLOTHES, 30)  # muted scene colours
    bg_b = np.clip(bg_a + rng.normal(0, BG_CONTRAST, 3), 0, 255).astype(np.float32)
    return _Camera(
        gain=np.exp(rng.normal(0, CAST, 3)).astype(np.float32), brightness=float(np.exp(rng.normal(0, 0.2))),
        contrast=float(rng.uniform(*CONTRAST)), blur=float(rng.uniform(0.0, 1.3)),
        noise=float(rng.uniform(2, 8)), bg_kind=int(rng.integers(4)),
        bg_a=bg_a.astype(np.float32), bg_b=bg_b,
        bg_period=float(rng.uniform(0.08, 0.3)), horizon=float(rng.uniform(0.55, 0.85)),
        views=views, scale=float(rng.uniform(0.82, 0.95)), occlusion=float(rng.uniform(*OCCLUSION)))


# --------------------------------------------------------------------------------------------
# drawing (all coordinates in pixels, H×W float grids)


def _background(cam: _Camera, rng, Y, X, H) -> np.ndarray:
    """H×W×3 camera background: wall/floor, stripes, blobs or bands, shifted per image."""
    phase = rng.uniform(0, 2 * np.pi)
    period = cam.bg_period * H
    if cam.bg_kind == 0:
        t = np.where(Y < cam.horizon * H, 0.15 + 0.5 * Y / H, 0.9 + 0.1 * np.sign(np.sin(X / period * 2 + phase)))
    elif cam.bg_kind == 1:
        t = 0.5 + 0.5 * np.tanh(3 * np.sin(2 * np.pi * X / period + phase))
    elif cam.bg_kind == 2:
        t = 0.5 + 0.25 * (np.sin(2 * np.pi * X / period + phase) + np.sin(2 * np.pi * Y / (1.7 * period) + 2 * phase))
    else:
        t = np.where(Y < cam.horizon * H, 0.5 + 0.5 * np.sign(np.sin(2 * np.pi * Y / period + phase)),
                     0.5 + 0.5 * np.sign(np.sin(X / period * 4 + phase) * np.sin(Y / period * 4)))
    img = cam.bg_a + (cam.bg_b - cam.bg_a) * t[..., None]
    return img * rng.uniform(0.85, 1.15)


def _clutter(img, rng, Y, X, H, W) -> None:
    """0-2 random rectangles (posts, passers-by) in the background, in place."""
    for _ in range(int(rng.integers(0, CLUTTER + 1))):
        x0, y0 = rng.uniform(-0.2, 1.0) * W, rng.uniform(0, 0.9) * H
        box = (X >= x0) & (X < x0 + rng.uniform(0.1, 0.4) * W) & (Y >= y0) & (Y < y0 + rng.uniform(0.1, 0.6) * H)
        img[box] = _colour(rng, CLOTHES, 30)


def _draw_person(img, ident: _Identity, view: int, facing: int, geom, Y, X) -> None:
    """Paint the person in place; ``geom`` = (top px, centre x px, height px, leg spread 0-1)."""
    top, cx, ph, spread = geom
    v = (Y - top) / ph  # 0 = top of the head, 1 = soles
    u = (X - cx) / ph * (facing if view == SIDE else 1)
    wf = ident.width
    side = view == SIDE
    person = np.zeros(v.shape, bool)

    def paint(mask, colour):
        img[mask] = colour
        person[mask] = True

    torso_hw = (0.125 - 0.02 * np.clip((v - 0.17) / 0.38, 0, 1)) * wf * (0.6 if side else 1.0)
    backpack_rows = (v >= 0.19) & (v < 0.46)
    if ident.backpack is not None and side:
        paint(backpack_rows & (u > -torso_hw - 0.075 * wf) & (u < 0), ident.backpack * 0.9)
    # legs and shoes
    legs = np.zeros(v.shape, bool)
    shoes = np.zeros(v.shape, bool)
    for s in (-1, 1):
        if side:
            c = s * spread * 0.09 * np.clip((v - 0.55) / 0.38, 0, 1)
        else:
            c = s * (0.045 * wf + spread * 0.05 * np.clip((v - 0.52) / 0.41, 0, 1))
        legs |= (v >= 0.52) & (v < 0.93) & (np.abs(u - c) < 0.04 * wf)
        du = u - c
        shoes |= (v >= 0.93) & (v < 0.985) & ((du > -0.035) & (du < (0.06 if side else 0.035)))
    legs |= (v >= 0.52) & (v < 0.6) & (np.abs(u) < (0.06 if side else 0.085) * wf)
    paint(legs & (v < (0.72 if ident.shorts else 1.0)), ident.trousers)
    paint(legs & (v >= 0.72) & ident.shorts, ident.skin)
    paint(shoes, ident.shoes)
    # shirt: torso + arms, with its pattern
    period = max(2.0, 0.045 * ph)
    stripes = np.floor(v * ph / period) % 2 == 1
    checks = stripes ^ (np.floor(u * ph / period + 50) % 2 == 1)
    torso = (v >= 0.165) & (v < 0.55) & (np.abs(u) < torso_hw)
    if side:
        arm = (v >= 0.18) & (v < 0.5) & (np.abs(u - spread * 0.05 * (v - 0.18)) < 0.028 * wf)
        hands = (v >= 0.5) & (v < 0.55) & (np.abs(u - spread * 0.05 * (v - 0.18)) < 0.025 * wf)
    else:
        outer = (np.abs(u) >= torso_hw) & (np.abs(u) < torso_hw + 0.038 * wf)
        arm, hands = (v >= 0.17) & (v < 0.5) & outer, (v >= 0.5) & (v < 0.55) & outer
    shirt = torso | arm
    pattern = {STRIPES: stripes, CHECKS: checks}.get(ident.pattern, np.zeros(v.shape, bool))
    if ident.pattern == LOGO and view == FRONT:
        pattern = (v >= 0.24) & (v < 0.33) & (np.abs(u) < 0.04 * wf)
    paint(shirt, ident.shirt)
    img[shirt & pattern] = ident.shirt2
    if side:
        img[arm & ~pattern] = ident.shirt * 0.8
    paint(hands, ident.skin)
    # accessories on the body
    if ident.backpack is not None and view == BACK:
        paint(backpack_rows & (np.abs(u) < 0.085 * wf), ident.backpack)
    if ident.backpack is not None and view == FRONT:
        paint((v >= 0.165) & (v < 0.40) & (np.abs(np.abs(u) - 0.06 * wf) < 0.012), ident.backpack * 0.8)
    if ident.bag is not None:
        uu = -u if view == BACK else u
        if side:
            paint((v >= 0.43) & (v < 0.58) & (np.abs(u) < 0.05 * wf), ident.bag)
        else:
            paint((v >= 0.43) & (v < 0.58) & (uu >= torso_hw + 0.02 * wf) & (uu < torso_hw + 0.09 * wf), ident.bag)
            strap = np.abs(uu - (-0.09 * wf + (v - 0.17) * 0.6 * wf)) < 0.01
            paint(strap & (v >= 0.17) & (v < 0.45), ident.bag * 0.7)
    _draw_head(paint, ident, view, v, u)
    shade = (1.05 - 0.12 * v) * (0.8 + 0.2 * np.cos(np.clip(u / (0.16 * wf), -1, 1) * np.pi / 2))
    img[person] *= shade[person][:, None]


def _draw_head(paint, ident: _Identity, view: int, v, u) -> None:
    """Neck, head, hair (long or short), eyes (front/side), hat."""
    hs = ident.head
    v0, ry, rx = 0.075, 0.062 * hs, 0.048 * hs
    u0 = 0.006 if view == SIDE else 0.0
    head = ((v - v0) / ry) ** 2 + ((u - u0) / rx) ** 2 < 1
    if ident.long_hair and view == FRONT:
        paint((v >= v0 - 0.5 * ry) & (v < 0.24) & (np.abs(u) < rx * 1.2), ident.hair)
    paint((v >= 0.125) & (v < 0.17) & (np.abs(u) < 0.022 * ident.width), ident.skin)
    paint(head, ident.skin)
    if view == FRONT:
        paint(head & (v < v0 - 0.3 * ry), ident.hair)
        paint((np.abs(v - v0 - 0.1 * ry) < 0.012) & (np.abs(np.abs(u) - 0.4 * rx) < 0.01), np.float32([30, 25, 25]))
    elif view == BACK:
        paint(head, ident.hair)
        if ident.long_hair:
            paint((v >= v0) & (v < 0.25) & (np.abs(u) < rx * 1.1), ident.hair)
    else:
        paint(head & ((u < u0 - 0.2 * rx) | (v < v0 - 0.3 * ry)), ident.hair)
        if ident.long_hair:
            paint((v >= v0) & (v < 0.24) & (u > -rx * 1.1) & (u < -0.2 * rx), ident.hair)
        paint((np.abs(v - v0 - 0.1 * ry) < 0.012) & (np.abs(u - u0 - 0.55 * rx) < 0.01), np.float32([30, 25, 25]))
    if ident.hat is not None:
        paint((v >= v0 - ry * 1.2) & (v < v0 - ry * 0.45) & (np.abs(u - u0) < rx * 1.1), ident.hat)
        brim = (u > u0 - rx * 1.1) & (u < u0 + rx * (1.8 if view == SIDE else 1.25))
        paint((v >= v0 - ry * 0.6) & (v < v0 - ry * 0.4) & brim, ident.hat * 0.8)


def _occlude(img, rng, Y, X, H, W) -> None:
    """A random occluder (car, bench, passer-by): bottom band or side box, in place."""
    colour = _colour(rng, CLOTHES, 30)
    if rng.random() < 0.5:
        y0 = rng.uniform(0.6, 0.85) * H
        x0, x1 = sorted(rng.uniform(-0.3, 1.3, 2) * W)
        box = (Y >= y0) & (X >= min(x0, 0.3 * W)) & (X < max(x1, 0.7 * W))
    else:
        w = rng.uniform(0.2, 0.4) * W
        y0, y1 = sorted(rng.uniform(0, 1, 2) * H)
        y1 = max(y1, y0 + 0.3 * H)
        x = X if rng.random() < 0.5 else W - 1 - X
        box = (x < w) & (Y >= y0) & (Y < y1)
    img[box] = colour * (0.9 + 0.2 * (Y[box] / H))[:, None]


def _render(ident: _Identity, cam: _Camera, rng, H: int, W: int, zoom: float = 1.0) -> Image.Image:
    """One H×W image of ``ident`` seen by ``cam`` (``zoom`` > 1: a bad crop, for junk)."""
    Y, X = np.mgrid[0:H, 0:W].astype(np.float32)
    img = _background(cam, rng, Y, X, H)
    _clutter(img, rng, Y, X, H, W)
    view = int(rng.choice(3, p=cam.views))
    facing = 1 if rng.random() < 0.5 else -1
    ph = H * cam.scale * ident.height * rng.uniform(0.93, 1.05) * zoom
    top = rng.uniform(0.01, max(0.011, 0.99 - ph / H)) * H - (zoom - 1) * 0.5 * ph
    cx = W * (0.5 + rng.normal(0, 0.05 * zoom))
    _draw_person(img, ident, view, facing, (top, cx, ph, rng.uniform(0, 1)), Y, X)
    if rng.random() < cam.occlusion:
        _occlude(img, rng, Y, X, H, W)
    img = img * cam.gain * cam.brightness * rng.uniform(0.9, 1.1)
    mean = img.mean()
    img = (img - mean) * cam.contrast + mean + rng.normal(0, cam.noise, img.shape)
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    radius = cam.blur * H / 128 * rng.uniform(0.8, 1.2)
    return pil.filter(ImageFilter.GaussianBlur(radius)) if radius > 0.25 else pil


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
    identities = _look_alike_identities(num_ids, root_rng)
    cameras = [_random_camera(np.random.default_rng([seed, 1, c])) for c in range(num_cameras)]
    plan = _plan(num_ids, num_cameras, (lo, hi), root_rng)
    for k, (folder, pid, cam, index) in enumerate(plan):
        rng = np.random.default_rng([seed, 2, k])
        ident = identities[index] if index >= 0 else _random_identity(rng)
        image = _render(ident, cameras[cam], rng, height, width, zoom=2.2 if pid == -1 else 1.0)
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


def load_synthetic(root=None, num_ids: int = 200, num_cameras: int = 6, seed: int = 0, height: int = 128,
                   width: int = 64, images_per_camera: tuple[int, int] = (1, 4)):
    """Load the synthetic dataset at ``root``, generating it first if absent or made with other
    parameters (root None = :func:`default_synthetic_root`)."""
    from .datasets import _load_market_layout

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
    return _load_market_layout(root, "synthetic", num_cameras, "the synthetic dataset", "0001_c1s1_000123_00.jpg")
