"""Image search with a trained model: rank a gallery for each query image; feature files.

    from dmireid.embedding import FeatureExtractor

    from dmireid.inference import search
    result = search(FeatureExtractor("last.pt"), ["q.jpg"], gallery_paths=["g1.jpg", "g2.jpg"], topk=5)
    print(result.format())                # result.skipped: unreadable files left out (skip_unreadable=True)
    result.save("results.csv")            # or .json

Distances are squared Euclidean distances of the unit features (``2 - 2·cos``), as in evaluation.
A ``.npz`` written by :func:`save_features` (``dmireid extract``) can stand in for the gallery.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..errors import DmireidError
from ..embedding.feature_extractor import FeatureExtractor, embed_files
from .gallery_search import exact_topk

log = logging.getLogger(__name__)


def save_features(path: str | Path, paths: Sequence[str], features: torch.Tensor,
                  settings: dict | None = None, skipped: Sequence[str] = ()) -> Path:
    """``paths`` (str array), ``features`` (float32 N×d), ``settings`` (a JSON string, e.g.
    :meth:`FeatureExtractor.settings`) and ``skipped`` (str array: unreadable files left out) to an
    ``.npz`` that loads without pickle."""
    path = Path(path)
    try:
        with open(path, "wb") as handle:  # np.savez would append .npz to other names
            np.savez(handle, paths=np.array([str(p) for p in paths], dtype=str),
                     features=np.asarray(features, dtype=np.float32), settings=np.array(json.dumps(settings or {})),
                     skipped=np.array([str(p) for p in skipped], dtype=str))
    except OSError as exc:
        raise DmireidError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def load_features(path: str | Path) -> tuple[list[str], torch.Tensor, dict]:
    """Inverse of :func:`save_features`: ``(paths, features, settings)``."""
    try:
        with np.load(path, allow_pickle=False) as data:
            paths, features = [str(p) for p in data["paths"]], torch.from_numpy(data["features"].astype(np.float32))
            settings = json.loads(str(data["settings"])) if "settings" in data.files else {}
    except (OSError, ValueError, KeyError) as exc:
        raise DmireidError(f"{path} is not a dmireid feature file (paths + features): "
                           f"{' '.join(str(exc).split())[:120]}") from None
    if features.ndim != 2 or len(paths) != len(features):
        raise DmireidError(f"{path}: {len(paths)} paths but features of shape {tuple(features.shape)}")
    return paths, features, settings


def check_compatible(settings: dict, extractor: FeatureExtractor, source: str) -> None:
    """Raise when features saved with ``settings`` cannot be compared with ``extractor``'s."""
    mine = extractor.settings()
    if settings.get("feature_dim", mine["feature_dim"]) != mine["feature_dim"]:
        raise DmireidError(f"{source} holds d={settings['feature_dim']} features, the model gives d={mine['feature_dim']}")
    if settings.get("encoder", mine["encoder"]) != mine["encoder"]:
        raise DmireidError(f"{source} was extracted with the {settings['encoder']} encoder, this search uses the "
                           f"{mine['encoder']} one (pass --encoder {settings['encoder']})")
    if settings.get("flip", mine["flip"]) != mine["flip"]:
        raise DmireidError(f"{source} was extracted " + ("with --flip (pass --flip too)" if settings["flip"]
                                                         else "without --flip (leave --flip out)"))
    if settings.get("checkpoint") not in (None, mine["checkpoint"]):
        log.warning("%s was extracted with %s, not %s: features are only comparable when it is the same model",
                    source, settings["checkpoint"], mine["checkpoint"])


@dataclass
class SearchResult:
    query_paths: list[str]
    gallery_paths: list[str]
    indices: np.ndarray  # Q×k gallery rows, nearest first
    distances: np.ndarray  # Q×k squared Euclidean distances
    skipped: list[str] = field(default_factory=list)  # unreadable query/gallery files left out

    def rows(self):
        """(query, rank 1..k, gallery path, distance) tuples."""
        for q, path in enumerate(self.query_paths):
            for r, (j, d) in enumerate(zip(self.indices[q], self.distances[q]), 1):
                if j >= 0:
                    yield path, r, self.gallery_paths[j], float(d)

    def format(self) -> str:
        lines, last = [], None
        for query, rank, path, dist in self.rows():
            if query != last:
                lines.append(f"query {query}")
                last = query
            lines.append(f"  {rank:>3}  {dist:.4f}  {path}")
        return "\n".join(lines)

    def save(self, out: str | Path) -> Path:
        """``.csv`` (query, rank, gallery, distance) or ``.json`` ([{query, results: [...]}])."""
        out = Path(out)
        suffix = out.suffix.lower()
        if suffix not in (".csv", ".json"):
            raise DmireidError(f"--out {out}: the file name must end in .csv or .json")
        try:
            if suffix == ".csv":
                with open(out, "w", newline="", encoding="utf-8") as handle:
                    writer = csv.writer(handle, lineterminator="\n")
                    writer.writerow(["query", "rank", "gallery", "distance"])
                    writer.writerows((q, r, g, f"{d:.6f}") for q, r, g, d in self.rows())
            else:
                grouped = {q: [] for q in self.query_paths}
                for q, r, g, d in self.rows():
                    grouped[q].append({"rank": r, "path": g, "distance": round(d, 6)})
                out.write_text(json.dumps([{"query": q, "results": v} for q, v in grouped.items()], indent=1))
        except OSError as exc:
            raise DmireidError(f"cannot write {out}: {exc.strerror or exc}") from None
        return out


def search(extractor: FeatureExtractor, query_paths: Sequence[str], gallery_paths: Sequence[str] | None = None,
           gallery_features: torch.Tensor | None = None, topk: int = 10, progress: bool = False,
           skip_unreadable: bool = False) -> SearchResult:
    """Rank the gallery for each query. Give ``gallery_paths`` (embedded here) and/or precomputed
    ``gallery_features`` (rows matching ``gallery_paths``). ``skip_unreadable``: leave out query and
    gallery files that cannot be decoded (listed in ``result.skipped``), else the first one stops
    with a one-line error naming it."""
    if gallery_paths is None:
        raise DmireidError("search needs gallery images")
    if topk < 1:
        raise DmireidError(f"topk must be >= 1, got {topk}")
    skipped: list[str] = []
    if gallery_features is None:
        gallery = embed_files(extractor, gallery_paths, skip_unreadable, progress)
        gallery_paths, gallery_features, skipped = gallery.paths, gallery.features, gallery.skipped
        if skipped and not gallery_paths:
            raise DmireidError(f"none of the {len(skipped)} gallery images can be read (the first: {skipped[0]})")
    elif gallery_features.shape[1] != extractor.feature_dim:
        raise DmireidError(f"gallery features have d={gallery_features.shape[1]}, the model gives d={extractor.feature_dim}")
    query = embed_files(extractor, query_paths, skip_unreadable, progress)
    if query.skipped and not query.paths:
        raise DmireidError(f"none of the {len(query.skipped)} query images can be read (the first: {query.skipped[0]})")
    gallery_matrix = np.ascontiguousarray(torch.as_tensor(gallery_features, dtype=torch.float32).numpy())
    k = min(topk, len(gallery_matrix))  # blocked BLAS search; equal distances by gallery index
    sims, indices = exact_topk(gallery_matrix, np.arange(len(gallery_matrix)), query.features.numpy(), k)
    distances = np.maximum(2 - 2 * sims, 0).astype(np.float32)  # squared euclidean of unit rows, as before
    return SearchResult(query.paths, list(map(str, gallery_paths)), indices, distances, query.skipped + skipped)
