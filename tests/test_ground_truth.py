"""The ground_truth labeler (the ceiling of any pseudo-label) and how the trainer calls labelers."""

import numpy as np
import pytest
import torch

from dmireid.errors import DmireidError
from dmireid.pseudo_labels import GroundTruthLabeler, build_labeler, call_labeler


def test_identities_renumbered_by_sorted_id():
    labels = GroundTruthLabeler()(torch.zeros(6, 4), identities=np.array([7, 7, 3, -1, 12, 3]))
    assert labels.tolist() == [1, 1, 0, -1, 2, 0]


def test_no_identities_is_one_line_error():
    with pytest.raises(DmireidError, match="ground_truth: the training set has no identities"):
        GroundTruthLabeler()(torch.zeros(3, 4), identities=np.full(3, -1))
    with pytest.raises(DmireidError, match="no identities"):
        call_labeler(build_labeler("ground_truth"), torch.zeros(3, 4), cameras=np.zeros(3, dtype=np.int64),
                     identities=np.full(3, -1))


def test_call_labeler_passes_only_the_keywords_a_labeler_names():
    seen = {}

    def old_style(features):  # a plug-in written before cameras/identities existed
        seen["old"] = len(features)
        return np.zeros(len(features), dtype=np.int64)

    def with_cameras(features, cameras):
        seen["cameras"] = cameras.tolist()
        return np.zeros(len(features), dtype=np.int64)

    def with_everything(features, **extra):
        seen["extra"] = sorted(extra)
        return np.zeros(len(features), dtype=np.int64)

    x, cams, pids = torch.zeros(3, 2), np.array([0, 1, 1]), np.array([5, 5, 6])
    for labeler in (old_style, with_cameras, with_everything):
        call_labeler(labeler, x, cameras=cams, identities=pids)
    assert seen == {"old": 3, "cameras": [0, 1, 1], "extra": ["cameras", "identities"]}


def test_training_with_ground_truth_uses_the_true_ids(tmp_path):
    """One smoke epoch: the pseudo-labels are the identities, so NMI and pair precision/recall are 1."""
    import json

    from dmireid.config import load_config
    from dmireid.engine import train

    cfg = load_config("smoke", [f"output_dir={tmp_path / 'run'}", f"data.root={tmp_path / 'synth'}",
                                "pseudo_labels.labeler=ground_truth", "train.epochs=1", "train.iters=2"])
    train(cfg, progress=False)
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["num_outliers"] == 0 and record["nmi"] == pytest.approx(1.0)
    assert record["pair_precision"] == pytest.approx(1.0) and record["pair_recall"] == pytest.approx(1.0)
