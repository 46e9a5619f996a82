"""An open-set distance threshold from cluster labels: "below this distance, the same person".

    est = estimate_threshold(features, pseudo_labels, false_match_rate=0.01)
    est["threshold"]          # cosine distance 1 - <a, b> of unit features, in [0, 2]
    rates = match_rates(features, true_ids, est["threshold"])   # with labels: what it really gives

Method (``between-cluster quantile``): sample pairs of images from *different* clusters (uniform
over such pairs, with replacement; no N×N matrix) and take the distance below which a fraction
``false_match_rate`` of them fall. With pseudo-labels this needs no identity label: the clusters
of training stand in for identities. Pairs from the *same* cluster (uniform over within-cluster
pairs) give the estimated true-match rate at that threshold. Outliers (label -1) are left out.

Given the true identities instead of pseudo-labels, the same function returns the labelled
optimum: the threshold that meets the target false-match rate on the real different-person pairs.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from ..errors import DmireidError

log = logging.getLogger(__name__)

METHOD = "between-cluster quantile"
#: pairs scored per block in :func:`pair_distances` (block × d floats in memory)
PAIR_BLOCK = 16384


def _as_numpy(features) -> np.ndarray:
    x = features.detach().cpu().numpy() if isinstance(features, torch.Tensor) else np.asarray(features)
    if x.ndim != 2 or not len(x):
        raise DmireidError(f"features must be a non-empty N×d array, got shape {x.shape}")
    return np.ascontiguousarray(x, dtype=np.float32)


def _labels(labels, n: int, name: str) -> np.ndarray:
    """A copy of ``labels`` as int64 0..C-1 (order kept), negatives as -1; length checked against ``n``."""
    out = np.array(labels, dtype=np.int64).reshape(-1)
    if len(out) != n:
        raise DmireidError(f"{len(out)} {name} for {n} feature rows")
    keep = out >= 0
    out[~keep] = -1
    out[keep] = np.unique(out[keep], return_inverse=True)[1]
    return out


def pair_distances(features: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Cosine distances ``1 - <f_i, f_j>`` (unit rows) of the pairs ``(i[k], j[k])`` -> float64 K."""
    out = np.empty(len(i), dtype=np.float64)
    for start in range(0, len(i), PAIR_BLOCK):
        a, b = features[i[start:start + PAIR_BLOCK]], features[j[start:start + PAIR_BLOCK]]
        out[start:start + PAIR_BLOCK] = 1.0 - np.einsum("kd,kd->k", a, b, dtype=np.float64)
    return out


