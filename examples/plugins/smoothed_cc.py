"""A custom objective: Cluster Contrast with label smoothing on the proxy logits.

    dmireid train plugins=[examples/plugins/smoothed_cc.py] method=smoothed_cc objective_options.smoothing=0.1

Its settings are typed and explicit: ``settings_class`` names the ``memory`` keys it reads
(dmireid.build fills a ``ProxySettings`` from that section); its own options are the keyword
parameters of ``build`` after the settings (``smoothing``): ``objective_options`` is checked against
that signature before any work starts (a typo or a non-number is a one-line error).
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dmireid.memory import ClusterProxies, cluster_centroids
from dmireid.objectives import Objective, register_objective


@dataclass(frozen=True)
class ProxySettings:
    """The ``memory`` keys this objective reads (same names as the config's)."""

    temperature: float = 0.05
    momentum: float = 0.1


class SmoothedClusterContrast(Objective):
    """One proxy per cluster (mean update), cross-entropy with label smoothing ``smoothing``."""

    settings_class = ProxySettings

    def __init__(self, memory: ClusterProxies, smoothing: float):
        super().__init__()
        self.memory, self.smoothing = memory, smoothing

    @classmethod
    def describe(cls, settings, options, stage):
        return f"method smoothed_cc: label smoothing {options.get('smoothing', 0.1)}"

    @classmethod
    def build(cls, context, settings: ProxySettings, smoothing: float = 0.1):
        centroids = cluster_centroids(context.features, context.labels).to(context.device)
        memory = ClusterProxies(centroids, update="mean", momentum=settings.momentum,
                                temperature=settings.temperature)
        return cls(memory, float(smoothing))

    def loss(self, f, y):
        loss = F.cross_entropy(self.memory.logits(f), y, ignore_index=-1, label_smoothing=self.smoothing)
        return loss, {"loss_smoothed": loss}

    @torch.no_grad()
    def update(self, f, f_momentum, y):
        self.memory.update(f, y)


register_objective("smoothed_cc", SmoothedClusterContrast)
