"""Tracklet-aware pseudo-labels (``pseudo_labels.tracklets=true``, issue 23 point 3).

A tracklet (one track of one camera) is a nearly free "these crops are one person". The labeler
wraps the run's labeler (``jaccard_dbscan``, ``infomap``, ...) and turns its clusters into
tracklet-consistent pseudo-identities, in four steps:

1. **Clusters.** ``level="image"``: the wrapped labeler on the images, then every tracklet takes the
   majority cluster of its clustered images (ties: the smaller cluster id) — a tracklet is never
   split between clusters. ``level="tracklet"``: the wrapped labeler on one mean feature per
   tracklet (unit rows; the wrapped labeler's ``min_samples`` then counts *tracklets*: an identity
   seen by two cameras is two tracklets, so it needs ``min_samples <= 2``:
   ``pseudo_labels.tracklet_min_samples``, default 2). ``level="none"``: no clustering, every
   tracklet starts alone (association alone makes the cross-camera groups).
2. **Co-occurrence** (where frames are known): two tracklets of one camera whose frame spans
   overlap are two people; a cluster keeps the larger of such tracklets (ties: the smaller id) and
   the others leave it.
3. **Cross-camera association** (``association="mutual"``): a tracklet in no cluster spanning two
   cameras (an *unassociated* one) is linked to the tracklet of another camera that is its mutual
   nearest neighbour on camera-centred tracklet means (each camera's mean removed, rows renormalised:
   the camera-balanced distance), with cosine similarity >= ``link_similarity``; linked
   unassociated tracklets join their partner's cluster, or form a new one with it. Links are taken
   in decreasing similarity and never break the co-occurrence rule.
4. **Noise** — a tracklet still in no cluster: ``noise="own"`` makes it a pseudo-identity of its own
   (it trains, with its own images as positives: the rule of this labeler); ``noise="drop"`` leaves
   it an outlier (-1). ``association="none"`` + ``noise="own"`` is the *naive* rule of issue 23.

Images without a tracklet (id -1) are tracklets of one image. Camera ids, identities and the wrapped
labeler's collective flag pass through.

    labeler = TrackletLabeler(JaccardDBSCAN(eps=0.5))
    labels = labeler(features, cameras=cams, tracklets=tracks, frames=frames)   # N int64, -1 outlier
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import DmireidError

LEVELS, NOISE_RULES, ASSOCIATIONS = ("image", "tracklet", "none"), ("own", "drop"), ("none", "mutual")


def compact_tracklets(tracklets: np.ndarray) -> np.ndarray:
    """N int64 ids (-1: none) -> 0..T-1, every -1 image a tracklet of its own (after the others)."""
    tracklets = np.asarray(tracklets, dtype=np.int64)
    ids = np.empty_like(tracklets)
    known = tracklets >= 0
    ids[known] = np.unique(tracklets[known], return_inverse=True)[1]
    first = int(ids[known].max()) + 1 if known.any() else 0
    ids[~known] = first + np.arange(int((~known).sum()))
    return ids


def majority(groups: np.ndarray, values: np.ndarray, num_groups: int) -> np.ndarray:
    """Per group the most frequent value >= 0 among its members (ties: the smaller), -1 where none."""
    keep = values >= 0
    pairs, counts = np.unique(np.stack([groups[keep], values[keep]]), axis=1, return_counts=True)
    order = np.lexsort((pairs[1], -counts, pairs[0]))  # per group: highest count, then smallest value
    pairs = pairs[:, order]
    first = np.r_[True, pairs[0, 1:] != pairs[0, :-1]] if pairs.size else np.zeros(0, dtype=bool)
    out = np.full(num_groups, -1, dtype=np.int64)
    out[pairs[0, first]] = pairs[1, first]
    return out


def tracklet_means(features: torch.Tensor, ids: np.ndarray, num: int) -> torch.Tensor:
    """T×d unit rows: the mean feature of each tracklet's images (N×d, ids N in 0..T-1)."""
    index = torch.from_numpy(ids).to(features.device)
    sums = torch.zeros(num, features.shape[1], dtype=torch.float32, device=features.device)
    sums.index_add_(0, index, features.float())
    return torch.nn.functional.normalize(sums, dim=1)


def frame_spans(ids: np.ndarray, frames: np.ndarray | None, num: int) -> np.ndarray:
    """T×2 int64 (first, last) known frame of each tracklet; (-1, -1) where none is known."""
    spans = np.full((num, 2), -1, dtype=np.int64)
    if frames is None:
        return spans
    frames = np.asarray(frames, dtype=np.int64)
    known = frames >= 0
    if known.any():
        spans[:, 0] = np.iinfo(np.int64).max
        np.minimum.at(spans[:, 0], ids[known], frames[known])
        np.maximum.at(spans[:, 1], ids[known], frames[known])
        spans[spans[:, 0] == np.iinfo(np.int64).max, 0] = -1
    return spans


