"""The three worked examples of docs/extending.md, registered from outside the package, each
training the smoke preset for one epoch."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from dmireid.config import load_config
from dmireid.engine import train
from dmireid.errors import DmireidError

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "plugins"


def one_epoch(tmp_path, *overrides):
    cfg = load_config("smoke", [f"output_dir={tmp_path / 'run'}", f"data.root={tmp_path / 'synth'}",
                                "train.epochs=1", "train.save_pseudo_labels=true", *overrides])
    train(cfg, progress=False)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 1
    return records[0]


def test_custom_objective(tmp_path):
    record = one_epoch(tmp_path, f"plugins=[{EXAMPLES / 'smoothed_cc.py'}]", "method=smoothed_cc",
                       "objective_options.smoothing=0.2")
    assert np.isfinite(record["loss"]) and record["loss"] == pytest.approx(record["loss_smoothed"])
    assert record["num_clusters"] >= 2 and "mAP" in record


def test_custom_labeler(tmp_path):
    record = one_epoch(tmp_path, f"plugins=[{EXAMPLES / 'kmeans_labeler.py'}]", "pseudo_labels.labeler=kmeans",
                       "pseudo_labels.options.num_clusters=6", "pseudo_labels.min_samples=1")
    labels = np.load(tmp_path / "run" / "pseudo_labels" / "epoch_000.npy")
    assert record["num_clusters"] == 6 and record["num_outliers"] == 0
    assert sorted(np.unique(labels)) == list(range(6))  # k-means: every image in one of 6 clusters


def test_unknown_labeler_option_is_one_line(tmp_path):
    with pytest.raises(DmireidError, match=r"pseudo_labels.options.clusters: unknown option\(s\) clusters for "
                                           r"labeler 'kmeans' \(known: num_clusters, seed\)"):
        one_epoch(tmp_path, f"plugins=[{EXAMPLES / 'kmeans_labeler.py'}]", "pseudo_labels.labeler=kmeans",
                  "pseudo_labels.options.clusters=6")


def test_custom_dataset(tmp_path, synthetic_root):
    from dmireid.data import load_dataset

    source = load_dataset("market1501", synthetic_root)
    crops = tmp_path / "crops"
    crops.mkdir()
    with open(crops / "list.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "pid", "camid", "split"])
        for split in ("train", "query", "gallery"):
            for path, pid, camid in getattr(source, split):
                writer.writerow([path, pid, camid, split])
    record = one_epoch(tmp_path, f"plugins=[{EXAMPLES / 'csv_dataset.py'}]", "data.name=csv_list",
                       f"data.root={crops}", "data.options.list_file=list.csv")
    assert record["num_clusters"] >= 2 and "mAP" in record
