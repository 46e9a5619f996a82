"""Evaluate one encoder on a dataset's query/gallery split (spec §6): the test of training and ``dmireid evaluate``.

    metrics = evaluate_model(model, dataset, 256, 128, device)   # {mAP, rank1, rank5, rank10, mINP}; None off rank 0
    ex = dmireid.build.extraction(cfg)                            # a run's settings
    metrics = evaluate_model(model, dataset, ex.height, ex.width, device, ex.batch_size, ex.num_workers)
"""

from __future__ import annotations

import logging
import numpy as np
import torch

from .. import distributed as dist
from ..evaluation import evaluate
from .extract import extract_features

log = logging.getLogger(__name__)


def evaluate_model(model: torch.nn.Module, dataset, height: int, width: int, device: torch.device | str,
                   batch_size: int = 128, num_workers: int = 4, progress: bool = True,
                   amp: bool | torch.dtype | None = False, channels_last: bool = False,
                   rerank: bool = False) -> dict[str, float] | None:
    """Query/gallery evaluation of one encoder; returns {mAP, rank1, rank5, rank10, mINP} on rank 0.

    ``dataset``: has ``query`` and ``gallery`` lists of ``(path, pid, camid)``; ``height``,
    ``width``: the test transform's size; ``batch_size``, ``num_workers``, ``amp``: the extraction's
    (:func:`~dmireid.inference.extract_features`). Every rank must call it (the extraction is
    sharded under torchrun); ranks other than 0 get None.
    """
    samples = dataset.query + dataset.gallery
    feats, _ = extract_features(model, samples, height, width, batch_size, device, num_workers, amp=amp,
                                channels_last=channels_last, progress=progress, description="extract query+gallery")
    if not dist.is_main():
        return None
    nq = len(dataset.query)
    pids = np.array([s[1] for s in samples])
    cams = np.array([s[2] for s in samples])
    result = evaluate(feats[:nq], feats[nq:], pids[:nq], pids[nq:], cams[:nq], cams[nq:], rerank=rerank)
    cmc = result["cmc"]
    return {"mAP": float(result["mAP"]), "rank1": float(cmc[0]), "rank5": float(cmc[4]), "rank10": float(cmc[9]),
            "mINP": float(result["mINP"])}
