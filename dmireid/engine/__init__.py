"""The epoch loop (training); model use lives in :mod:`dmireid.inference`.

- :func:`train` / :class:`Trainer` — run training from a :class:`~dmireid.config.Config`.
- :func:`extract_features`, :func:`evaluate_model`, :class:`FeatureExtractor` — re-exported from
  :mod:`dmireid.inference` (the extraction loop, query/gallery evaluation, the checkpoint-loading
  embedder).
- :func:`save_checkpoint` / :func:`load_checkpoint` — atomic, ``weights_only``-safe checkpoints.
- hooks: :class:`Hook`, :class:`ProgressHook`, :class:`EvaluationHook`, :class:`MetricsHook`,
  :class:`CheckpointHook`, :class:`OpenSetHook` (the open-set threshold stored in ``last.pt``).

Every name is imported on first use, so ``import dmireid.engine.<module>`` (or the model-use names)
does not load the trainer and everything it pulls in.
"""

import importlib

_LAZY = {
    "train": ".trainer", "Trainer": ".trainer",
    "evaluate_model": "dmireid.inference", "extract_features": "dmireid.inference",
    "FeatureExtractor": "dmireid.inference",
    "save_checkpoint": "dmireid.checkpoint", "load_checkpoint": "dmireid.checkpoint",
    "Hook": ".hooks", "ProgressHook": ".hooks", "EvaluationHook": ".hooks", "MetricsHook": ".hooks",
    "CheckpointHook": ".hooks", "PseudoLabelsHook": ".hooks", "OpenSetHook": ".hooks",
}

__all__ = ["train", "Trainer", "evaluate_model", "extract_features", "save_checkpoint", "load_checkpoint",
           "Hook", "ProgressHook", "EvaluationHook", "MetricsHook", "CheckpointHook", "PseudoLabelsHook",
           "OpenSetHook", "FeatureExtractor"]


def __getattr__(name):
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name], __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
