"""Drawing of the synthetic re-ID images: identities, cameras, and one H×W person image (spec §5).

Identities are combinations of clothing / body / accessory attributes, drawn in *look-alike groups*
that share most attributes. Cameras change the viewpoint (front / back / side: a backpack shows
from the back only, a logo from the front only), scale and position, colour cast, brightness,
contrast, blur, noise and background, and add occluders. Everything is drawn with numpy masks on
an H×W grid from a ``numpy.random.Generator``: the same draws give the same pixels.

    ident = random_identity(rng); cam = random_camera(rng)
    image = render(ident, cam, rng, 128, 64)            # a PIL image
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageFilter

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
class Identity:
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
class Camera:
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


def random_identity(rng) -> Identity:
    return Identity(
        shirt=_colour(rng, CLOTHES), shirt2=_colour(rng, CLOTHES), pattern=int(rng.integers(4)),
        trousers=_colour(rng, CLOTHES[[1, 3, 6, 10, 13, 14, 2, 12]]), shorts=bool(rng.random() < 0.2),
        shoes=_colour(rng, CLOTHES[[2, 3, 10, 6, 0]]), skin=_colour(rng, SKIN, 8),
        hair=_colour(rng, HAIR, 8), long_hair=bool(rng.random() < 0.3),
        height=float(rng.uniform(0.86, 1.0)), width=float(rng.uniform(0.8, 1.2)),
        head=float(rng.uniform(0.85, 1.15)),
        bag=_maybe(rng, 0.25), backpack=_maybe(rng, 0.3), hat=_maybe(rng, 0.15))


def _mutate(ident: Identity, what: str, rng) -> Identity:
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


def _jitter(ident: Identity, rng, sigma=6.0) -> Identity:
    """Small colour differences between group members."""
    def j(c):
        return None if c is None else np.clip(c + rng.normal(0, sigma, 3), 0, 255).astype(np.float32)
    return replace(ident, shirt=j(ident.shirt), trousers=j(ident.trousers), shoes=j(ident.shoes),
                   hair=j(ident.hair), skin=j(ident.skin))


def look_alike_identities(count: int, rng) -> list[Identity]:
    """``count`` identities in groups of GROUP_SIZE sharing a prototype (1-2 attributes differ)."""
    out = []
    while len(out) < count:
        proto = random_identity(rng)
        for member in range(GROUP_SIZE):
            ident = proto
            if member:
                for what in rng.choice(MUTATIONS, size=int(rng.integers(1, 3)), replace=False):
                    ident = _mutate(ident, str(what), rng)
            out.append(_jitter(ident, rng))
    return out[:count]


def random_camera(rng) -> Camera:
    views = np.full(3, (1 - VIEW_BIAS) / 2)
    views[rng.integers(3)] = VIEW_BIAS
    bg_a = BG_GREY * rng.uniform(*BG_LEVEL) + (1 - BG_GREY) * _colour(rng, CLOTHES, 30)  # muted scene colours
    bg_b = np.clip(bg_a + rng.normal(0, BG_CONTRAST, 3), 0, 255).astype(np.float32)
    return Camera(
        gain=np.exp(rng.normal(0, CAST, 3)).astype(np.float32), brightness=float(np.exp(rng.normal(0, 0.2))),
        contrast=float(rng.uniform(*CONTRAST)), blur=float(rng.uniform(0.0, 1.3)),
        noise=float(rng.uniform(2, 8)), bg_kind=int(rng.integers(4)),
        bg_a=bg_a.astype(np.float32), bg_b=bg_b,
        bg_period=float(rng.uniform(0.08, 0.3)), horizon=float(rng.uniform(0.55, 0.85)),
        views=views, scale=float(rng.uniform(0.82, 0.95)), occlusion=float(rng.uniform(*OCCLUSION)))


# --------------------------------------------------------------------------------------------
# drawing (all coordinates in pixels, H×W float grids)


def _background(cam: Camera, rng, Y, X, H) -> np.ndarray:
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


def _draw_person(img, ident: Identity, view: int, facing: int, geom, Y, X) -> None:
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


def _draw_head(paint, ident: Identity, view: int, v, u) -> None:
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


def render(ident: Identity, cam: Camera, rng, H: int, W: int, zoom: float = 1.0) -> Image.Image:
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
