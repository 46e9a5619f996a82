"""``dmireid`` command line: a thin layer that parses arguments and calls the library.

Commands: train, evaluate, make-synthetic, check-data, extract, search, cluster, export, visualize,
index (build, add, remove, rebuild, info, search: :mod:`dmireid.cli_index`), calibrate (:mod:`dmireid.cli_calibrate`), serve (:mod:`dmireid.cli_serve`), crops and make-video (:mod:`dmireid.cli_tracking`).
User errors print one line (``dmireid: error: ...``) and exit with status 2.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP (2-core machines)

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from .cli_index import add_index_parsers  # noqa: E402
from .cli_tracking import add_export_target_options, add_tracking_parsers  # noqa: E402
from .errors import DmireidError  # noqa: E402
from .logs import setup_logging  # noqa: E402

log = logging.getLogger("dmireid")


# ------------------------------------------------------------------------------------- train
def cmd_train(args) -> int:
    from .config import load_config
    from .engine import train

    config, overrides = args.config, list(args.overrides)
    if args.resume:
        saved = Path(args.resume) / "config.yaml"
        if not saved.is_file():
            raise DmireidError(f"--resume {args.resume}: no config.yaml there (is it a dmireid run folder?)")
        config = config or saved
        overrides = [f"output_dir={args.resume}", *overrides]
    elif config is None:
        config = "demo"
    from .progress import logging_redirect

    cfg = load_config(config, overrides)
    setup_logging(Path(cfg.output_dir))
    with logging_redirect():
        results = train(cfg, resume=args.resume, progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) == 0:
        print(format_results(results))
    return 0


def format_results(results: dict) -> str:
    """The final table: mAP/R1/R5/R10 of θ and θ' (last epoch) and the best-on-test epoch."""
    last, best = results["last"], results["best_on_test"]
    rows = []
    for suffix, name in (("", "online (θ)"), ("_ema", "momentum (θ')")):
        if f"mAP{suffix}" in last:
            rows.append(f"{name:<16}" + "".join(f"{100 * last[f'{k}{suffix}']:>8.1f}"
                                                for k in ("mAP", "rank1", "rank5", "rank10")))
    lines = [f"Results after epoch {last.get('epoch', -1) + 1} (last epoch)",
             f"{'encoder':<16}{'mAP':>8}{'R1':>8}{'R5':>8}{'R10':>8}", *rows]
    if not rows:
        lines.append("(not evaluated: the dataset has no query/gallery)")
    if best.get("epoch", -1) >= 0:
        lines.append(f"best on test (selected on the test set, for reference only): mAP {100 * best['mAP']:.1f} "
                     f"at epoch {best['epoch'] + 1}, {best['encoder']} encoder")
    lines.append(f"run folder: {results['run_dir']}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- data
def cmd_make_synthetic(args) -> int:
    from .data import load_dataset, make_synthetic

    out = make_synthetic(args.out, num_ids=args.ids, num_cameras=args.cameras, seed=args.seed,
                         height=args.height, width=args.width)
    print(load_dataset("market1501", out).statistics_table())
    print(f"wrote {out}")
    return 0


def _dataset_options(items: list[str]) -> dict:
    """``["boxes=detected", "split_seed=3"]`` -> ``{"boxes": "detected", "split_seed": 3}`` (YAML scalars)."""
    import yaml

    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise DmireidError(f"dataset option {item!r} is not of the form option=value")
        try:
            options[key.strip()] = yaml.safe_load(value) if value.strip() else value
        except yaml.YAMLError:
            options[key.strip()] = value
    return options


def cmd_check_data(args) -> int:
    from .data import check_images, load_dataset

    dataset = load_dataset(args.name, args.root, **_dataset_options(args.overrides))
    print(dataset.statistics_table())
    paths = sorted({s[0] for s in dataset.train + dataset.query + dataset.gallery})
    bad = check_images(paths)
    for path, reason in bad:
        print(f"unreadable: {path}: {reason}")
    print(f"{len(paths) - len(bad)} of {len(paths)} images decode")
    return 1 if bad else 0


# ------------------------------------------------------------------------------------- evaluate
def cmd_evaluate(args) -> int:
    from . import build
    from .embedding.checkpoint import CONFIG_KEY, load_checkpoint
    from .config import load_config
    from .devices import resolve_device
    from .embedding import evaluate_model, load_encoder

    if args.checkpoint and "=" in args.checkpoint and not Path(args.checkpoint).exists():
        args.overrides, args.checkpoint = [args.checkpoint, *args.overrides], None  # a key=value, not a file
    if bool(args.checkpoint) == bool(args.random_init):
        raise DmireidError("evaluate needs a CHECKPOINT or --random-init (not both)")
    _import_plugins(args)
    state = None
    if args.checkpoint:
        state = load_checkpoint(args.checkpoint)
        if CONFIG_KEY not in state:
            raise DmireidError(f"{args.checkpoint} is not a dmireid checkpoint (no config inside)")
        # parsing only: the objective and labeler of the run (maybe a plug-in's) are not needed
        cfg = load_config(args.config, args.overrides, base=state[CONFIG_KEY], check_plugins=False)
    else:
        cfg = load_config(args.config or "demo", args.overrides, check_plugins=False)
    setup_logging(quiet=args.quiet)
    if state is not None:  # the encoder choice of FeatureExtractor: momentum when the file has one
        model = load_encoder(state, args.encoder, args.checkpoint)[0]
    else:
        model = build.initial_model(cfg)  # random init = training's start (seeded with train.seed)
    device = resolve_device(cfg.device)
    dataset = build.dataset(cfg, name=args.dataset, root=args.root)
    ex = build.extraction(cfg)
    metrics = evaluate_model(model.to(device), dataset, ex.height, ex.width, device, ex.batch_size, ex.num_workers,
                             progress=not args.quiet, rerank=args.rerank)
    print(f"{'mAP':>8}{'R1':>8}{'R5':>8}{'R10':>8}{'mINP':>8}")
    print("".join(f"{100 * metrics[k]:>8.1f}" for k in ("mAP", "rank1", "rank5", "rank10", "mINP")))
    if args.json:
        Path(args.json).write_text(json.dumps(metrics, indent=2))
    return 0


def _import_plugins(args) -> None:
    """The model-use commands import plug-ins only when named (``--plugins``): a checkpoint never runs code."""
    from .registry import import_plugins

    import_plugins(getattr(args, "plugins", None) or [])


# ------------------------------------------------------------------------------------- using a model
def _extractor(args):
    from .embedding import FeatureExtractor

    _import_plugins(args)
    return FeatureExtractor(args.checkpoint, device=args.device, batch_size=args.batch_size, encoder=args.encoder,
                            flip=getattr(args, "flip", False), num_workers=args.num_workers)


def cmd_extract(args) -> int:
    from .embedding import collect_image_paths, embed_files, skipped_note
    from .inference import save_features

    paths = collect_image_paths(args.images)
    extractor = _extractor(args)
    embedded = embed_files(extractor, paths, args.skip_unreadable, progress=not args.quiet)
    save_features(args.out, embedded.paths, embedded.features, extractor.settings(), embedded.skipped)
    print(f"wrote {args.out}: {len(embedded.paths)} images x {extractor.feature_dim} features "
          f"({extractor.encoder} encoder)")
    if embedded.skipped:
        print(f"{skipped_note(embedded.skipped)} (all listed in the file's 'skipped' array)")
    return 0


def cmd_search(args) -> int:
    from .embedding import collect_image_paths, skipped_note
    from .inference import check_compatible, load_features, search

    extractor, gallery_features = _extractor(args), None
    if len(args.gallery) == 1 and args.gallery[0].endswith(".npz"):
        gallery, gallery_features, settings = load_features(args.gallery[0])
        check_compatible(settings, extractor, args.gallery[0])
    else:
        gallery = collect_image_paths(args.gallery)
    result = search(extractor, collect_image_paths(args.query), gallery, gallery_features,
                    topk=args.topk, progress=not args.quiet, skip_unreadable=args.skip_unreadable)
    if args.out:
        print(f"wrote {result.save(args.out)}")
    else:
        print(result.format())
    if result.skipped:
        print(f"{skipped_note(result.skipped)}; all of them: " + ", ".join(result.skipped))
    return 0


def cmd_cluster(args) -> int:
    from .inference import cluster_folder

    given = {k: v for k, v in (("eps", args.eps), ("k1", args.k1), ("k2", args.k2), ("min_samples", args.min_samples))
             if v is not None}  # the others: cluster_folder's defaults, which are training's
    result = cluster_folder(_extractor(args), args.folder, args.out, progress=not args.quiet,
                            skip_unreadable=args.skip_unreadable, **given)
    print(result.summary())
    listed = f", the unreadable files in {result.unreadable}" if result.unreadable else ""
    print(f"wrote {result.csv} and {len(result.sheets)} contact sheet(s) in {args.out}{listed}")
    return 0


def cmd_export(args) -> int:
    from .embedding import FeatureExtractor
    from .inference import check_onnx, export_onnx, onnx_opset

    _import_plugins(args)
    extractor = FeatureExtractor(args.checkpoint, device="cpu", encoder=args.encoder)
    path = export_onnx(extractor, args.onnx, opset=args.opset, height=args.height, width=args.width,
                       dynamo=args.dynamo)
    height, width = args.height or extractor.height, args.width or extractor.width
    print(f"wrote {path}: input 'images' N x 3 x {height} x {width} (preprocessed), "
          f"output 'features' N x {extractor.feature_dim} (L2-normalised), {extractor.encoder} encoder, "
          f"opset {onnx_opset(path)}")
    try:
        print(f"onnxruntime vs PyTorch on random batches of 1 and 3: max abs difference {check_onnx(path, extractor):.2e}")
    except DmireidError as exc:
        print(f"not checked with onnxruntime ({exc})")
    return 0


def cmd_visualize(args) -> int:
    from .inference import visualize_run

    setup_logging(quiet=args.quiet)
    _import_plugins(args)
    report = visualize_run(args.run, args.out, dataset=args.dataset, root=args.root, num_queries=args.num_queries,
                           topk=args.topk, select=args.select, encoder=args.encoder, batch_size=args.batch_size,
                           device=args.device, progress=not args.quiet)
    curves = f", training curves {report.curves}" if report.curves else " (no metrics.jsonl: no training curves)"
    print(f"wrote {len(report.strips)} rank lists and {report.index}{curves}")
    return 0


def _plugins_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plugins", action="append", metavar="MODULE_OR_FILE",
                   help="import this plug-in first (repeatable): a checkpoint's backbone or dataset may come "
                        "from one; a checkpoint's own `plugins` are never imported")


