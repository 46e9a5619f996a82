"""The open-set threshold: pair sampling, the estimate against the labelled optimum, ``dmireid
calibrate`` (stored in the checkpoint, everything else kept) and the end-of-training hook."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from gallery_support import tiny_checkpoint

from dmireid.embedding.checkpoint import load_checkpoint
from dmireid.cli import main
from dmireid.config import load_config
from dmireid.engine.hooks import OpenSetHook
from dmireid.errors import DmireidError
from dmireid.evaluation.open_set import (estimate_threshold, match_rates, sample_between_pairs,
                                         sample_within_pairs)
from dmireid import build
from dmireid.embedding import FeatureExtractor, weights_fingerprint
from dmireid.inference import GalleryIndex
from dmireid.pseudo_labels import JaccardDBSCAN


def identity_features(seed: int, identities: int = 150, d: int = 64, cameras: int = 4, noise: float = 1.1):
    """Re-ID-like unit features: identity centre + a per-camera shift (half the centre's length) +
    isotropic noise; 4-15 images per identity. Returns (features N×d float32, identities N)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((identities, d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    shift = 0.5 * rng.standard_normal((cameras, d)) / np.sqrt(d)
    ids = np.repeat(np.arange(identities), rng.integers(4, 16, identities))
    x = centres[ids] + shift[rng.integers(0, cameras, len(ids))] + noise * rng.standard_normal((len(ids), d)) / np.sqrt(d)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), ids


def test_pair_samplers_are_uniform_over_their_pairs():
    labels = np.array([0, 0, 0, 1, 1, -1, 2, 2, 2, 2])
    rng = np.random.default_rng(0)
    i, j = sample_within_pairs(labels, 60_000, rng)
    assert (labels[i] == labels[j]).all() and (i != j).all() and (labels[i] >= 0).all()
    pairs = {(a, b) for a in range(10) for b in range(10) if a < b and labels[a] == labels[b] >= 0}  # the loop form
    counts = {p: 0 for p in pairs}
    for a, b in zip(np.minimum(i, j), np.maximum(i, j)):
        counts[(a, b)] += 1
    expected = 60_000 / len(pairs)  # 10 pairs: 3 + 1 + 6
    assert len(pairs) == 10 and all(abs(c - expected) < 0.06 * expected for c in counts.values())
    i, j = sample_between_pairs(labels, 60_000, rng)
    assert (labels[i] != labels[j]).all() and (labels[i] >= 0).all() and (labels[j] >= 0).all()
    pairs = {(a, b) for a in range(10) for b in range(10) if a < b and labels[a] != labels[b]
             and min(labels[a], labels[b]) >= 0}
    counts = {p: 0 for p in pairs}
    for a, b in zip(np.minimum(i, j), np.maximum(i, j)):
        counts[(a, b)] += 1
    expected = 60_000 / len(pairs)  # 26 pairs
    assert len(pairs) == 26 and all(abs(c - expected) < 0.1 * expected for c in counts.values())


def test_estimate_is_the_quantile_of_between_cluster_distances():
    x, ids = identity_features(3, identities=12, d=16)
    labels = ids.copy()
    labels[::7] = -1  # outliers are left out
    est = estimate_threshold(torch.from_numpy(x), labels, false_match_rate=0.05)
    # the loop form: every pair of clustered images from different clusters
    between = [1.0 - float(x[a] @ x[b]) for a in range(len(x)) for b in range(a + 1, len(x))
               if labels[a] >= 0 and labels[b] >= 0 and labels[a] != labels[b]]
    within = [1.0 - float(x[a] @ x[b]) for a in range(len(x)) for b in range(a + 1, len(x))
              if labels[a] >= 0 and labels[a] == labels[b]]
    # 200k samples: the sampled rate is within ±0.005 of 5 % (10 standard errors)
    assert np.quantile(between, 0.045) <= est["threshold"] <= np.quantile(between, 0.055)
    assert est["estimated_true_match_rate"] == pytest.approx(np.mean(np.array(within) <= est["threshold"]), abs=0.01)
    assert est["num_clusters"] == 12 and est["num_outliers"] == int((labels < 0).sum())
    assert est["between_pairs"] == est["within_pairs"] == 200_000 and est["method"] == "between-cluster quantile"
    with pytest.raises(DmireidError, match="at least 2 clusters"):
        estimate_threshold(x, np.zeros(len(x), int))
    with pytest.raises(DmireidError, match="false_match_rate"):
        estimate_threshold(x, labels, false_match_rate=1.5)


def test_estimate_from_pseudo_labels_is_near_the_labelled_optimum():
    """Pseudo-labels from the training labeler vs the true identities, at a 1 % target.

    Measured (this generator, seeds 0-7, noise 0.9 / 1.1 / 1.3, ~1400 images, 95-145 clusters with
    30-600 outliers): |estimate - labelled optimum| ≤ 0.005 in cosine distance, and the real
    false-match rate at the estimate between 0.96 % and 1.12 %. Tolerances here: twice those
    deviations — 0.01 on the threshold, 1 % ± 0.3 % on the real false-match rate.
    """
    x, ids = identity_features(0)
    labels = JaccardDBSCAN(k1=20, k2=6, eps=0.6, min_samples=4, progress=False)(torch.from_numpy(x))
    assert 80 <= labels.max() + 1 <= 160  # an imperfect clustering: identities split and outliers
    est = estimate_threshold(x, labels, 0.01)
    optimum = estimate_threshold(x, ids, 0.01)  # with the true identities: the labelled optimum
    assert abs(est["threshold"] - optimum["threshold"]) <= 0.01
    real = match_rates(x, ids, [est["threshold"], optimum["threshold"]])
    assert 0.007 <= real[0]["false_match_rate"] <= 0.013
    assert real[1]["false_match_rate"] == pytest.approx(0.01, abs=0.001)
    assert abs(real[0]["true_match_rate"] - real[1]["true_match_rate"]) <= 0.05


@pytest.fixture(scope="module")
def synthetic_ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("calibrate") / "last.pt")


def test_calibrate_stores_the_threshold_and_keeps_the_checkpoint(synthetic_ckpt, synthetic_root, tmp_path, capsys):
    before = load_checkpoint(synthetic_ckpt)
    folder = str(synthetic_root / "bounding_box_test")
    assert main(["calibrate", str(synthetic_ckpt), folder, "--false-match-rate", "0.02", "--quiet"]) == 0
    out = capsys.readouterr().out
    after = load_checkpoint(synthetic_ckpt)
    est = after["open_set"]
    assert f"open-set threshold {est['threshold']:.4f}" in out and f"stored in {synthetic_ckpt}" in out
    assert est["false_match_rate"] == 0.02 and est["estimated_from"] == "calibrate" and est["encoder"] == "online"
    assert est["fingerprint"] == weights_fingerprint(before["model"]) and 0 < est["threshold"] < 2
    assert set(after) == set(before) | {"open_set"} and after["config"] == before["config"]
    assert all(torch.equal(before["model"][k], after["model"][k]) for k in before["model"])
    # the same images and labeler in Python (dry run) give the same estimate
    fx = FeatureExtractor(synthetic_ckpt, device="cpu")
    from dmireid.embedding import collect_image_paths
    from dmireid.inference import calibrate

    labeler = build.labeler(load_config(base=before["config"]), progress=False)  # what the command builds
    again = calibrate(synthetic_ckpt, [folder], labeler, 0.02, write=False)
    assert again["threshold"] == est["threshold"] and again["num_images"] == len(collect_image_paths([folder]))
    # an index built from it takes the threshold; search reports match / unknown against it
    index = GalleryIndex.build(synthetic_ckpt, [folder], tmp_path / "index", device="cpu")
    assert index.threshold == est["threshold"]
    query = collect_image_paths([str(synthetic_root / "query")])[0]
    hits = index.search(query, topk=5)[0]
    distances = 1 - (fx([query]) @ fx([h.path for h in hits]).T).numpy()[0]
    np.testing.assert_allclose([h.distance for h in hits], distances, atol=1e-5)
    assert [h.match for h in hits] == [d <= est["threshold"] for d in distances]
    with pytest.raises(DmireidError, match="not a dmireid checkpoint"):
        torch.save(before["model"], tmp_path / "bare.pt")
        calibrate(tmp_path / "bare.pt", [folder], labeler)


def test_open_set_hook_stores_the_final_encoders_threshold(synthetic_ckpt, synthetic_root, tmp_path):
    """The hook with a stand-in trainer: θ' (when present) embeds the training images, the last
    pseudo-labels give the threshold, last.pt gets it (and nothing else changes)."""
    state = load_checkpoint(synthetic_ckpt)
    cfg = load_config(base=state["config"])
    torch.manual_seed(5)
    momentum = build.model(cfg, for_inference=True).eval()
    run = tmp_path / "run"
    run.mkdir()
    torch.save({**state, "ema_model": momentum.state_dict()}, run / "last.pt")
    from dmireid.data import load_dataset
    from dmireid.embedding import extract_features

    train = load_dataset("market1501", synthetic_root).train
    trainer = SimpleNamespace(ema=SimpleNamespace(module=momentum), unwrapped=None, epoch=1,
                              dataset=SimpleNamespace(train=train),
                              extract=lambda model, samples, description: extract_features(
                                  model, samples, 32, 16, progress=False))
    pids = np.array([pid for _, pid, _ in train])
    hook = OpenSetHook(run, false_match_rate=0.05)
    hook.after_pseudo_labels(trainer, pids)
    trainer.epoch = 2
    hook.after_train(trainer)
    est = load_checkpoint(run / "last.pt")["open_set"]
    features = FeatureExtractor(run / "last.pt", device="cpu")([p for p, _, _ in train])  # θ' by default
    expected = estimate_threshold(features, pids, 0.05)
    assert est["threshold"] == pytest.approx(expected["threshold"], abs=1e-5)
    assert est["encoder"] == "momentum" and est["estimated_from"] == "training (pseudo-labels of epoch 2)"
    assert est["fingerprint"] == weights_fingerprint(momentum.state_dict())
    assert GalleryIndex.build(run / "last.pt", [p for p, _, _ in train[:5]], tmp_path / "i").threshold == est["threshold"]

