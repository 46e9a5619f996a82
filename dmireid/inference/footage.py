"""Training crops from footage and a tracker's tracks (``dmireid crops``).

    report = cut_crops("MOT17-02/img1", "tracks.txt", camera=1, out="crops", every=2, max_per_track=20)
    print(report.summary())

``frames``: a MOTChallenge ``img1/`` folder (``000001.jpg`` ...; the sequence folder holding it
works too) or a video file (decoded with OpenCV or PyAV, whichever is installed: the ``video``
extra). ``tracks``: a MOTChallenge text file, one box per line
``frame, id, left, top, width, height[, conf, ...]`` (1-based frames), as trackers write it.

The crops are written flat in ``out`` as ``c{camera}_t{track:06d}_f{frame:06d}.jpg`` (the camera as
given, 1-based like Market's ``c1``), with ``out/manifest.csv`` (``path, camera, track, frame, left,
top, width, height, conf``: the box as cut, after padding and clipping). Runs for several cameras
share one folder; a second run for a camera already there refuses unless ``replace=True``, which
first removes that camera's crops and rows, or ``append=True`` (more footage of the camera, e.g. the
next file: its track ids must differ, a crop name already there is refused before anything is written). The ``tracklets`` dataset reads the folder back.
"""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..data.tracklets import CROP_NAME, crop_name
from ..errors import DmireidError

log = logging.getLogger(__name__)

MANIFEST = "manifest.csv"
MANIFEST_FIELDS = ("path", "camera", "track", "frame", "left", "top", "width", "height", "conf")
FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


