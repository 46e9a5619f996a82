"""``dmireid calibrate``: an open-set threshold for a checkpoint from unlabelled images, stored in it.

    from dmireid.inference import calibrate
    estimate = calibrate("runs/demo/last.pt", ["crops/"], false_match_rate=0.01)
    estimate["threshold"]      # cosine distance; also in torch.load("runs/demo/last.pt")["open_set"]

The images are embedded with the checkpoint's encoder, clustered with the labeler of its training
config (``pseudo_labels``: JaccardDBSCAN by default) and the threshold is estimated from the
between-cluster distances (:func:`dmireid.evaluation.open_set.estimate_threshold`). The checkpoint
is rewritten atomically (temp file + fsync + rename) with everything else kept; the estimate
records the weights' fingerprint, so an index built from another encoder does not take it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from ..checkpoint import load_checkpoint, save_checkpoint
from ..config import load_config
from ..errors import DmireidError
from ..evaluation.open_set import estimate_threshold
from ..pseudo_labels import build_labeler
from ..registry import import_plugins
from .extractor import FeatureExtractor, embed_files
from .inputs import collect_image_paths
from .loading import weights_fingerprint

log = logging.getLogger(__name__)

OPEN_SET_KEY = "open_set"


def labeler_of(cfg, progress: bool = False, device=None):
    """The labeler a training config makes pseudo-labels with (its ``pseudo_labels`` section)."""
    import_plugins(cfg.plugins)
    pl = cfg.pseudo_labels
    return build_labeler(pl.labeler, pl.options, k1=pl.k1, k2=pl.k2, eps=pl.eps, min_samples=pl.min_samples,
                         knn_backend=pl.knn_backend, progress=progress, device=device)


def store_open_set(path: str | Path, estimate: dict, state: dict | None = None) -> None:
    """Write ``estimate`` as the checkpoint's ``open_set`` entry (atomic rewrite, all else kept)."""
    state = load_checkpoint(path) if state is None else state
    save_checkpoint({**state, OPEN_SET_KEY: estimate}, path)


def calibrate(checkpoint: str | Path, images: Sequence[str | Path], false_match_rate: float = 0.01, *,
              encoder: str | None = None, device=None, batch_size: int = 64, skip_unreadable: bool = False,
              progress: bool = False, write: bool = True) -> dict:
    """Estimate the open-set threshold of ``checkpoint``'s encoder on ``images`` (files, folders,
    globs; no labels) and, with ``write``, store it in the checkpoint. Returns the estimate
    (see :func:`~dmireid.evaluation.open_set.estimate_threshold`) plus ``encoder``,
    ``fingerprint`` and ``estimated_from``."""
    if not 0 < false_match_rate < 1:
        raise DmireidError(f"--false-match-rate must be in (0, 1), got {false_match_rate}")
    source = str(checkpoint)
    state = load_checkpoint(source)
    if "config" not in state:
        raise DmireidError(f"{source} is not a dmireid checkpoint (no config inside: its labeler is unknown)")
    extractor = FeatureExtractor(state, device=device, batch_size=batch_size, encoder=encoder, source=source)
    labeler = labeler_of(load_config(base=state["config"]), progress, extractor.device)
    embedded = embed_files(extractor, collect_image_paths(images), skip_unreadable, progress)
    if len(embedded.paths) < 2:
        raise DmireidError(f"calibration needs at least 2 readable images, got {len(embedded.paths)}")
    labels = labeler(embedded.features)
    estimate = estimate_threshold(embedded.features, labels, false_match_rate)
    estimate.update(encoder=extractor.encoder, fingerprint=weights_fingerprint(extractor.model.state_dict()),
                    estimated_from="calibrate", skipped=len(embedded.skipped))
    if write:
        store_open_set(source, estimate, state)
        log.info("stored the open-set threshold in %s", source)
    return estimate
