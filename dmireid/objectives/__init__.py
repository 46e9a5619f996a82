"""Training objectives (memories + losses) as plug-ins: ``method=NAME`` picks a registered one.

    Objective                      base class: build(context) / loss(f, y) / update(f, f_m, y)
    ObjectiveContext               what the engine gives ``build`` each epoch
    register_objective(name, cls)  add one (from a plug-in module listed in ``plugins``)
    get_objective(name)            the registered class
    check_objective_options(name, options) ; build_objective(cls, context)   # options = build's keywords
    ClusterContrast ("cc"), DMI ("dmi")

Where DMI differs from Cluster Contrast is :mod:`dmireid.objectives.dmi` alone.
"""

from .base import (OBJECTIVES, Objective, ObjectiveContext, build_objective, check_objective_options, get_objective,
                   register_objective)
from .cc import ClusterContrast
from .dmi import DMI

__all__ = ["OBJECTIVES", "Objective", "ObjectiveContext", "register_objective", "get_objective",
           "build_objective", "check_objective_options", "ClusterContrast", "DMI"]