def co_occur(a: int, b: int, cameras: np.ndarray, spans: np.ndarray) -> bool:
    """Whether tracklets a and b are of one camera with overlapping known frame spans."""
    if a == b or cameras[a] != cameras[b] or spans[a, 0] < 0 or spans[b, 0] < 0:
        return False
    return bool(spans[a, 0] <= spans[b, 1] and spans[b, 0] <= spans[a, 1])


def split_co_occurring(labels: np.ndarray, sizes: np.ndarray, cameras: np.ndarray, spans: np.ndarray) -> np.ndarray:
    """T labels with every tracklet that co-occurs with a larger one of its cluster set to -1."""
    labels = labels.copy()
    if (spans[:, 0] < 0).all():
        return labels
    for cluster in np.unique(labels[labels >= 0]):
        members = np.flatnonzero(labels == cluster)
        kept: list[int] = []
        for t in members[np.lexsort((members, -sizes[members]))]:
            if any(co_occur(t, k, cameras, spans) for k in kept):
                labels[t] = -1
            else:
                kept.append(int(t))
    return labels


def camera_centred(means: torch.Tensor, cameras: np.ndarray) -> torch.Tensor:
    """T×d unit rows with each camera's mean row removed, renormalised (camera-balanced distances)."""
    out = means.clone()
    for camera in np.unique(cameras):
        rows = torch.from_numpy(np.flatnonzero(cameras == camera)).to(means.device)
        out[rows] -= means[rows].mean(0, keepdim=True)
    return torch.nn.functional.normalize(out, dim=1)


def mutual_links(means: torch.Tensor, cameras: np.ndarray, min_similarity: float) -> list[tuple[float, int, int]]:
    """(similarity, a, b) of every cross-camera mutual nearest-neighbour pair, highest first.

    For each pair of cameras, a's nearest tracklet in b's camera is b and b's nearest in a's camera
    is a (ties: the smaller index); one T_a×T_b block per camera pair.
    """
    links = []
    cams = np.unique(cameras)
    for i, ca in enumerate(cams):
        rows_a = np.flatnonzero(cameras == ca)
        for cb in cams[i + 1:]:
            rows_b = np.flatnonzero(cameras == cb)
            sim = means[torch.from_numpy(rows_a)] @ means[torch.from_numpy(rows_b)].T  # T_a×T_b
            best_b, best_a = sim.argmax(1).cpu().numpy(), sim.argmax(0).cpu().numpy()
            mutual = np.flatnonzero(best_a[best_b] == np.arange(len(rows_a)))
            values = sim[torch.from_numpy(mutual), torch.from_numpy(best_b[mutual])].cpu().numpy()
            links += [(float(s), int(rows_a[m]), int(rows_b[best_b[m]])) for m, s in zip(mutual, values)
                      if s >= min_similarity]
    return sorted(links, key=lambda link: (-link[0], link[1], link[2]))


def associate(labels: np.ndarray, links: list[tuple[float, int, int]], cameras: np.ndarray,
              spans: np.ndarray) -> np.ndarray:
    """T labels after joining each unassociated tracklet (in no cluster spanning two cameras) to the
    cluster of its linked partner, or a new cluster with it; links in the given order, skipping
    a join that would break the co-occurrence rule."""
    labels = labels.copy()
    spanning = {int(c) for c in np.unique(labels[labels >= 0]) if len(np.unique(cameras[labels == c])) > 1}
    associated = np.isin(labels, list(spanning)) & (labels >= 0)
    next_label = int(labels.max()) + 1 if (labels >= 0).any() else 0
    for _, a, b in links:
        t, partner = (a, b) if not associated[a] else (b, a)
        if associated[t]:
            continue
        if labels[partner] >= 0 and any(co_occur(t, int(m), cameras, spans)
                                        for m in np.flatnonzero(labels == labels[partner])):
            continue
        if labels[partner] < 0:  # a new cluster of the two (one per camera: they cannot co-occur)
            labels[partner], next_label = next_label, next_label + 1
        labels[t] = labels[partner]
        associated[labels == labels[t]] = True
    return labels


