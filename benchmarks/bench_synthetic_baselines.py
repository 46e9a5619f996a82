"""How hard is the synthetic dataset? Generation time and untrained baselines.

    python benchmarks/bench_synthetic_baselines.py [--ids 200] [--seeds 0 1 2] [--resnet50]

Per seed: generates the default synthetic set (num_ids, 6 cameras, 128×64) into a temporary
folder, reports the time, and the mAP / rank-1 of
- raw pixels: images resized to 64×32, flattened, L2-normalised (cosine similarity);
- optionally a randomly initialised torchvision ResNet-50 (eval mode, 128×64, pooled features).
AP is sklearn's ``average_precision_score`` per query after removing gallery images with the
query's pid and camera (the usual protocol), averaged over queries with a true match. This
script is self-contained (it does not use ``dmireid.evaluation``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn.metrics import average_precision_score  # noqa: E402

from dmireid.data import ImageDataset, build_test_transform, load_dataset, make_synthetic  # noqa: E402


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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", type=int, default=200)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--resnet50", action="store_true", help="also a random-init ResNet-50 (slow on CPU)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            start, cpu = time.perf_counter(), time.process_time()
            root = make_synthetic(os.path.join(tmp, f"s{seed}"), num_ids=args.ids, seed=seed)
            elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
            ds = load_dataset("market1501", root)
            line = (f"seed {seed}: generated in {elapsed:.1f}s wall / {cpu:.1f}s CPU ({len(ds.train)} train / {len(ds.query)} query / "
                    f"{len(ds.gallery)} gallery); raw pixels mAP {{:.3f}} R1 {{:.3f}}")
            line = line.format(*map_rank1(pixel_features(ds.query), pixel_features(ds.gallery), ds.query, ds.gallery))
            if args.resnet50:
                line += " | random ResNet-50 mAP {:.3f} R1 {:.3f}".format(
                    *map_rank1(resnet50_features(ds.query), resnet50_features(ds.gallery), ds.query, ds.gallery))
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
