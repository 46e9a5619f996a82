"""The objective seam: what a training method is, as the engine sees it.

An objective owns the memories and the loss of one epoch. The engine builds a new one every epoch
from the epoch's features and pseudo-labels (cluster ids change every epoch), asks it for the loss
of each batch and hands it each step's features for its memory updates:

    objective = ObjectiveClass.build(context, settings)  # ObjectiveContext: features, labels, cameras, ...
    loss, terms = objective.loss(f, y)              # f: B×d unit rows (grad), y: B int64 -> scalar, {name: scalar}
    objective.update(f_all, f_momentum_all, y_all)  # after the optimiser step, no grad, all ranks' rows

Register a class with :func:`register_objective` and select it with ``method=NAME``. Its settings
are typed and explicit, never the config:

- ``settings_class``: a frozen dataclass whose fields are named like keys of the ``memory`` config
  section (``temperature``, ``momentum``, ...); :mod:`dmireid.build` fills one from that section and
  passes it to ``build``, ``describe`` and ``uses_momentum_encoder``. None (the default): no settings,
  ``build(context, **options)``.
- its own options are the keyword parameters of ``build`` after the settings (``objective_options``
  fills them, checked against that signature once, when the config is read):

    settings_class = CCSettings
    @classmethod
    def build(cls, context, settings, smoothing: float = 0.1): ...   # objective_options.smoothing=0.2
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import numpy as np
import torch
from torch import nn

from ..registry import Registry, check_options

OBJECTIVES: Registry = Registry("objective", "method")


@dataclass
class ObjectiveContext:
    """Everything the engine offers an objective when it builds one for an epoch.

    features: N×d float32 unit rows of every training image (θ, eval mode), on the CPU;
        unreadable images are zero rows with label -1.
    labels: N int64 pseudo-labels (-1 = outlier), clusters 0..C-1.
    cameras: N int64 camera ids of the training images (0..; all zeros for a dataset without cameras).
    stage: 1 during the first stage of a ``two_stage`` schedule, else 2 (the full method).
    seed: the epoch's seed, for any randomness of ``build`` and ``update``.
    embed_momentum: rows (int64 numpy) -> their θ' features (R×d, eval mode, CPU), or None when
        the run has no momentum encoder.
    """

    features: torch.Tensor
    labels: torch.Tensor
    epoch: int
    stage: int
    seed: int
    device: torch.device
    embed_momentum: Callable[[np.ndarray], torch.Tensor] | None = None
    cameras: torch.Tensor | None = None

    @property
    def num_clusters(self) -> int:
        return int(self.labels.max()) + 1 if self.labels.numel() else 0


class Objective(nn.Module):
    """Base class of training objectives (memories + loss). Override the four marked methods.

    ``needs_momentum_features``: True when :meth:`update` uses the momentum encoder's features of
    the batch (the engine then computes them; otherwise it passes None unless it forwards θ' anyway).
    ``needs_cameras``: True when :meth:`loss` and :meth:`update` take the batch's camera ids as the
    keyword ``cameras=`` (B int64, on the features' device); False: they are called without it, so
    an objective written before cameras existed keeps working.
    """

    needs_momentum_features: bool = False
    needs_cameras: bool = False
    settings_class: ClassVar[type | None] = None  # frozen dataclass of ``memory``-named fields, or None

    @classmethod
    def uses_momentum_encoder(cls, settings: Any, options: dict, stage: int) -> bool:
        """Whether the engine must keep a momentum encoder θ' in this stage (override)."""
        return False

    @classmethod
    def describe(cls, settings: Any, options: dict, stage: int) -> str:
        """One log line naming the choices this objective runs with (override)."""
        return cls.__name__

    @classmethod
    def build(cls, context: ObjectiveContext, settings: Any = None) -> "Objective":
        """The objective of one epoch (override); ``settings`` (an instance of ``settings_class``) is
        passed only when the class has one; keyword parameters after it are ``objective_options``."""
        raise NotImplementedError

    def loss(self, f: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """B×d unit features (with grad), B labels -> (scalar loss, {term name: scalar}) (override)."""
        raise NotImplementedError

    @torch.no_grad()
    def update(self, f: torch.Tensor, f_momentum: torch.Tensor | None, y: torch.Tensor) -> None:
        """Memory updates after the optimiser step with every rank's B×d rows (override)."""


def register_objective(name: str, objective: type[Objective] | None = None, *, overwrite: bool = False):
    """Register an :class:`Objective` subclass as ``method=name`` (also ``@register_objective(name)``)."""
    return OBJECTIVES.register(name, objective, overwrite=overwrite)


def get_objective(name: str) -> type[Objective]:
    """The objective class registered as ``name`` (one-line error naming ``method`` otherwise)."""
    return OBJECTIVES.get(name)


def check_objective_options(name: str, options: dict) -> None:
    """``objective_options`` against the ``build`` signature of objective ``name`` (one line naming the key)."""
    objective = get_objective(name)
    check_options(objective.build, options, kind="objective", name=name, key="objective_options",
                  positional=1 if objective.settings_class is None else 2)


def build_objective(objective: type[Objective], context: ObjectiveContext, settings: Any = None,
                    options: dict | None = None) -> Objective:
    """This epoch's objective: ``objective.build(context, settings, **options)`` (no ``settings``
    argument for a class without ``settings_class``)."""
    options = dict(options or {})
    if objective.settings_class is None:
        return objective.build(context, **options)
    return objective.build(context, settings, **options)
