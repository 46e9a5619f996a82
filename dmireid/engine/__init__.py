"""The epoch loop (training); model use lives in :mod:`dmireid.inference`, the assembly of a run
from its config in :mod:`dmireid.build`.

- :func:`train` / :class:`Trainer` — run training from a :class:`~dmireid.config.Config`
  (``hooks=[...]`` are added to the default ones; ``default_hooks=False`` replaces them).
- hooks: :class:`Hook`, :class:`ProgressHook`, :class:`PseudoLabelsHook`, :class:`EvaluationHook`,
  :class:`MetricsHook`, :class:`CheckpointHook`.
"""

from .hooks import CheckpointHook, EvaluationHook, Hook, MetricsHook, ProgressHook, PseudoLabelsHook
from .trainer import Trainer, train

__all__ = ["train", "Trainer", "Hook", "ProgressHook", "PseudoLabelsHook", "EvaluationHook", "MetricsHook",
           "CheckpointHook"]
