"""The epoch loop (training). It reads no config and imports no application: the assembly of a run
from its config is :mod:`dmireid.build`, model use above the embedding layer is :mod:`dmireid.inference`.

- :class:`Trainer` — ``Trainer(parts, hooks=[...])`` runs on a :class:`TrainingParts` of built
  objects and values; ``Trainer.from_config(cfg)`` builds them; :func:`train` runs a config.
- :class:`TrainStep` / :class:`Batch` — one optimisation step, an object the loop calls
  (``trainer.step``: wrap or replace it).
- :class:`EventStorage` — the epoch's results, written once (``trainer.storage``), read by hooks.
- hooks: :class:`Hook`, :class:`ProgressHook`, :class:`PseudoLabelsHook`, :class:`EvaluationHook`,
  :class:`MetricsHook`, :class:`CheckpointHook`,
  :class:`OpenSetHook` (the open-set threshold stored in ``last.pt`` after training).
"""

from .events import EventStorage
from .hooks import CheckpointHook, EvaluationHook, Hook, MetricsHook, OpenSetHook, ProgressHook, PseudoLabelsHook
from .parts import (DatasetSource, Extraction, LoopSettings, MomentumSettings, ObjectiveSpec, OptimizerSettings,
                    SamplerSettings, TrainingParts)
from .step import Batch, TrainStep
from .trainer import Trainer, train

__all__ = ["train", "Trainer", "TrainingParts", "LoopSettings", "DatasetSource", "Extraction", "ObjectiveSpec",
           "OptimizerSettings", "MomentumSettings", "SamplerSettings", "TrainStep", "Batch", "EventStorage",
           "Hook", "ProgressHook", "PseudoLabelsHook", "EvaluationHook", "MetricsHook", "CheckpointHook",
           "OpenSetHook"]