def read_mot_tracks(path: str | Path) -> np.ndarray:
    """A MOTChallenge file -> K×7 float64 rows ``frame, id, left, top, width, height, conf``
    (conf 1 where the line has none). A malformed line is one error naming file and line."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise DmireidError(f"cannot read the tracks file {path} ({exc.strerror or exc})") from None
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.replace(" ", ",").split(",") if p.strip()]
        try:
            values = [float(p) for p in parts[:7]]
        except ValueError:
            values = []
        if len(values) < 6 or not np.isfinite(values).all() or values[0] < 1 or values[0] != int(values[0]) \
                or values[1] != int(values[1]):
            raise DmireidError(f"{path}:{lineno}: expected 'frame, id, left, top, width, height[, conf, ...]' "
                               f"(frame >= 1 and id integers), got {line.strip()[:80]!r}")
        rows.append(values[:6] + [values[6] if len(values) > 6 else 1.0])
    if not rows:
        raise DmireidError(f"{path}: no boxes (expected MOTChallenge lines 'frame, id, left, top, width, height, ...')")
    return np.array(rows, np.float64)


class FrameSource:
    """Frames by 1-based number from an image folder or a video file (RGB H×W×3 uint8)."""

    def __init__(self, frames: str | Path):
        path = Path(frames)
        if path.is_dir() and (path / "img1").is_dir():
            path = path / "img1"
        self.path = path
        if path.is_dir():
            self.files = {}
            for entry in os.scandir(path):
                stem, ext = os.path.splitext(entry.name)
                if ext.lower() in FRAME_EXTENSIONS and stem.isdigit():
                    self.files[int(stem)] = Path(entry.path)
            if not self.files:
                raise DmireidError(f"{path}: no numbered frames (expected MOTChallenge img1/000001.jpg ...)")
        elif path.is_file():
            self.files = None
        else:
            raise DmireidError(f"{path}: no such frame folder or video file")

    def iterate(self, wanted: set[int]):
        """Yield ``(frame number, RGB array or None when absent/unreadable)`` for the ``wanted`` frames, in order."""
        if self.files is not None:
            for number in sorted(wanted):
                file = self.files.get(number)
                if file is None:
                    yield number, None
                    continue
                try:
                    with Image.open(file) as image:
                        yield number, np.asarray(image.convert("RGB"))
                except OSError:
                    log.warning("%s: cannot decode the frame, its boxes are counted as missing", file)
                    yield number, None
        else:
            yield from _video_frames(self.path, wanted)


def _video_frames(path: Path, wanted: set[int]):
    last, seen = max(wanted), set()
    for number, frame in _decode_video(path):
        if number in wanted:
            seen.add(number)
            yield number, frame
        if number >= last:
            break
    for number in sorted(wanted - seen):
        yield number, None


def _decode_video(path: Path):
    """``(1-based number, RGB frame)`` with OpenCV, else PyAV."""
    try:
        import cv2
    except ImportError:
        cv2 = None
    if cv2 is not None:
        capture = cv2.VideoCapture(str(path))
        if not capture.isOpened():
            raise DmireidError(f"{path}: OpenCV cannot open this video")
        number = 0
        try:
            while True:
                ok, frame = capture.read()
                if not ok:
                    return
                number += 1
                yield number, frame[..., ::-1]
        finally:
            capture.release()
    try:
        import av
    except ImportError:
        raise DmireidError(f"{path}: reading a video needs a decoder: pip install 'dmireid[video]' (PyAV) "
                           "or opencv-python") from None
    try:
        with av.open(str(path)) as container:
            for number, frame in enumerate(container.decode(video=0), 1):
                yield number, frame.to_ndarray(format="rgb24")
    except av.error.FFmpegError as exc:
        raise DmireidError(f"{path}: cannot decode the video ({exc})") from None


@dataclass
class CropReport:
    """What one ``crops`` run did."""

    out: Path
    camera: int
    written: int = 0
    tracks: int = 0
    boxes: int = 0  # lines in the tracks file
    skipped_every: int = 0  # boxes on frames that ``every`` leaves out
    too_small: int = 0  # clipped box lower than ``min_height``
    outside: int = 0  # box entirely outside the frame
    over_limit: int = 0  # boxes beyond ``max_per_track``
    missing_frames: list[int] = field(default_factory=list)  # frames with boxes but no (readable) image
    missing_boxes: int = 0  # boxes on those frames

    def summary(self) -> str:
        parts = [f"wrote {self.written} crops of {self.tracks} tracks (camera {self.camera}) to {self.out}",
                 f"{self.boxes} boxes in the tracks file"]
        for count, what in ((self.skipped_every, "on frames left out by --every"),
                            (self.too_small, "lower than --min-height"), (self.outside, "outside the frame"),
                            (self.over_limit, "over --max-per-track")):
            if count:
                parts.append(f"{count} {what}")
        if self.missing_frames:
            parts.append(f"{self.missing_boxes} boxes on {len(self.missing_frames)} frames without an image "
                         f"(first: frame {self.missing_frames[0]})")
        return "; ".join(parts)


def clip_boxes(ltwh: np.ndarray, height: int, width: int, pad: float = 0.0) -> np.ndarray:
    """N×4 ``left, top, width, height`` -> N×4 integer ``x0, y0, x1, y1`` padded by ``pad`` × the box
    size on each side and clipped at the frame (x1 <= x0 or y1 <= y0: nothing left in the frame)."""
    ltwh = np.asarray(ltwh, np.float64).reshape(-1, 4)
    x0 = ltwh[:, 0] - pad * ltwh[:, 2]
    y0 = ltwh[:, 1] - pad * ltwh[:, 3]
    x1 = ltwh[:, 0] + ltwh[:, 2] * (1 + pad)
    y1 = ltwh[:, 1] + ltwh[:, 3] * (1 + pad)
    boxes = np.stack([np.floor(x0), np.floor(y0), np.ceil(x1), np.ceil(y1)], 1)
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
    return boxes.astype(np.int64)


def spread_indices(count: int, limit: int | None) -> np.ndarray:
    """At most ``limit`` of ``range(count)``, evenly spread (first and last kept)."""
    if limit is None or count <= limit:
        return np.arange(count)
    return np.unique(np.round(np.linspace(0, count - 1, limit)).astype(np.int64))


def select_boxes(tracks: np.ndarray, every: int, max_per_track: int | None, report: CropReport) -> np.ndarray:
    """Row indices of ``tracks`` to cut: frames ``(frame - 1) % every == 0``, then at most
    ``max_per_track`` per track spread over the track's kept frames."""
    keep = (tracks[:, 0].astype(np.int64) - 1) % every == 0
    report.skipped_every = int((~keep).sum())
    rows = np.flatnonzero(keep)
    chosen = []
    for track in np.unique(tracks[rows, 1]):
        mine = rows[tracks[rows, 1] == track]
        mine = mine[np.argsort(tracks[mine, 0], kind="stable")]
        picked = mine[spread_indices(len(mine), max_per_track)]
        report.over_limit += len(mine) - len(picked)
        chosen.append(picked)
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)


