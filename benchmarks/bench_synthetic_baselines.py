"""How hard is the synthetic dataset? Generation time and untrained baselines.

    python benchmarks/bench_synthetic_baselines.py [--ids 200] [--seeds 0 1 2] [--resnet50]
    python benchmarks/bench_synthetic_baselines.py --quick            # 40 ids, seed 0 (seconds)

Per seed: generates the default synthetic set (num_ids, 6 cameras, 128×64) into a temporary
folder, reports the time, and the mAP / rank-1 of
- raw pixels: images resized to 64×32, flattened, L2-normalised (cosine similarity);
- optionally a randomly initialised torchvision ResNet-50 (eval mode, 128×64, pooled features).
AP is sklearn's ``average_precision_score`` per query after removing gallery images with the
query's pid and camera (the usual protocol), averaged over queries with a true match. This
script is self-contained (it does not use ``dmireid.evaluation``).
"""

from __future__ import annotations

import os
import sys
import tempfile

import harness  # noqa: I001  (first: this checkout first on the import path, OMP_WAIT_POLICY before torch)
import numpy as np
import torch
from PIL import Image
from sklearn.metrics import average_precision_score

from dmireid.data import ImageDataset, build_test_transform, load_dataset, make_synthetic


def pixel_features(samples) -> np.ndarray:
    x = np.stack([np.asarray(Image.open(p).convert("RGB").resize((32, 64), Image.BILINEAR), np.float32).ravel()
                  for p, _, _ in samples])
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def resnet50_features(samples, height=128, width=64) -> np.ndarray:
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.resnet50()
    net.fc = torch.nn.Identity()
    net.eval()
    data = ImageDataset(samples, build_test_transform(height, width))
    out = []
    with torch.no_grad():
        for i in range(0, len(data), 64):
            x = torch.stack([data[j][0] for j in range(i, min(i + 64, len(data)))])
            out.append(torch.nn.functional.normalize(net(x), dim=1))
    return torch.cat(out).numpy()


def map_rank1(qf, gf, query, gallery) -> tuple[float, float]:
    qp, qc = np.array([s[1] for s in query]), np.array([s[2] for s in query])
    gp, gc = np.array([s[1] for s in gallery]), np.array([s[2] for s in gallery])
    sim = qf @ gf.T
    aps, r1 = [], []
    for i in range(len(query)):
        keep = ~((gp == qp[i]) & (gc == qc[i]))
        match = gp[keep] == qp[i]
        if match.any():
            aps.append(average_precision_score(match, sim[i, keep]))
            r1.append(match[np.argmax(sim[i, keep])])
    return float(np.mean(aps)), float(np.mean(r1))


COLUMNS = [harness.Column("seed", "seed"), harness.Column("generate_s", "generated s", ".1f"),
           harness.Column("generate_cpu_s", "CPU s", ".1f"), harness.Column("train", "train"),
           harness.Column("query", "query"), harness.Column("gallery", "gallery"),
           harness.Column("pixels_mAP", "pixels mAP", ".3f"), harness.Column("pixels_R1", "pixels R1", ".3f"),
           harness.Column("resnet50_mAP", "ResNet-50 mAP", ".3f"), harness.Column("resnet50_R1", "ResNet-50 R1", ".3f")]


def parser():
    p = harness.arguments(__doc__, threads=1, quick="40 ids, seed 0 (seconds)")
    p.add_argument("--ids", type=int, default=200)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--resnet50", action="store_true", help="also a random-init ResNet-50 (slow on CPU)")
    return p


def body(args, report) -> None:
    if args.quick:
        args.ids, args.seeds = 40, [0]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            with harness.Timer() as clock:
                root = make_synthetic(os.path.join(tmp, f"s{seed}"), num_ids=args.ids, seed=seed)
            ds = load_dataset("market1501", root)
            row = {"seed": seed, "generate_s": clock.seconds, "generate_cpu_s": clock.cpu_seconds,
                   "train": len(ds.train), "query": len(ds.query), "gallery": len(ds.gallery)}
            row["pixels_mAP"], row["pixels_R1"] = map_rank1(pixel_features(ds.query), pixel_features(ds.gallery),
                                                            ds.query, ds.gallery)
            if args.resnet50:
                row["resnet50_mAP"], row["resnet50_R1"] = map_rank1(resnet50_features(ds.query),
                                                                    resnet50_features(ds.gallery), ds.query, ds.gallery)
            rows.append(row)
    report.table(f"synthetic set of {args.ids} ids: generation time (wall / CPU) and untrained baselines", rows,
                 COLUMNS)


if __name__ == "__main__":
    sys.exit(harness.main(body, parser()))
