"""Built training parts with one method timed, swapped in without patching the trainer:
``dataclasses.replace(parts, ...)`` for the extraction, the labeler and the objective builder, and
``trainer.step = TimedStep(trainer.step, ...)`` (gpu_check.py). ``clock`` is gpu_check's
``PhaseClock`` (``now()``, ``seconds``, ``marks``, ``peaks``, ``peak()``, ``reset_peak()``,
``step_spans``); ``seen`` a dict that collects what the parts saw.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np

from dmireid.pseudo_labels import call_labeler


class Delegate:
    """A built part with one method timed; every other attribute is the wrapped part's."""

    def __init__(self, inner, clock: Any, seen: dict):
        self.inner, self.clock, self.seen = inner, clock, seen

    def __getattr__(self, name):
        return getattr(self.inner, name)


class TimedExtraction(Delegate):
    """``Extraction.extract`` timed: θ's train features vs θ''s instances (``extract θ' ...``)."""

    def extract(self, model, samples, device, **kwargs):
        start, theta = self.clock.now(), "θ'" not in kwargs.get("description", "")
        out = self.inner.extract(model, samples, device, **kwargs)
        key = "extraction" if theta else "theta_prime_extraction"
        self.clock.seconds[key] = self.clock.seconds.get(key, 0.0) + self.clock.now() - start
        self.seen["theta_prime_images"] = self.seen.get("theta_prime_images", 0) + (0 if theta else len(samples))
        return out


class TimedLabeler(Delegate):
    """The labeler timed; trains on the synthetic ids instead of its labels when ``true_labels``."""

    def __init__(self, inner, clock, seen, true_labels: np.ndarray | None):
        super().__init__(inner, clock, seen)
        self.true_labels = true_labels

    def __call__(self, features, **known):
        start = self.clock.now()
        found = call_labeler(self.inner, features, cameras=known.get("cameras"), identities=known.get("identities"))
        self.clock.seconds["labeler"] = self.clock.now() - start
        self.seen.update(found_clusters=int(found.max()) + 1, found_outliers=int((found < 0).sum()),
                         labeler_phases=dict(getattr(self.inner, "timings", {})))
        use_true = self.true_labels is not None and len(self.true_labels) == len(found)
        self.seen["labels_used"] = "true ids" if use_true else "found"
        return self.true_labels.copy() if use_true else found

    def __repr__(self) -> str:
        return repr(self.inner)


class TimedObjective(Delegate):
    """``ObjectiveSpec.build`` (incl. θ' instance extraction) timed; the peak before the iterations."""

    def build(self, context):
        objective = self.inner.build(context)
        self.clock.marks["objective_done"] = self.clock.now()
        self.clock.seconds["objective"] = self.clock.marks["objective_done"] - self.clock.marks["labels"]
        self.seen["clusters_used"] = int(context.labels.max()) + 1
        self.clock.peaks["before_iterations"] = self.clock.peak()  # extraction, labeler, objective
        self.clock.reset_peak()
        return objective


class TimedStep(Delegate):
    """``trainer.step`` timed (its wall span per call); keeps the first batch for the AMP check."""

    def __call__(self, trainer, batch):
        if "batch" not in self.seen:
            self.seen["batch"] = (batch.images.detach().cpu(), batch.labels.detach().cpu())
        start = time.perf_counter()
        out = self.inner(trainer, batch)
        self.clock.step_spans.append((start, time.perf_counter()))
        return out


def instrumented(parts, clock: Any, true_labels: np.ndarray | None, seen: dict):
    """``parts`` with the extraction, labeler and objective builder timed (``dataclasses.replace``)."""
    return dataclasses.replace(parts, extraction=TimedExtraction(parts.extraction, clock, seen),
                               labeler=TimedLabeler(parts.labeler, clock, seen, true_labels),
                               objective=TimedObjective(parts.objective, clock, seen))