def sample_within_pairs(labels: np.ndarray, num_pairs: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``num_pairs`` pairs of distinct images with the same label ≥ 0, uniform over such pairs
    (with replacement). Returns index arrays ``(i, j)``; empty when no label has two images."""
    members = np.flatnonzero(labels >= 0)
    if not len(members):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    members = members[np.argsort(labels[members], kind="stable")]
    _, start, size = np.unique(labels[members], return_index=True, return_counts=True)
    weight = size.astype(np.float64) * (size - 1)
    if weight.sum() == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    cluster = rng.choice(len(size), size=num_pairs, p=weight / weight.sum())
    a = rng.integers(0, size[cluster])
    b = rng.integers(0, size[cluster] - 1)
    b = b + (b >= a)  # a second, different member
    return members[start[cluster] + a], members[start[cluster] + b]


def sample_between_pairs(labels: np.ndarray, num_pairs: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``num_pairs`` pairs of images with different labels ≥ 0, uniform over such pairs (with
    replacement, by rejection of same-label draws). Empty when fewer than two labels exist."""
    members = np.flatnonzero(labels >= 0)
    sizes = np.bincount(labels[members]) if len(members) else np.zeros(0, np.int64)
    share_same = float(((sizes / max(len(members), 1)) ** 2).sum())
    if np.count_nonzero(sizes) < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    found_i, found_j, count = [], [], 0
    while count < num_pairs:
        draw = int((num_pairs - count) / (1 - share_same) * 1.1) + 16
        i, j = members[rng.integers(0, len(members), draw)], members[rng.integers(0, len(members), draw)]
        keep = labels[i] != labels[j]
        found_i.append(i[keep])
        found_j.append(j[keep])
        count += int(keep.sum())
    return np.concatenate(found_i)[:num_pairs], np.concatenate(found_j)[:num_pairs]


def estimate_threshold(features, pseudo_labels, false_match_rate: float = 0.01, max_pairs: int = 200_000,
                       seed: int = 0) -> dict:
    """The distance below which only ``false_match_rate`` of between-cluster pairs fall.

    ``features``: N×d unit rows (tensor or array); ``pseudo_labels``: N ints, -1 = outlier (left
    out). ``max_pairs``: between-cluster pairs sampled (and as many within-cluster pairs). Returns a
    plain dict (stored as is in checkpoints): ``threshold`` (cosine distance), ``false_match_rate``
    (the target), ``estimated_true_match_rate`` (within-cluster pairs at or below it),
    ``within_pairs``, ``between_pairs`` (pairs sampled), ``within_median``, ``between_median``,
    ``num_images``, ``num_clusters``, ``num_outliers``, ``method``.
    """
    if not 0 < false_match_rate < 1:
        raise DmireidError(f"false_match_rate must be in (0, 1), got {false_match_rate}")
    if max_pairs < 1:
        raise DmireidError(f"max_pairs must be >= 1, got {max_pairs}")
    x = _as_numpy(features)
    labels = _labels(pseudo_labels, len(x), "labels")
    num_clusters = int(labels.max()) + 1
    if num_clusters < 2:
        raise DmireidError(f"an open-set threshold needs at least 2 clusters, the labels have {num_clusters}")
    rng = np.random.default_rng(seed)
    between = pair_distances(x, *sample_between_pairs(labels, max_pairs, rng))
    within = pair_distances(x, *sample_within_pairs(labels, max_pairs, rng))
    threshold = float(np.clip(np.quantile(between, false_match_rate), 0.0, 2.0))
    result = {
        "threshold": threshold,
        "false_match_rate": float(false_match_rate),
        "estimated_true_match_rate": float((within <= threshold).mean()) if len(within) else float("nan"),
        "within_pairs": int(len(within)),
        "between_pairs": int(len(between)),
        "within_median": float(np.median(within)) if len(within) else float("nan"),
        "between_median": float(np.median(between)),
        "num_images": int(len(x)),
        "num_clusters": int(num_clusters),
        "num_outliers": int((labels < 0).sum()),
        "method": METHOD,
    }
    log.info("open-set threshold %.4f (cosine distance) at a %.2f%% false-match rate: %d clusters, %d outliers, "
             "estimated true-match rate %.1f%%", threshold, 100 * false_match_rate, num_clusters,
             result["num_outliers"], 100 * result["estimated_true_match_rate"])
    return result


def match_rates(features, identities, thresholds, max_pairs: int = 1_000_000, seed: int = 1) -> list[dict]:
    """With true ``identities`` (N ints, < 0 left out): for each threshold the false-match rate
    (different-identity pairs at a distance ≤ threshold) and the true-match rate (same-identity
    pairs ≤ threshold), on ``max_pairs`` sampled pairs of each kind (uniform over pairs)."""
    x = _as_numpy(features)
    ids = _labels(identities, len(x), "identities")
    rng = np.random.default_rng(seed)
    between = pair_distances(x, *sample_between_pairs(ids, max_pairs, rng))
    within = pair_distances(x, *sample_within_pairs(ids, max_pairs, rng))
    if not len(between) or not len(within):
        raise DmireidError("match rates need at least two identities and one identity with two images")
    return [{"threshold": float(t), "false_match_rate": float((between <= t).mean()),
             "true_match_rate": float((within <= t).mean()), "different_pairs": int(len(between)),
             "same_pairs": int(len(within))} for t in np.atleast_1d(thresholds)]
