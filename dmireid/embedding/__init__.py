"""The embedding layer: what training and every application share to turn images into features.

Sits above ``data`` / ``models`` / ``evaluation`` and below both :mod:`dmireid.engine` (training)
and :mod:`dmireid.inference` (the applications: search, gallery, grouping, calibration, export,
trackers, reports) and :mod:`dmireid.serve`. Imports no trainer and no application.

- :func:`extract_features` — the one extraction loop (eval mode, no grad, unit rows) on
  ``(path, pid, camid)`` samples; :func:`extract_from_dataset` the loop on any ``(image, index, ok)``
  dataset; :func:`embed_batch` one batch (:mod:`.extract`).
- :class:`FeatureExtractor` — a checkpoint (or torchvision ResNet weights) as a callable that embeds
  paths / PIL images / arrays / tensors; :func:`embed_files` (:mod:`.feature_extractor`).
- :func:`load_encoder`, :func:`pick_encoder`, :func:`infer_resnet_arch` — weight files to an
  eval-ready model (:mod:`.encoder`).
- :func:`evaluate_model` — mAP / CMC / mINP of one encoder on a query / gallery split (:mod:`.evaluate`).
- the checkpoint format (:mod:`.checkpoint`, the one owner of its keys): :func:`save_checkpoint`,
  :func:`load_checkpoint`, :func:`training_checkpoint`, :func:`store_open_set`,
  :func:`weights_fingerprint`.
- :func:`collect_image_paths`, :class:`ImageItems`, :data:`IMAGE_EXTENSIONS` (:mod:`.inputs`).
"""

from .checkpoint import (CONFIG_KEY, EMA_MODEL_KEY, MODEL_KEY, OPEN_SET_KEY, load_checkpoint, save_checkpoint,
                         store_open_set, training_checkpoint, weights_fingerprint)
from .encoder import ENCODERS, infer_resnet_arch, load_encoder, pick_encoder
from .evaluate import evaluate_model
from .extract import ON_UNREADABLE, embed_batch, extract_features, extract_from_dataset
from .feature_extractor import EmbeddedFiles, FeatureExtractor, embed_files, skipped_note
from .inputs import IMAGE_EXTENSIONS, ImageItems, collect_image_paths

__all__ = [
    "extract_features", "extract_from_dataset", "embed_batch", "ON_UNREADABLE",
    "FeatureExtractor", "EmbeddedFiles", "embed_files", "skipped_note",
    "load_encoder", "pick_encoder", "infer_resnet_arch", "ENCODERS",
    "evaluate_model",
    "save_checkpoint", "load_checkpoint", "training_checkpoint", "store_open_set", "weights_fingerprint",
    "CONFIG_KEY", "MODEL_KEY", "EMA_MODEL_KEY", "OPEN_SET_KEY",
    "collect_image_paths", "ImageItems", "IMAGE_EXTENSIONS",
]
