"""Group a folder of unlabelled person crops by identity with a trained model (``dmireid cluster``).

    from dmireid.inference import cluster_folder
    result = cluster_folder("runs/demo/last.pt", ["crops/"], "groups/")
    # groups/clusters.csv (path, cluster; -1 = unclustered), groups/cluster_0000.png, ...
    # with skip_unreadable=True: groups/unreadable.txt lists the files that could not be decoded

The same labeler as training (:class:`dmireid.pseudo_labels.JaccardDBSCAN`: k-reciprocal Jaccard
distance, then DBSCAN, spec §1.2-3). Clusters are renumbered by size, largest first.
(Not to be confused with :mod:`dmireid.memory._grouping`, which groups a batch's rows by label.)
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..errors import DmireidError
from ..evaluation.visualize import contact_sheet
from ..pseudo_labels import JaccardDBSCAN
from ..embedding.feature_extractor import FeatureExtractor, embed_files, skipped_note
from ..embedding.inputs import collect_image_paths

log = logging.getLogger(__name__)

UNREADABLE_LIST = "unreadable.txt"


@dataclass
class GroupingResult:
    paths: list[str]
    labels: np.ndarray  # int64, -1 = unclustered, clusters 0..C-1 by decreasing size
    csv: Path
    sheets: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # unreadable files left out (skip_unreadable)
    unreadable: Path | None = None  # the list of them, when there are any

    @property
    def num_clusters(self) -> int:
        return int(self.labels.max()) + 1 if self.labels.size else 0

    def summary(self) -> str:
        sizes = np.bincount(self.labels[self.labels >= 0]) if self.num_clusters else np.zeros(0, int)
        largest = f", largest {sizes.max()} images" if sizes.size else ""
        skipped = f"; {skipped_note(self.skipped)}" if self.skipped else ""
        return (f"{len(self.paths)} images -> {self.num_clusters} clusters{largest}, "
                f"{int((self.labels < 0).sum())} unclustered{skipped}")


def group_features(features: torch.Tensor, eps: float = 0.6, k1: int = 30, k2: int = 6, min_samples: int = 4,
                   knn_backend: str = "auto", progress: bool = True) -> np.ndarray:
    """Labels of unit feature rows (N×d) by training's labeler, :class:`~dmireid.pseudo_labels.JaccardDBSCAN`
    (which caps ``k1`` at N-1 and ``k2`` at ``k1``, so small folders work); clusters numbered by
    size, largest first. Returns N int64 labels, -1 = unclustered."""
    labeler = JaccardDBSCAN(k1=k1, k2=k2, eps=eps, min_samples=min_samples, knn_backend=knn_backend,
                            progress=progress)
    return renumber_by_size(labeler(features))


def renumber_by_size(labels: np.ndarray) -> np.ndarray:
    """Relabel clusters 0..C-1 by decreasing size (ties: by old label); -1 stays -1."""
    labels = np.asarray(labels, dtype=np.int64)
    clustered = labels >= 0
    if not clustered.any():
        return labels.copy()
    old, counts = np.unique(labels[clustered], return_counts=True)
    order = old[np.lexsort((old, -counts))]
    mapping = np.full(int(old.max()) + 1, -1, dtype=np.int64)
    mapping[order] = np.arange(len(order))
    out = labels.copy()
    out[clustered] = mapping[labels[clustered]]
    return out


def write_clusters_csv(paths: Sequence[str], labels: np.ndarray, out_csv: str | Path) -> Path:
    """``path,cluster`` rows in input order (cluster -1 = unclustered)."""
    out_csv = Path(out_csv)
    with open(out_csv, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["path", "cluster"])
        writer.writerows((path, int(label)) for path, label in zip(paths, labels))
    return out_csv


def write_contact_sheets(paths: Sequence[str], labels: np.ndarray, out_dir: str | Path,
                         max_images: int = 100, unclustered: bool = True) -> list[Path]:
    """``cluster_0000.png`` ... (a grid of each cluster's thumbnails), and ``unclustered.png``."""
    out_dir = Path(out_dir)
    written = []
    for c in range(int(labels.max()) + 1 if len(labels) else 0):
        members = [p for p, label in zip(paths, labels) if label == c]
        sheet = contact_sheet(members, max_images=max_images, title=f"cluster {c}: {len(members)} images")
        written.append(out_dir / f"cluster_{c:04d}.png")
        sheet.save(written[-1])
    rest = [p for p, label in zip(paths, labels) if label < 0]
    if unclustered and rest:
        written.append(out_dir / "unclustered.png")
        contact_sheet(rest, max_images=max_images, title=f"unclustered: {len(rest)} images").save(written[-1])
    return written


def cluster_folder(checkpoint, inputs: Sequence[str | Path], out_dir: str | Path, eps: float = 0.6, k1: int = 30,
                   k2: int = 6, min_samples: int = 4, encoder: str | None = None, batch_size: int = 64,
                   device=None, flip: bool = False, progress: bool = True, max_images: int = 100,
                   skip_unreadable: bool = False) -> GroupingResult:
    """Embed the images of ``inputs`` (folders, files, globs), cluster them and write the results to
    ``out_dir``: ``clusters.csv`` and one contact sheet per cluster. ``checkpoint``: what
    :class:`FeatureExtractor` accepts, or a FeatureExtractor. ``skip_unreadable``: leave out files
    that cannot be decoded and list them in ``unreadable.txt`` (else the first one stops with a
    one-line error naming it)."""
    paths = collect_image_paths(inputs)
    extractor = checkpoint if isinstance(checkpoint, FeatureExtractor) else FeatureExtractor(
        checkpoint, device=device, batch_size=batch_size, encoder=encoder, flip=flip)
    labeler = JaccardDBSCAN(k1=k1, k2=k2, eps=eps, min_samples=min_samples, progress=progress)  # checks eps first
    embedded = embed_files(extractor, paths, skip_unreadable, progress)
    labels = renumber_by_size(labeler(embedded.features))
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DmireidError(f"cannot create output folder {out_dir}: {exc.strerror or exc}") from None
    for stale in [*out_dir.glob("cluster_[0-9][0-9][0-9][0-9].png"), out_dir / "unclustered.png",
                  out_dir / UNREADABLE_LIST]:
        stale.unlink(missing_ok=True)  # files of an earlier run in the same folder
    result = GroupingResult(embedded.paths, labels, write_clusters_csv(embedded.paths, labels, out_dir / "clusters.csv"),
                            skipped=embedded.skipped)
    if embedded.skipped:
        result.unreadable = out_dir / UNREADABLE_LIST
        result.unreadable.write_text("".join(f"{p}\n" for p in embedded.skipped), encoding="utf-8")
    result.sheets = write_contact_sheets(embedded.paths, labels, out_dir, max_images=max_images)
    log.info("%s", result.summary())
    return result
