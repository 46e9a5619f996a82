"""The epoch loop and everything that uses all the other packages.

- :func:`train` — run training from a :class:`~dmireid.config.Config`.
- :func:`extract_features` — embed samples with a model (eval mode, test transform).
- :func:`save_checkpoint` / :func:`load_checkpoint` — atomic, ``weights_only``-safe checkpoints.
"""

from ..checkpoint import load_checkpoint, save_checkpoint
from .features import extract_features
from .hooks import CheckpointHook, EvaluationHook, Hook, MetricsHook, ProgressHook
from .trainer import Trainer, evaluate_model, train

__all__ = ["train", "Trainer", "evaluate_model", "extract_features", "save_checkpoint", "load_checkpoint",
           "Hook", "ProgressHook", "EvaluationHook", "MetricsHook", "CheckpointHook"]


def __getattr__(name):
    if name == "FeatureExtractor":
        from .extractor import FeatureExtractor

        return FeatureExtractor
    raise AttributeError(name)
