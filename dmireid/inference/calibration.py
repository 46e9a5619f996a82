"""``dmireid calibrate``: an open-set threshold for a checkpoint from unlabelled images, stored in it.

    from dmireid.inference import calibrate
    from dmireid.pseudo_labels import JaccardDBSCAN
    estimate = calibrate("runs/demo/last.pt", ["crops/"], JaccardDBSCAN(eps=0.45), false_match_rate=0.01)
    estimate["threshold"]      # cosine distance; also in torch.load("runs/demo/last.pt")["open_set"]

The images are embedded with the checkpoint's encoder, clustered with ``labeler`` (``dmireid
calibrate`` builds the one of the checkpoint's training config in :mod:`dmireid.build`) and the
threshold is estimated from the
between-cluster distances (:func:`dmireid.evaluation.open_set.estimate_threshold`). The checkpoint
is rewritten atomically (temp file + fsync + rename) with everything else kept; the estimate
records the weights' fingerprint, so an index built from another encoder does not take it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from ..embedding.checkpoint import CONFIG_KEY, load_checkpoint, store_open_set, weights_fingerprint
from ..embedding.feature_extractor import FeatureExtractor, embed_files
from ..embedding.inputs import collect_image_paths
from ..errors import DmireidError
from ..evaluation.open_set import estimate_threshold
from ..pseudo_labels import Labeler, call_labeler
from .gallery import camera_of

log = logging.getLogger(__name__)

def calibrate(checkpoint: str | Path, images: Sequence[str | Path], labeler: Labeler, false_match_rate: float = 0.01, *,
              encoder: str | None = None, device=None, batch_size: int = 64, skip_unreadable: bool = False,
              progress: bool = False, write: bool = True) -> dict:
    """Estimate the open-set threshold of ``checkpoint``'s encoder on ``images`` (files, folders,
    globs; no labels) clustered by ``labeler`` and, with ``write``, store it in the checkpoint. Returns the estimate
    (see :func:`~dmireid.evaluation.open_set.estimate_threshold`) plus ``encoder``,
    ``fingerprint`` and ``estimated_from``."""
    if not 0 < false_match_rate < 1:
        raise DmireidError(f"--false-match-rate must be in (0, 1), got {false_match_rate}")
    source = str(checkpoint)
    state = load_checkpoint(source)
    if CONFIG_KEY not in state:
        raise DmireidError(f"{source} is not a dmireid checkpoint (no config inside: its labeler is unknown)")
    extractor = FeatureExtractor(state, device=device, batch_size=batch_size, encoder=encoder, source=source)
    embedded = embed_files(extractor, collect_image_paths(images), skip_unreadable, progress)
    if len(embedded.paths) < 2:
        raise DmireidError(f"calibration needs at least 2 readable images, got {len(embedded.paths)}")
    cameras = [camera_of(path) for path in embedded.paths]  # Market-style names carry them
    cameras = None if None in cameras else np.array(cameras, dtype=np.int64)
    labels = call_labeler(labeler, embedded.features, cameras=cameras, identities=None)
    estimate = estimate_threshold(embedded.features, labels, false_match_rate)
    estimate.update(encoder=extractor.encoder, fingerprint=weights_fingerprint(extractor.model.state_dict()),
                    estimated_from="calibrate", skipped=len(embedded.skipped))
    if write:
        store_open_set(source, estimate, state)
        log.info("stored the open-set threshold in %s", source)
    return estimate
