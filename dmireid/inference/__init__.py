"""Using a model, apart from training: extraction, search, grouping, export, evaluation, reports.

Imports no trainer (``import dmireid.inference`` leaves :mod:`dmireid.engine` unloaded) and no
plug-in: a checkpoint is parsed, never run (a backbone from a plug-in: import it first, as the
commands' ``--plugins`` does). A checkpoint's model is built by :func:`dmireid.build.model`.

- :func:`extract_features` — the one extraction loop (eval mode, no grad, unit rows) on
  ``(path, pid, camid)`` samples: what training and evaluation call; :func:`extract_from_dataset`
  is the loop itself on any ``(image, index, ok)`` dataset. Unreadable images: ``on_unreadable``.
- :class:`FeatureExtractor` — loads a checkpoint (or torchvision ResNet weights) and is the callable
  that embeds paths / PIL images / arrays / tensors with that loop; :func:`embed_files` drops
  (``skip_unreadable``) and lists the files that cannot be decoded.
- :func:`evaluate_model` — mAP / CMC / mINP of one encoder on a query/gallery split.
- :func:`search`, :func:`save_features` / :func:`load_features` — rank a gallery; feature files.
- :func:`cluster_folder` — group a folder of crops by identity (training's labeler).
- :func:`export_onnx` / :func:`check_onnx` — ONNX export (:func:`export_for_boxmot`: the file boxmot
  loads); :func:`visualize_run` — rank lists, curves.
- :class:`TrackerEmbedder` — a frame and its boxes -> one unit row per box, for trackers (deep-sort, boxmot).
- :class:`GalleryIndex` — a persistent gallery (faiss + SQLite) with an open-set threshold;
  :func:`calibrate` — estimate that threshold from unlabelled images and store it in the checkpoint.
"""

from .calibration import calibrate, store_open_set
from .export import check_onnx, export_for_boxmot, export_onnx, onnx_opset
from .extraction import ON_UNREADABLE, embed_batch, extract_features, extract_from_dataset
from .extractor import EmbeddedFiles, FeatureExtractor, embed_files, skipped_note
from .gallery import GalleryIndex, Hit
from .identity_groups import (GroupingResult, cluster_folder, group_features, renumber_by_size,
                              write_clusters_csv, write_contact_sheets)
from .inputs import IMAGE_EXTENSIONS, ImageItems, collect_image_paths
from .loading import ENCODERS, infer_resnet_arch, load_encoder, pick_encoder, weights_fingerprint
from .query_gallery import evaluate_model
from .report import Report, resolve_run, visualize_run
from .search import SearchResult, check_compatible, load_features, save_features, search
from .tracker import TrackerEmbedder

__all__ = [
    "extract_features", "extract_from_dataset", "embed_batch", "ON_UNREADABLE",
    "FeatureExtractor", "EmbeddedFiles", "embed_files", "skipped_note", "collect_image_paths", "ImageItems",
    "IMAGE_EXTENSIONS",
    "load_encoder", "pick_encoder", "infer_resnet_arch", "ENCODERS", "weights_fingerprint",
    "GalleryIndex", "Hit", "calibrate", "store_open_set",
    "evaluate_model",
    "search", "SearchResult", "save_features", "load_features", "check_compatible",
    "cluster_folder", "group_features", "renumber_by_size", "GroupingResult", "write_clusters_csv",
    "write_contact_sheets",
    "export_onnx", "check_onnx", "onnx_opset", "export_for_boxmot", "TrackerEmbedder",
    "visualize_run", "resolve_run", "Report",
]
