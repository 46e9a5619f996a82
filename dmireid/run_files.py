"""The names of the files in a run folder (``output_dir``), spelled once, and the run's config file."""

from pathlib import Path

import yaml

CONFIG = "config.yaml"
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
METRICS = "metrics.jsonl"
TRAIN_LOG = "train.log"
TENSORBOARD_DIR = "tensorboard"
PSEUDO_LABELS_DIR = "pseudo_labels"


def write_run_config(values: dict, path: str | Path) -> None:
    """Write a run's resolved config (``Config.to_dict()``) as YAML, keys in their order."""
    Path(path).write_text(yaml.safe_dump(values, sort_keys=False))
