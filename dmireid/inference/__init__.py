"""The applications of a trained model: search, gallery, grouping, calibration, export, reports.

Built on the embedding layer (:mod:`dmireid.embedding`: extraction, :class:`FeatureExtractor`,
encoder loading, evaluation, the checkpoint format). Imports no trainer (``import
dmireid.inference`` leaves :mod:`dmireid.engine` unloaded) and no plug-in: a checkpoint is parsed,
never run (a backbone from a plug-in: import it first, as the commands' ``--plugins`` does).

- :func:`search`, :func:`save_features` / :func:`load_features` — rank a gallery; feature files (:mod:`.search`).
- :class:`GalleryIndex` — a persistent gallery (faiss + SQLite) with an open-set threshold (:mod:`.gallery`).
- :func:`calibrate` — estimate that threshold from unlabelled images and store it (:mod:`.calibration`).
- :func:`cluster_folder` — group a folder of crops by identity with training's labeler (:mod:`.grouping`).
- :func:`export_onnx` / :func:`check_onnx` — ONNX export; :func:`export_for_boxmot` — the file boxmot loads (:mod:`.export`).
- :class:`TrackerEmbedder` — a frame and its boxes -> one unit row per box, for trackers (deep-sort, boxmot) (:mod:`.tracker`).
- :func:`cut_crops` — training crops from footage and MOT tracks (``dmireid crops``, :mod:`.footage`).
- :func:`visualize_run` — rank lists and training curves of a run (:mod:`.run_report`).

The embedding layer's names (``FeatureExtractor``, ``extract_features``, ``evaluate_model``, ...)
are still served here for one release, with a DeprecationWarning naming :mod:`dmireid.embedding`.
"""

from ..deprecation import moved_names
from ..embedding import __all__ as _EMBEDDING_NAMES
from .calibration import calibrate
from .export import check_onnx, export_for_boxmot, export_onnx, onnx_opset
from .footage import cut_crops
from .gallery import GalleryIndex, Hit
from .grouping import (GroupingResult, cluster_folder, group_features, renumber_by_size, write_clusters_csv,
                       write_contact_sheets)
from .run_report import Report, resolve_run, visualize_run
from .search import SearchResult, check_compatible, load_features, save_features, search
from .tracker import TrackerEmbedder

__all__ = [
    "GalleryIndex", "Hit", "calibrate",
    "search", "SearchResult", "save_features", "load_features", "check_compatible",
    "cluster_folder", "group_features", "renumber_by_size", "GroupingResult", "write_clusters_csv",
    "write_contact_sheets",
    "export_onnx", "check_onnx", "onnx_opset", "export_for_boxmot", "TrackerEmbedder", "cut_crops",
    "visualize_run", "resolve_run", "Report",
]

__getattr__ = moved_names(__name__, {name: "dmireid.embedding" for name in _EMBEDDING_NAMES})