def _model_options(p: argparse.ArgumentParser, flip: bool = True) -> None:
    _plugins_option(p)
    p.add_argument("--encoder", choices=["online", "momentum"],
                   help="which encoder of the checkpoint (default: momentum when it has one)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", help="cpu, cuda, cuda:N (default: cuda when available)")
    p.add_argument("--num-workers", type=int, default=0, help="image decoding processes")
    if flip:
        p.add_argument("--flip", action="store_true", help="average the features of each image and its mirror image")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _skip_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--skip-unreadable", action="store_true",
                   help="leave out images that cannot be decoded and list them (default: stop at the first)")


# ------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dmireid", description="Unsupervised person re-identification (CC, DMI).")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train (no arguments: the synthetic demo)")
    p.add_argument("--config", help="preset name (demo, smoke, dmi_market1501, ...) or YAML path")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="evaluate a checkpoint (or a random init) on a dataset")
    p.add_argument("checkpoint", nargs="?")
    p.add_argument("--random-init", action="store_true")
    p.add_argument("--config", help="model/data config for --random-init (default: demo)")
    p.add_argument("--dataset", help="dataset name (default: the checkpoint's)")
    p.add_argument("--root", help="dataset folder")
    p.add_argument("--encoder", choices=["online", "momentum"])
    p.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking (k1 20, k2 6, lambda 0.3)")
    p.add_argument("--json", help="also write the metrics to this JSON file")
    p.add_argument("--quiet", action="store_true")
    _plugins_option(p)
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("make-synthetic", help="write the synthetic Market-layout dataset")
    p.add_argument("out")
    p.add_argument("--ids", type=int, default=200)
    p.add_argument("--cameras", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--height", type=int, default=128)
    p.add_argument("--width", type=int, default=64)
    p.set_defaults(func=cmd_make_synthetic)

    p = sub.add_parser("check-data", help="decode every image of a dataset and list unreadable ones")
    p.add_argument("name")
    p.add_argument("root")
    p.add_argument("overrides", nargs="*", metavar="option=value",
                   help="the loader's options (data.options), e.g. boxes=detected for cuhk03")
    p.set_defaults(func=cmd_check_data)

    p = sub.add_parser("extract", help="embed images with a checkpoint into an .npz (paths, features)")
    p.add_argument("checkpoint", help="dmireid checkpoint or torchvision ResNet weight file")
    p.add_argument("images", nargs="+", help="image files, folders (recursive) or globs")
    p.add_argument("--out", required=True, help="output .npz")
    _model_options(p)
    _skip_option(p)
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser("search", help="rank gallery images for each query image")
    p.add_argument("checkpoint")
    p.add_argument("--query", nargs="+", required=True, help="query image files, folders or globs")
    p.add_argument("--gallery", nargs="+", required=True, help="gallery images, folders, globs, or one .npz from extract")
    p.add_argument("--topk", type=int, default=10)
    p.add_argument("--out", help="save to .csv or .json instead of printing")
    _model_options(p)
    _skip_option(p)
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("cluster", help="group a folder of unlabelled crops by identity")
    p.add_argument("checkpoint")
    p.add_argument("folder", nargs="+", help="image folder(s), files or globs")
    p.add_argument("--out", required=True, help="output folder: clusters.csv and contact sheets")
    for option, kind in (("--eps", float), ("--k1", int), ("--k2", int), ("--min-samples", int)):
        p.add_argument(option, type=kind, help=f"default: training's pseudo_labels.{option[2:].replace('-', '_')}")
    _model_options(p)
    _skip_option(p)
    p.set_defaults(func=cmd_cluster)

    p = sub.add_parser("export", help="export the encoder to ONNX (dynamic batch)")
    p.add_argument("checkpoint")
    p.add_argument("--onnx", help="output .onnx file")
    p.add_argument("--encoder", choices=["online", "momentum"])
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--height", type=int, help="input height (default: the checkpoint's)")
    p.add_argument("--width", type=int, help="input width (default: the checkpoint's)")
    p.add_argument("--dynamo", action="store_true", help="torch.export-based exporter instead of the TorchScript one")
    _plugins_option(p)
    add_export_target_options(p, cmd_export)

    p = sub.add_parser("visualize", help="rank-list images of test queries, index.html, training curves")
    p.add_argument("run", metavar="RUN_OR_CHECKPOINT", help="run folder (last.pt, metrics.jsonl) or checkpoint")
    p.add_argument("--dataset", help="dataset name (default: the checkpoint's)")
    p.add_argument("--root", help="dataset folder (default: the checkpoint's)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--num-queries", type=int, default=10)
    p.add_argument("--topk", type=int, default=10)
    p.add_argument("--select", choices=["spread", "first"], default="spread",
                   help="evenly spaced queries (default) or the first ones")
    _model_options(p, flip=False)
    p.set_defaults(func=cmd_visualize)
    add_index_parsers(sub)
    add_tracking_parsers(sub)

    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # key=value overrides may also follow options (argparse stops positionals at an option)
        if not hasattr(args, "overrides") or any("=" not in item or item.startswith("-") for item in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    try:
        return args.func(args)
    except DmireidError as exc:
        print(f"dmireid: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dmireid: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