def cross_camera_pairs(labels: np.ndarray, cameras: np.ndarray, identities: np.ndarray) -> tuple[int, int]:
    """(pairs of tracklets of one cluster in two cameras, those of one identity): the links' quality."""
    keep = labels >= 0

    def pairs(*keys: np.ndarray) -> int:
        counts = np.unique(np.stack([k[keep] for k in keys]), axis=1, return_counts=True)[1] if keep.any() else []
        return int(sum(int(c) * (int(c) - 1) // 2 for c in counts))

    cross = pairs(labels) - pairs(labels, cameras)
    correct = pairs(labels, identities) - pairs(labels, identities, cameras)
    return cross, correct


def renumber(labels: np.ndarray) -> np.ndarray:
    """Labels -1 kept, the others 0..C-1 in order of their smallest value."""
    out = np.full(len(labels), -1, dtype=np.int64)
    known = labels >= 0
    out[known] = np.unique(labels[known], return_inverse=True)[1]
    return out


class TrackletLabeler:
    """``labeler(features N×d, cameras=, identities=, tracklets=, frames=) -> N int64`` (module doc)."""

    def __init__(self, base: Any, level: str = "image", noise: str = "own", association: str = "mutual",
                 link_similarity: float = 0.0):
        for key, value, allowed in (("tracklet_level", level, LEVELS), ("tracklet_noise", noise, NOISE_RULES),
                                    ("tracklet_association", association, ASSOCIATIONS)):
            if value not in allowed:
                raise DmireidError(f"pseudo_labels.{key}={value!r}: expected one of {', '.join(allowed)}")
        self.base, self.level, self.noise, self.association = base, level, noise, association
        self.link_similarity = float(link_similarity)
        self.collective = getattr(base, "collective", False)
        self.stats: dict[str, int] = {}  # what the last call did (tracklets, co-occurrence splits, links)

    def __repr__(self) -> str:
        return (f"TrackletLabeler({self.base!r}, level={self.level}, noise={self.noise}, "
                f"association={self.association}, link_similarity={self.link_similarity})")

    def __call__(self, features: torch.Tensor, cameras: np.ndarray | None = None,
                 identities: np.ndarray | None = None, tracklets: np.ndarray | None = None,
                 frames: np.ndarray | None = None) -> np.ndarray:
        from .labeler import call_labeler  # the labeler module imports this one

        if tracklets is None:
            raise DmireidError("pseudo_labels.tracklets=true needs a dataset with tracklets (data.name=tracklets, "
                               "or data.options.tracklets=identity_camera on a Market-layout set)")
        n = len(features)
        cameras = np.zeros(n, dtype=np.int64) if cameras is None else np.asarray(cameras, dtype=np.int64)
        ids = compact_tracklets(tracklets)
        num = int(ids.max()) + 1
        t_cameras = majority(ids, cameras, num)
        sizes = np.bincount(ids, minlength=num)
        spans = frame_spans(ids, frames, num)
        means = tracklet_means(torch.as_tensor(features), ids, num)
        if self.level == "none":  # no clustering: every tracklet starts alone
            t_labels = np.full(num, -1, dtype=np.int64)
        elif self.level == "image":
            image_labels = call_labeler(self.base, features, cameras=cameras, identities=identities)
            t_labels = majority(ids, np.asarray(image_labels, dtype=np.int64), num)
        else:
            t_ids = None if identities is None else majority(ids, np.asarray(identities, dtype=np.int64), num)
            t_labels = np.asarray(call_labeler(self.base, means, cameras=t_cameras, identities=t_ids),
                                  dtype=np.int64)
        clustered = int((t_labels >= 0).sum())
        t_labels = split_co_occurring(t_labels, sizes, t_cameras, spans)
        self.stats = {"tracklets": num, "tracklets_clustered": clustered,
                      "tracklets_split_co_occurring": clustered - int((t_labels >= 0).sum())}
        if self.association == "mutual":
            links = mutual_links(camera_centred(means, t_cameras), t_cameras, self.link_similarity)
            before = t_labels.copy()
            t_labels = associate(t_labels, links, t_cameras, spans)
            self.stats["tracklets_associated"] = int((t_labels != before).sum())
        if identities is not None and (np.asarray(identities) >= 0).all():  # diagnostics only
            t_ids = majority(ids, np.asarray(identities, dtype=np.int64), num)
            cross, correct = cross_camera_pairs(t_labels, t_cameras, t_ids)
            self.stats.update(tracklet_cross_camera_pairs=cross, tracklet_cross_camera_pairs_correct=correct)
        if self.noise == "own":
            lonely = np.flatnonzero(t_labels < 0)
            t_labels[lonely] = (int(t_labels.max()) + 1 if (t_labels >= 0).any() else 0) + np.arange(len(lonely))
        return renumber(t_labels)[ids]
