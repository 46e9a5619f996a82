"""The cold start, measured before any training (issue 23, point 5).

    python benchmarks/bench_cold_start.py                 # cuhk03_pair1, ImageNet MobileNetV2, 64x32
    python benchmarks/bench_cold_start.py --quick         # a 60/40-identity subset (under a minute)

For the ImageNet start it prints what each label-free correction gives to the first clustering
(clusters, outliers, pair precision, cross-camera share of clusters; Jaccard + DBSCAN at the CPU
budget's eps 0.5, min_samples 4) and to cross-camera mAP / R1 of the test split:

- ``plain``: eval-mode extraction with the ImageNet BatchNorm statistics;
- ``camera_bn``: BatchNorm statistics re-estimated on each camera's images (camera-based BN:
  :func:`dmireid.pseudo_labels.cold_start.camera_bn_features`);
- ``centred``: each camera's mean feature removed, rows renormalised (``camera_centred``);
- ``camera_jaccard``: plain features, the camera-balanced Jaccard (``pseudo_labels.camera_balance``);
- combinations of the above;

and, for derived (identity, camera) tracklets, the precision of the cross-camera mutual-neighbour
links of ``pseudo_labels.tracklets`` on raw and camera-centred tracklet means.
"""

from __future__ import annotations

import sys
import time

import harness  # noqa: I001  (first: this checkout first on the import path, OMP_WAIT_POLICY before torch)
import numpy as np

SHARED = harness.REPOSITORY.parent / "shared"


def parser():
    parser = harness.arguments(__doc__, threads=1, quick="a 60/40-identity subset", json_path=False)
    parser.add_argument("--data", default=str(SHARED / "data" / "cuhk03_pair1"))
    parser.add_argument("--weights", default=str(SHARED / "weights" / "mobilenetv2_100_imagenet.pth"))
    parser.add_argument("--arch", default="timm:mobilenetv2_100")
    parser.add_argument("--eps", type=float, default=0.5)
    return parser


def body(args, report) -> None:
    import torch

    from dmireid.data import load_dataset
    from dmireid.evaluation import evaluate
    from dmireid.models import build_model
    from dmireid.embedding.extract import extract_features
    from dmireid.pseudo_labels import JaccardDBSCAN, camera_spread, label_quality
    from dmireid.pseudo_labels.cold_start import camera_bn_features, camera_centred_features
    from dmireid.pseudo_labels.tracklets import camera_centred, mutual_links, tracklet_means
    from dmireid.data.derived_tracklets import derive_tracklets

    data = load_dataset("market1501", args.data)
    if args.quick:
        keep = lambda samples, n: [s for s in samples if s[1] in sorted({p for _, p, _ in samples})[:n]]  # noqa: E731
        data.train, data.query, data.gallery = keep(data.train, 60), keep(data.query, 40), keep(data.gallery, 40)
    torch.manual_seed(1)
    model = build_model(args.arch, pretrained=args.weights)
    start = time.time()
    extract = lambda samples: extract_features(model, samples, 64, 32, 128, "cpu", 0, progress=False)[0]  # noqa: E731
    test = data.query + data.gallery
    nq = len(data.query)
    feats = {"plain": (extract(data.train), extract(test))}
    feats["camera_bn"] = (camera_bn_features(model, data.train, 64, 32), camera_bn_features(model, test, 64, 32))
    cams_tr = np.array([c for _, _, c in data.train])
    cams_te = np.array([c for _, _, c in test])
    pids_tr = np.array([p for _, p, _ in data.train])
    pids_te = np.array([p for _, p, _ in test])
    for base in ("plain", "camera_bn"):
        tr, te = feats[base]
        feats[f"{base}+centred"] = (camera_centred_features(tr, cams_tr), camera_centred_features(te, cams_te))
    rows = []
    for name, (tr, te) in feats.items():
        metrics = evaluate(te[:nq], te[nq:], pids_te[:nq], pids_te[nq:], cams_te[:nq], cams_te[nq:])
        for balance in (False, True):
            labels = JaccardDBSCAN(eps=args.eps, progress=False, camera_balance=balance)(tr, cameras=cams_tr)
            quality = {**label_quality(labels, pids_tr), **camera_spread(labels, cams_tr)}
            rows.append((name + (" + camera Jaccard" if balance else ""), int(labels.max()) + 1,
                         int((labels < 0).sum()), quality, metrics))
    print(f"cold start on {args.data} ({len(data.train)} train images), ImageNet {args.arch} at 64x32, eps {args.eps}; "
          f"{time.time() - start:.0f} s")
    print(harness.machine_line(harness.machine(args.threads)))
    print("\n| start | clusters | outliers | pair precision | cross-camera clusters | mAP | R1 |\n"
          "|---|---|---|---|---|---|---|")
    for name, clusters, outliers, q, m in rows:
        print(f"| {name} | {clusters} | {outliers} | {100 * q['pair_precision']:.1f} % | "
              f"{100 * q['cluster_cross_camera_share']:.1f} % | {100 * m['mAP']:.1f} | {100 * m['cmc'][0]:.1f} |")
    tracklets = derive_tracklets(data.train)
    num = int(tracklets.max()) + 1
    t_cams = np.zeros(num, dtype=np.int64)
    t_pids = np.zeros(num, dtype=np.int64)
    t_cams[tracklets], t_pids[tracklets] = cams_tr, pids_tr
    print("\n" + harness.machine_line(harness.machine(args.threads)))
    print("\n| features | tracklet means | mutual cross-camera links | correct |\n|---|---|---|---|")
    for name in feats:
        means = tracklet_means(feats[name][0], tracklets, num)
        for centre in (False, True):
            links = mutual_links(camera_centred(means, t_cams) if centre else means, t_cams, -1.0)
            correct = sum(t_pids[a] == t_pids[b] for _, a, b in links)
            print(f"| {name} | {'camera-centred' if centre else 'raw'} | {len(links)} | "
                  f"{correct} ({100 * correct / max(1, len(links)):.1f} %) |")


if __name__ == "__main__":
    sys.exit(harness.main(body, parser()))
