"""dmireid: unsupervised person re-identification (Cluster Contrast and DMI).

Top-level API (imported lazily so that ``import dmireid`` stays light):

- :func:`train` — run training from a :class:`dmireid.config.Config` (assembled by :mod:`dmireid.build`).
- :class:`FeatureExtractor` — embed images with a trained checkpoint.
- :func:`load_dataset` — read a dataset folder into train/query/gallery lists.
- :func:`evaluate` — mAP / CMC / mINP of query against gallery features.
- :func:`load_config` — defaults <- YAML preset <- ``key=value`` overrides.
"""

__version__ = "0.2.0"

_LAZY = {
    "train": ("dmireid.engine", "train"),
    "FeatureExtractor": ("dmireid.embedding", "FeatureExtractor"),
    "load_dataset": ("dmireid.data", "load_dataset"),
    "evaluate": ("dmireid.evaluation", "evaluate"),
    "load_config": ("dmireid.config", "load_config"),
    "Config": ("dmireid.config", "Config"),
    "DmireidError": ("dmireid.errors", "DmireidError"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'dmireid' has no attribute {name!r}")
