"""Visual report of a trained model: rank-list strips of test queries, an HTML index, training curves.

    from dmireid.inference import visualize_run
    visualize_run("runs/demo", "runs/demo/vis")      # uses runs/demo/last.pt and runs/demo/metrics.jsonl

The features come from :class:`FeatureExtractor`; the drawing is :mod:`dmireid.evaluation.visualize`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..data import load_dataset
from ..embedding.feature_extractor import FeatureExtractor
from ..errors import DmireidError
from ..evaluation.visualize import plot_training_curves, select_queries, visualize_rank_lists

log = logging.getLogger(__name__)


@dataclass
class Report:
    index: Path
    strips: list[Path] = field(default_factory=list)
    curves: Path | None = None


def resolve_run(run_or_checkpoint: str | Path) -> tuple[Path, Path | None]:
    """A run folder (its ``last.pt``) or a checkpoint file -> (checkpoint, metrics.jsonl or None).

    The metrics file is the run folder's, or the one next to a checkpoint file.
    """
    path = Path(run_or_checkpoint)
    if path.is_dir():
        checkpoint = path / "last.pt"
        if not checkpoint.is_file():
            raise DmireidError(f"{path}: no last.pt in this folder (is it a dmireid run folder?)")
    elif path.is_file():
        checkpoint = path
    else:
        raise DmireidError(f"{path}: no such run folder or checkpoint")
    metrics = checkpoint.parent / "metrics.jsonl"
    return checkpoint, metrics if metrics.is_file() else None


def visualize_run(run_or_checkpoint: str | Path, out_dir: str | Path, dataset: str | None = None,
                  root: str | None = None, num_queries: int = 10, topk: int = 10, select: str = "spread",
                  encoder: str | None = None, batch_size: int = 64, device=None, progress: bool = True) -> Report:
    """Strips + ``index.html`` for ``num_queries`` test queries, plus ``curves.png`` for a run.

    ``dataset``/``root``: the test data (default: the checkpoint's ``data.name``/``data.root``).
    """
    checkpoint, metrics = resolve_run(run_or_checkpoint)
    extractor = FeatureExtractor(checkpoint, device=device, batch_size=batch_size, encoder=encoder)
    if extractor.config is not None:
        from .. import build  # the checkpoint's dataset from its config: the composition root's job

        data = build.dataset(extractor.config, name=dataset, root=root)  # the checkpoint's, unless named
    elif dataset is None:
        raise DmireidError(f"{checkpoint} holds no config: give the dataset name and root")
    else:
        data = load_dataset(dataset, root)
    name = data.name
    if not data.query or not data.gallery:
        raise DmireidError(f"dataset {name} at {data.root} has no query/gallery images to rank")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    curves = None
    if metrics is not None:
        curves = plot_training_curves(metrics, out_dir / "curves.png")
    chosen = select_queries(len(data.query), num_queries, select)
    query_features = extractor([data.query[i][0] for i in chosen], progress=progress)
    gallery_features = extractor([s[0] for s in data.gallery], progress=progress)
    title = f"{name}: {checkpoint} ({extractor.encoder} encoder)"
    index, strips = visualize_rank_lists(query_features, gallery_features, data.query, data.gallery, out_dir,
                                         topk=topk, query_indices=chosen, curves=curves.name if curves else None,
                                         title=title)
    return Report(index, strips, curves)
