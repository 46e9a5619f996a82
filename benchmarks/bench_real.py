"""The real-image protocol: label-free training on real pedestrians, read against its ceiling.

    python benchmarks/bench_real.py --budget cpu                 # the five rows, seed 1 (2-core machine)
    python benchmarks/bench_real.py --budget cpu --seeds 1 2 --rows dmi_ours ground_truth
    python benchmarks/bench_real.py --budget gpu --jobs 1        # the recipe's scale at 256x128 (one GPU)
    python benchmarks/bench_real.py --render a.json b.json        # one table from earlier --json files

Rows (``--rows``; each one ``dmireid train`` in a fresh subprocess, one run folder per row and seed):

- ``imagenet``: the ImageNet weights untrained (``dmireid evaluate --random-init``: training's start);
- ``cc``: Cluster Contrast with its preset's settings (``cc_market1501``: eps 0.6, sequential update);
- ``dmi_recipe``: DMI with the recipe's values (``dmi_market1501``);
- ``dmi_ours``: DMI with our variant of the seven recipe keys (the demo's, docs/reproducing.md);
- ``ground_truth``: ``dmi_ours`` fed the true identities (``pseudo_labels.labeler=ground_truth``), the
  ceiling of any pseudo-label;
- camera-aware rows (issue 18) where the installed dmireid has the keys: ``dmi_camproxy``,
  ``dmi_balance``, ``dmi_both``, ``dmi_infomap``, ``cc_camproxy``;
- tracklet rows (issue 23; (identity, camera) tracklets derived from the labels, no frames):
  ``dmi_tracklets`` (clean), ``dmi_tracklets_noisy`` (fragmented into 2, 5 % switches), ``..._both``
  (+ camera proxies + camera-balanced neighbours), ``dmi_tracklets_naive[_both]`` (issue 23's naive
  rule: DBSCAN, majority cluster per tracklet, an unclustered tracklet its own pseudo-identity),
  ``dmi_tracklets_intra`` (clean, no association: every tracklet trains within its camera only).

The budget (``BUDGETS``) fixes resolution, batch, iterations, epochs, learning rate, eps and the
backbone for every row alike; ``--set key=value`` changes them for every row. Printed: one markdown
table (last epoch mAP / R1 of θ and θ', the last epoch's pseudo-label quality, wall time, peak
memory, the load average), the per-epoch pseudo-label quality of each row, and the same as JSON
(``--json``). The data and weights default to ``../shared`` beside the checkout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import harness

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

# The settings every row of a budget shares (chosen and measured: docs/real_images.md).
BUDGETS = {
    "cpu": ["data.height=64", "data.width=32", "train.batch_size=64", "data.num_instances=4", "train.iters=40",
            "train.epochs=8", "train.step_size=100", "train.lr=0.001", "train.schedule=single",
            "pseudo_labels.eps=0.5", "memory.ema_momentum=0.99", "data.num_workers=1", "train.eval_every=100",
            "memory.mip_instances=4"],
    "tiny": ["data.height=64", "data.width=32", "train.batch_size=16", "data.num_instances=4", "train.iters=2",
             "train.epochs=1", "train.schedule=single", "pseudo_labels.eps=0.6", "data.num_workers=0",
             "train.eval_every=100", "memory.mip_instances=4", "model.bn_group_size=0"],
    "gpu": ["data.height=256", "data.width=128", "train.batch_size=256", "data.num_instances=16", "train.iters=100",
            "train.epochs=30", "train.step_size=20", "train.lr=0.00035", "train.schedule=single",
            "data.num_workers=8", "train.eval_every=100"],
}
BUDGET_NAMES = {"cpu": "CPU budget", "tiny": "tiny budget (a code check, not a measurement)", "gpu": "GPU budget"}


def budget_words(budget: str, overrides: list[str] = ()) -> str:
    """The budget line of the table, from the settings that actually ran (``BUDGETS`` + ``--set``)."""
    s = dict(item.split("=", 1) for item in [*BUDGETS[budget], *overrides] if "=" in item)
    get = lambda key, default="?": s.get(key, default)  # noqa: E731
    batch, instances = int(get("train.batch_size", 0)), int(get("data.num_instances", 1))
    step, epochs = get("train.step_size", "none"), get("train.epochs")
    decay = f" (x0.1 every {step} epochs)" if step != "none" and int(step) < int(epochs) else ""
    words = (f"{BUDGET_NAMES[budget]}: {get('data.height')}x{get('data.width')}, {epochs} epochs x "
             f"{get('train.iters')} iterations x {batch} images ({batch // instances}x{instances}), "
             f"lr {get('train.lr', '3.5e-4')}{decay}, eps {get('pseudo_labels.eps', 'preset')}, "
             f"EMA {get('memory.ema_momentum', 'preset')}, K_mip {get('memory.mip_instances', 'preset')}")
    extra = [item for item in overrides if "=" in item]
    return words + (f"; --set {' '.join(extra)}" if extra else "")
OURS = ["data.camera_rule=spread", "data.erasing=torchvision", "memory.dcp_margins=[0.0,0.0]",
        "memory.mip_source=momentum", "memory.ema_forward=eval", "memory.ema_buffers=true"]
TRACKLETS = ["data.options.tracklets=identity_camera", "data.options.tracklet_frames=none",
             "pseudo_labels.tracklets=true", "pseudo_labels.tracklet_level=none",
             "memory.single_camera_clusters=own_camera"]
NOISY = ["data.options.tracklet_fragments=2", "data.options.tracklet_switches=0.05"]
NAIVE = ["pseudo_labels.tracklet_level=image", "pseudo_labels.tracklet_association=none",
         "pseudo_labels.tracklet_noise=own", "memory.single_camera_clusters=global"]
CAMERA = ["memory.camera_proxies=true", "pseudo_labels.camera_balance=true"]
ROWS = {
    "imagenet": ("dmi_market1501", None),
    "cc": ("cc_market1501", []),
    "dmi_recipe": ("dmi_market1501", []),
    "dmi_ours": ("dmi_market1501", OURS),
    "ground_truth": ("dmi_market1501", OURS + ["pseudo_labels.labeler=ground_truth"]),
    "dmi_camproxy": ("dmi_market1501", OURS + ["memory.camera_proxies=true"]),
    "dmi_balance": ("dmi_market1501", OURS + ["pseudo_labels.camera_balance=true"]),
    "dmi_both": ("dmi_market1501", OURS + ["memory.camera_proxies=true", "pseudo_labels.camera_balance=true"]),
    "dmi_infomap": ("dmi_market1501", OURS + ["pseudo_labels.labeler=infomap"]),
    "cc_camproxy": ("cc_market1501", ["memory.camera_proxies=true"]),
    # tracklets (issue 23): derived (identity, camera) tracklets of the labelled set, no frames
    "dmi_tracklets": ("dmi_market1501", OURS + TRACKLETS),
    "dmi_tracklets_noisy": ("dmi_market1501", OURS + TRACKLETS + NOISY),
    "dmi_tracklets_naive": ("dmi_market1501", OURS + TRACKLETS + NAIVE),
    "dmi_tracklets_both": ("dmi_market1501", OURS + TRACKLETS + CAMERA),
    "dmi_tracklets_noisy_both": ("dmi_market1501", OURS + TRACKLETS + NOISY + CAMERA),
    "dmi_tracklets_naive_both": ("dmi_market1501", OURS + TRACKLETS + NAIVE + CAMERA),
    "dmi_tracklets_intra": ("dmi_market1501", OURS + TRACKLETS + ["pseudo_labels.tracklet_association=none"]),
}
DEFAULT_ROWS = ["imagenet", "cc", "dmi_recipe", "dmi_ours", "ground_truth"]
QUALITY = ("num_clusters", "num_outliers", "nmi", "pair_precision", "pair_recall", "cluster_cross_camera_share",
           "cluster_cameras_mean", "tracklets_clustered", "tracklets_associated", "tracklet_cross_camera_pairs",
           "tracklet_cross_camera_pairs_correct")


def market_subset(source: Path, target: Path, train_ids: int, test_ids: int) -> Path:
    """A Market-layout folder of symbolic links to the first ``train_ids`` / ``test_ids`` identities of
    ``source`` (nothing is copied: the images stay where they are)."""
    for split, keep in (("bounding_box_train", train_ids), ("query", test_ids), ("bounding_box_test", test_ids)):
        files = sorted((source / split).glob("*.jpg"))
        wanted = sorted({f.name.split("_")[0] for f in files if not f.name.startswith("-")})[:keep]
        (target / split).mkdir(parents=True, exist_ok=True)
        for f in files:
            if f.name.split("_")[0] in wanted and not (target / split / f.name).exists():
                (target / split / f.name).symlink_to(f.resolve())
    return target


def row_command(args, row: str, seed: int, run_dir: Path) -> list[str]:
    preset, extra = ROWS[row]
    common = [f"device={args.device}", "data.name=market1501", f"data.root={args.data}", f"model.arch={args.arch}",
              f"model.pretrained={args.weights}", f"train.seed={seed}", *BUDGETS[args.budget], *args.set]
    if extra is None:  # untrained: evaluate the weights training starts from
        return ["evaluate", "--random-init", "--quiet", "--config", preset, "--json", str(run_dir / "metrics.json"),
                *common]
    return ["train", "--no-progress", "--config", preset, f"output_dir={run_dir}", *common, *extra]


def run_row(args, row: str, seed: int) -> dict:
    run_dir = Path(args.out) / f"{row}_seed{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "dmireid", *row_command(args, row, seed, run_dir)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "OMP_WAIT_POLICY": "PASSIVE",
           "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    load_before = os.getloadavg()[0]
    done = harness.run_process(command, env=env, cwd=REPO, interval=0.5)  # peak RSS of dmireid's process tree
    (run_dir / "stdout.log").write_text(done.stdout + done.stderr)
    result = {"row": row, "seed": seed, "seconds": done.seconds,
              "load": round((load_before + os.getloadavg()[0]) / 2, 1), "run_dir": str(run_dir)}
    if done.returncode != 0:
        lines = (done.stdout + done.stderr).strip().splitlines()
        return {**result, "error": lines[-1] if lines else f"exit {done.returncode}"}
    result["peak_mb"] = done.peak_rss_bytes / harness.MIB
    if ROWS[row][1] is None:
        metrics = json.loads((run_dir / "metrics.json").read_text())
        return {**result, "last": {**metrics, **{f"{k}_ema": v for k, v in metrics.items()}}, "epochs": []}
    epochs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {**result, "last": epochs[-1], "epochs": [{k: e.get(k) for k in ("epoch", *QUALITY) if k in e}
                                                     for e in epochs]}


def percent(value) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def markdown(results: list[dict], budget: str, overrides: list[str] = ()) -> str:
    lines = [budget_words(budget, overrides), "",
             "| row | seed | mAP θ | R1 θ | mAP θ' | R1 θ' | clusters | outliers | NMI | pair P | pair R | "
             "cross-cam clusters | wall | peak MB | load |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['row']} | {r['seed']} | error: {r['error']} |" + " |" * 13)
            continue
        last = r["last"]
        quality = [str(last.get("num_clusters", "–")), str(last.get("num_outliers", "–")), percent(last.get("nmi")),
                   percent(last.get("pair_precision")), percent(last.get("pair_recall")),
                   percent(last.get("cluster_cross_camera_share"))]
        lines.append("| " + " | ".join([r["row"], str(r["seed"]), percent(last.get("mAP")), percent(last.get("rank1")),
                                        percent(last.get("mAP_ema")), percent(last.get("rank1_ema")), *quality,
                                        f"{r['seconds'] / 60:.1f} min", f"{r['peak_mb']:.0f}",
                                        f"{r['load']:.1f}"]) + " |")
    lines += ["", "Pseudo-labels per epoch (clusters / outliers / NMI / pair precision / pair recall / "
              "cross-camera share of clusters):", ""]
    for r in results:
        if r.get("epochs"):
            cells = [f"e{e['epoch'] + 1}: {e.get('num_clusters')}/{e.get('num_outliers')}/{percent(e.get('nmi'))}/"
                     f"{percent(e.get('pair_precision'))}/{percent(e.get('pair_recall'))}/"
                     f"{percent(e.get('cluster_cross_camera_share'))}"
                     + tracklet_words(e) for e in r["epochs"]]
            lines.append(f"- {r['row']} seed {r['seed']}: " + "; ".join(cells))
    return "\n".join(lines)


def tracklet_words(epoch: dict) -> str:
    """`` (tracklets clustered C, associated A, cross-camera tracklet pairs correct k/n)`` where recorded."""
    words = [f"{label} {epoch[key]}" for key, label in (("tracklets_clustered", "tracklets clustered"),
                                                        ("tracklets_associated", "associated")) if key in epoch]
    if epoch.get("tracklet_cross_camera_pairs") is not None:
        words.append(f"cross-camera tracklet pairs correct {epoch['tracklet_cross_camera_pairs_correct']}/"
                     f"{epoch['tracklet_cross_camera_pairs']}")
    return f" ({', '.join(words)})" if words else ""


def parse_args(argv=None) -> argparse.Namespace:
    parser = harness.arguments(__doc__, threads=1, quick="the tiny subset form: --budget tiny --subset 24 16 "
                               "--rows dmi_recipe (a code check in seconds)", json_path=False)
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="cpu")
    parser.add_argument("--data", default=str(SHARED / "data" / "cuhk03_pair1"), help="a Market-layout folder")
    parser.add_argument("--weights", default=str(SHARED / "weights" / "mobilenetv2_100_imagenet.pth"))
    parser.add_argument("--arch", default="timm:mobilenetv2_100")
    parser.add_argument("--rows", nargs="*", default=DEFAULT_ROWS, choices=sorted(ROWS))
    parser.add_argument("--seeds", nargs="*", type=int, default=[1])
    parser.add_argument("--jobs", type=int, default=2, help="rows run at once (each with --threads threads)")
    parser.add_argument("--set", nargs="*", default=[], help="key=value overrides for every row")
    parser.add_argument("--out", default="runs/bench_real")
    parser.add_argument("--json", help="write the results here as JSON")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--subset", nargs=2, type=int, metavar=("TRAIN_IDS", "TEST_IDS"),
                        help="use only the first identities of the data (links in OUT/subset, nothing copied)")
    args = parser.parse_args(argv)
    if args.quick:
        args.budget, args.subset, args.rows, args.jobs = "tiny", [24, 16], ["dmi_recipe"], 1
    return args


def run_protocol(args: argparse.Namespace) -> list[dict]:
    """Every (seed, row) of ``args``, ``args.jobs`` at a time; the results in that order."""
    for path, what in ((args.data, "--data"), (args.weights, "--weights")):
        if not Path(path).exists():
            raise SystemExit(f"bench_real: {what} {path} does not exist (the real images and weights live in "
                             f"../shared beside the checkout)")
    args.data, args.weights = str(Path(args.data).resolve()), str(Path(args.weights).resolve())
    if args.subset:
        args.data = str(market_subset(Path(args.data), Path(args.out).resolve() / "subset", *args.subset))
    tasks = [(row, seed) for seed in args.seeds for row in args.rows]
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        return list(pool.map(lambda task: run_row(args, *task), tasks))


def report(args: argparse.Namespace, results: list[dict]) -> str:
    """The markdown table (and ``args.json``, when set)."""
    if args.json:
        Path(args.json).write_text(json.dumps({"budget": args.budget, "settings": BUDGETS[args.budget] + args.set,
                                               "data": args.data, "arch": args.arch, "results": results}, indent=1))
    return markdown(results, args.budget, args.set)


def real_check(argv: list[str]) -> int:
    """``gpu_check.py --real DATA --weights FILE [--tiny] [--device D] [--out DIR] [--minutes 8]``.

    Runs the protocol at ``--budget gpu`` on one device, one row at a time: ``dmi_recipe`` first, then
    ``cc`` and ``ground_truth`` while the time left (``--minutes``, default 8) exceeds the slowest
    row so far; prints the same table as bench_real. ``--tiny`` is the code path in seconds (a
    24/16-identity subset at the tiny budget): what CI runs with ``--device cpu``.

    What a lent GPU machine needs beside the checkout (64 MiB in all): the data folder (cuhk03_pair1,
    40 MB), the weight file (mobilenetv2_100_imagenet.pth, 9 MB) and, where its image has no timm,
    the wheels ``pip download --no-deps -d wheels timm==1.0.31 huggingface_hub safetensors`` (~4 MB)
    installed there with ``pip install --no-index wheels/*``. Link or copy them into a git-ignored
    folder of the checkout (for example ``shared/``, which the device tool carries) and pass
    ``--real shared/data/cuhk03_pair1 --weights shared/weights/mobilenetv2_100_imagenet.pth``.
    """
    parser = argparse.ArgumentParser(prog="gpu_check.py --real")
    parser.add_argument("--real", required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--arch", default="timm:mobilenetv2_100")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--minutes", type=float, help="time for the rows (default 8; --tiny: 0.5, one row)")
    parser.add_argument("--out", default=None)
    parser.add_argument("--set", nargs="*", default=[])
    given, _ = parser.parse_known_args(argv)
    minutes = given.minutes if given.minutes is not None else 0.5 if given.tiny else 8.0
    out = Path(given.out or tempfile.mkdtemp(prefix="gpu_check_real-")) / "bench_real"
    args = parse_args(["--budget", "tiny" if given.tiny else "gpu", "--data", given.real, "--weights", given.weights,
                       "--arch", given.arch, "--device", given.device, "--jobs", "1", "--threads", "4",
                       "--out", str(out), "--json", str(out / "bench_real.json"), "--set", *given.set,
                       *(["--subset", "24", "16"] if given.tiny else [])])
    start, results = time.time(), []
    for row in ("dmi_recipe", "cc", "ground_truth"):
        slowest = max((r["seconds"] for r in results), default=0.0)
        if results and time.time() - start + slowest > 60 * minutes:
            break
        args.rows = [row]
        results += run_protocol(args)
    print(harness.machine_line(harness.machine(args.threads)) + "\n")
    print(report(args, results))
    return 1 if any("error" in r for r in results) else 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--render"]:  # print the table of earlier --json files together
        files = [json.loads(Path(f).read_text()) for f in argv[1:]]
        overrides = files[0].get("settings", [])[len(BUDGETS[files[0]["budget"]]):]
        print(markdown([r for f in files for r in f["results"]], files[0]["budget"], overrides))
        return 0
    args = parse_args(argv)
    results = run_protocol(args)
    print(harness.machine_line(harness.machine(args.threads)) + "\n")
    print(report(args, results))
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
