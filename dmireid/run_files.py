"""The names of the files in a run folder (``output_dir``), spelled once."""

CONFIG = "config.yaml"
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
METRICS = "metrics.jsonl"
TRAIN_LOG = "train.log"
TENSORBOARD_DIR = "tensorboard"
PSEUDO_LABELS_DIR = "pseudo_labels"