def read_manifest(out: Path) -> list[dict]:
    path = out / MANIFEST
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != MANIFEST_FIELDS:
            raise DmireidError(f"{path}: not a dmireid crops manifest (expected the columns {', '.join(MANIFEST_FIELDS)})")
        return list(reader)


def _write_manifest(out: Path, rows: list[dict]) -> None:
    tmp = out / f".{MANIFEST}.tmp-{os.getpid()}"
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, MANIFEST_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, out / MANIFEST)


def _prepare_out(out: Path, camera: int, replace: bool, append: bool) -> list[dict]:
    """The manifest rows to keep: the other cameras' (and with ``append`` this camera's); this
    camera's crops removed when ``replace``."""
    if out.exists() and not out.is_dir():
        raise DmireidError(f"--out {out} is a file, not a folder")
    out.mkdir(parents=True, exist_ok=True)
    rows = read_manifest(out)
    mine = [r for r in rows if int(r["camera"]) == camera]
    stray = [e.name for e in os.scandir(out) if (m := CROP_NAME.match(e.name)) and int(m.group(1)) == camera]
    if replace and append:
        raise DmireidError("--replace and --append exclude each other")
    if append:
        return rows
    if (mine or stray) and not replace:
        raise DmireidError(f"{out} already holds {max(len(mine), len(stray))} crops of camera {camera} "
                           "(use --replace to cut them again, --append to add more footage, or another --out)")
    for name in stray:
        (out / name).unlink()
    return [r for r in rows if int(r["camera"]) != camera]


def cut_crops(frames, tracks, camera: int, out, *, every: int = 1, max_per_track: int | None = None,
              min_height: int = 0, pad: float = 0.0, replace: bool = False, append: bool = False,
              quality: int = 92) -> CropReport:
    """Cut the tracks' boxes out of the frames into ``out`` (see the module docstring)."""
    if camera < 1:
        raise DmireidError(f"--camera must be >= 1 (1-based like Market's c1), got {camera}")
    if every < 1:
        raise DmireidError(f"--every must be >= 1, got {every}")
    if max_per_track is not None and max_per_track < 1:
        raise DmireidError(f"--max-per-track must be >= 1, got {max_per_track}")
    if pad < 0:
        raise DmireidError(f"--pad must be >= 0 (a fraction of the box size), got {pad}")
    boxes = read_mot_tracks(tracks)
    source = FrameSource(frames)
    out = Path(out)
    report = CropReport(out, camera, boxes=len(boxes))
    rows = select_boxes(boxes, every, max_per_track, report)
    kept = _prepare_out(out, camera, replace, append)
    if append:
        taken = next((n for row in rows.tolist() if (out / (n := crop_name(camera, int(boxes[row, 1]),
                                                                         int(boxes[row, 0])))).exists()), None)
        if taken is not None:
            raise DmireidError(f"--append: {out / taken} already exists (give this footage's tracks other ids)")
    by_frame: dict[int, list[int]] = {}
    for row in rows.tolist():
        by_frame.setdefault(int(boxes[row, 0]), []).append(row)
    written, tracks_seen = [], set()
    for number, image in source.iterate(set(by_frame)):
        mine = by_frame[number]
        if image is None:
            report.missing_frames.append(number)
            report.missing_boxes += len(mine)
            continue
        clipped = clip_boxes(boxes[mine, 2:6], image.shape[0], image.shape[1], pad)
        for row, (x0, y0, x1, y1) in zip(mine, clipped.tolist()):
            if x1 <= x0 or y1 <= y0:
                report.outside += 1
                continue
            if y1 - y0 < min_height:
                report.too_small += 1
                continue
            track = int(boxes[row, 1])
            name = crop_name(camera, track, number)
            Image.fromarray(np.ascontiguousarray(image[y0:y1, x0:x1])).save(out / name, quality=quality)
            tracks_seen.add(track)
            written.append({"path": name, "camera": camera, "track": track, "frame": number, "left": x0,
                            "top": y0, "width": x1 - x0, "height": y1 - y0, "conf": f"{boxes[row, 6]:g}"})
    _write_manifest(out, sorted(kept + written, key=lambda r: r["path"]))
    report.written, report.tracks = len(written), len(tracks_seen)
    if report.missing_frames:
        log.warning("%s: %d boxes on %d frames without an image (first: frame %d)", source.path,
                    report.missing_boxes, len(report.missing_frames), report.missing_frames[0])
    return report
