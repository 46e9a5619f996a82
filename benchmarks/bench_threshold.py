"""The open-set threshold on labelled test images: the real false/true-match rates it gives.

    python benchmarks/bench_threshold.py runs/x/last.pt --data ../shared/data/cuhk03_pair1
    python benchmarks/bench_threshold.py runs/demo/last.pt --data data/synthetic --false-match-rate 0.001 0.01 0.05
    python benchmarks/bench_threshold.py --quick     # trains a 1-epoch smoke run on a small synthetic set first

On the test identities (query ∪ gallery of a Market-layout folder; pid 0 distractors and junk
left out), with the checkpoint's encoder (θ' when it has one), for each target false-match rate:

- ``checkpoint``: the threshold stored in the checkpoint (``open_set``: estimated at the end of
  training on the *training* images' clusters, or by ``dmireid calibrate``), when it was made with
  these weights — used at its own target only;
- ``test clusters``: estimated without labels on the test images themselves (clustered with the
  checkpoint's labeler, as ``dmireid calibrate`` does);
- ``labelled optimum``: the threshold that meets the target on the true different-identity pairs
  (the best any label-free estimate can do).

Rates are measured on sampled pairs of test images, uniform over pairs (``--pairs`` of each kind):
false-match rate = share of different-identity pairs at a distance ≤ threshold, true-match rate =
share of same-identity pairs ≤ threshold. Distances: cosine, 1 - <a, b> of unit features.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import harness  # noqa: I001  (first: this checkout first on the import path, OMP_WAIT_POLICY before torch)
import numpy as np

from dmireid.embedding.checkpoint import load_checkpoint
from dmireid.config import load_config
from dmireid.data import load_dataset
from dmireid.evaluation.open_set import estimate_threshold, match_rates
from dmireid.embedding import FeatureExtractor, weights_fingerprint
from dmireid.pseudo_labels import call_labeler
from dmireid import build


def test_features(extractor: FeatureExtractor, dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit features, pids and camera ids of the query ∪ gallery images with a pid > 0."""
    samples = [s for s in dataset.query + dataset.gallery if s[1] > 0]
    features = extractor([path for path, _, _ in samples], progress=True).numpy()
    return features, np.array([pid for _, pid, _ in samples]), np.array([cam for _, _, cam in samples])


def quick_checkpoint(folder: Path) -> tuple[str, str]:
    """(last.pt of a 1-epoch smoke run, its Market-layout synthetic folder) made in ``folder``."""
    from dmireid.engine import train

    root = folder / "synthetic"  # the smoke preset's 24 ids, generated here
    train(load_config("smoke", [f"output_dir={folder / 'run'}", f"data.root={root}", "train.epochs=1"]),
          progress=False)
    return str(folder / "run" / "last.pt"), str(root)


def main() -> int:
    p = harness.arguments(__doc__, threads=None, json_path=False,
                          quick="train a 1-epoch smoke run on 24 synthetic ids first and measure its checkpoint")
    p.add_argument("checkpoint", nargs="?", help="a checkpoint (not with --quick)")
    p.add_argument("--data", help="a Market-layout folder (query/, bounding_box_test/)")
    p.add_argument("--dataset", default="market1501", help="the loader of that folder")
    p.add_argument("--false-match-rate", type=float, nargs="+", default=[0.01])
    p.add_argument("--encoder", choices=["online", "momentum"])
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--pairs", type=int, default=1_000_000, help="sampled pairs of each kind for the rates")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    harness.set_threads(args.threads)
    if args.quick:
        with tempfile.TemporaryDirectory(prefix="bench_threshold-") as tmp:
            args.checkpoint, args.data = quick_checkpoint(Path(tmp))
            args.pairs = min(args.pairs, 100_000)
            return measure(args)
    if not args.checkpoint or not args.data:
        p.error("a checkpoint and --data are needed (or --quick)")
    return measure(args)


def measure(args) -> int:

    state = load_checkpoint(args.checkpoint)
    extractor = FeatureExtractor(state, device=args.device, batch_size=args.batch_size, encoder=args.encoder,
                                 source=args.checkpoint)
    fingerprint = weights_fingerprint(extractor.model.state_dict())
    start = time.time()
    features, pids, cameras = test_features(extractor, load_dataset(args.dataset, args.data))
    print(f"{args.checkpoint} ({extractor.encoder} encoder): {len(pids)} test images of {len(np.unique(pids))} "
          f"identities embedded in {time.time() - start:.0f} s")
    labels = call_labeler(build.labeler(load_config(base=state["config"]), device=extractor.device), features,
                          cameras=cameras, identities=None) if "config" in state else None
    stored = state.get("open_set") if isinstance(state.get("open_set"), dict) else None
    if stored is not None and stored.get("fingerprint") != fingerprint:
        print("the checkpoint's stored threshold was made with other weights: left out")
        stored = None
    if labels is not None:
        print(f"test clusters (no labels): {int(labels.max()) + 1} clusters, {int((labels < 0).sum())} outliers")
    results = []
    print("\n" + harness.machine_line(harness.machine(args.threads)))
    print(f"{'target FMR':>10}  {'threshold from':<18} {'threshold':>9} {'real FMR':>9} {'real TMR':>9}"
          f" {'TMR gap':>8}")
    for rate in args.false_match_rate:
        candidates = {"labelled optimum": estimate_threshold(features, pids, rate)["threshold"]}
        if labels is not None:
            candidates["test clusters"] = estimate_threshold(features, labels, rate)["threshold"]
        if stored is not None and abs(stored.get("false_match_rate", -1) - rate) < 1e-12:
            candidates["checkpoint"] = stored["threshold"]
        names = [n for n in ("checkpoint", "test clusters", "labelled optimum") if n in candidates]
        measured = match_rates(features, pids, [candidates[n] for n in names], max_pairs=args.pairs)
        best = measured[-1]["true_match_rate"]
        for name, m in zip(names, measured):
            print(f"{100 * rate:>9.2f}%  {name:<18} {m['threshold']:>9.4f} {100 * m['false_match_rate']:>8.2f}% "
                  f"{100 * m['true_match_rate']:>8.1f}% {100 * (m['true_match_rate'] - best):>+7.1f}")
            results.append({"target": rate, "source": name, **m})
    if stored is not None:
        print(f"\nstored threshold: {stored['threshold']:.4f} at {100 * stored['false_match_rate']:.2f}% "
              f"({stored.get('estimated_from')})")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
