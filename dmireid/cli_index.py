"""``dmireid index build|add|remove|rebuild|info|search``, ``dmireid calibrate`` and ``dmireid serve``: parsing only.

The work is :class:`dmireid.inference.GalleryIndex` and :func:`dmireid.inference.calibrate`.
"""

from __future__ import annotations

import argparse
import json

from .logs import setup_logging


def cmd_index_build(args) -> int:
    from .inference import GalleryIndex
    from .inference.gallery import describe_kind

    index = GalleryIndex.build(args.checkpoint, args.images, args.out, approximate=args.approximate,
                               skip_unreadable=args.skip_unreadable, device=args.device, tag=args.tag,
                               encoder=args.encoder, nlist=args.nlist, nprobe=args.nprobe, pq_m=args.pq_m)
    info = index.info()
    threshold = (f"threshold {info['threshold']:.4f} ({info['threshold_source']})" if info["threshold"] is not None
                 else "no threshold (dmireid calibrate, then build again, or search with --threshold)")
    print(f"built {args.out}: {info['count']} images x {info['dim']} ({info['encoder']} encoder), "
          f"{describe_kind(index.manifest)}, {threshold}")
    return _print_unreadable(index.last_result)


def cmd_index_add(args) -> int:
    from .inference import GalleryIndex

    index = GalleryIndex.open(args.index, checkpoint=args.checkpoint, device=args.device)
    result = index.add(args.images, tag=args.tag, skip_unreadable=args.skip_unreadable)
    replaced = f", {result['replaced']} of them replace a changed file" if result["replaced"] else ""
    print(f"added {result['added']} images to {args.index}{replaced}; {result['duplicates']} already there; "
          f"{index.info()['count']} in all")
    return _print_unreadable(result)


def _print_unreadable(result: dict) -> int:
    bad = result["unreadable"]
    if bad:
        print(f"skipped {len(bad)} unreadable image{'s' if len(bad) != 1 else ''}: " + ", ".join(bad))
    return 0


def cmd_index_remove(args) -> int:
    from .inference import GalleryIndex

    index = GalleryIndex.open(args.index)
    removed = index.remove(args.paths)
    print(f"removed {removed} images from {args.index}; {index.info()['count']} left")
    return 0


def cmd_index_rebuild(args) -> int:
    from .inference import GalleryIndex
    from .inference.gallery import describe_kind

    index = GalleryIndex.open(args.index)
    info = index.rebuild(args.approximate, nlist=args.nlist, nprobe=args.nprobe, pq_m=args.pq_m)
    print(f"rebuilt {args.index}: {info['count']} images, {describe_kind(index.manifest)}")
    return 0


def cmd_index_info(args) -> int:
    from .inference import GalleryIndex

    info = GalleryIndex.open(args.index).info()
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    for key, value in info.items():
        print(f"{key:<17} {value}")
    return 0


def cmd_index_search(args) -> int:
    from .embedding import collect_image_paths
    from .inference import GalleryIndex

    index = GalleryIndex.open(args.index, checkpoint=args.checkpoint, device=args.device)
    queries = collect_image_paths(args.query)
    threshold = index.threshold if args.threshold is None else args.threshold
    results = index.search(queries, topk=args.topk, threshold=args.threshold)
    for query, hits in zip(queries, results):
        print(f"query {query}: {verdict(hits, threshold)}")
        for rank, hit in enumerate(hits, 1):
            label = "" if hit.match is None else ("match" if hit.match else "unknown")
            print(f"  {rank:>3}  {hit.distance:.4f}  {label:<7}  {hit.path}")
    return 0


def verdict(hits, threshold: float | None) -> str:
    """``match`` / ``unknown`` of a query from its nearest hit, with the numbers."""
    if not hits:
        return "unknown (the gallery is empty)"
    if threshold is None:
        return "no threshold (dmireid calibrate CHECKPOINT IMAGES, or --threshold)"
    nearest = hits[0].distance
    if nearest <= threshold:
        return f"match (nearest {nearest:.4f} <= threshold {threshold:.4f})"
    return f"unknown (nearest {nearest:.4f} > threshold {threshold:.4f})"


def cmd_calibrate(args) -> int:
    from . import build
    from .embedding.checkpoint import CONFIG_KEY, load_checkpoint
    from .config import load_config
    from .errors import DmireidError
    from .inference import calibrate

    index = None
    if args.index:  # opened first: a wrong folder is said before the estimate, not after
        from .inference import GalleryIndex

        index = GalleryIndex.open(args.index)
    saved = load_checkpoint(args.checkpoint).get(CONFIG_KEY)
    if saved is None:
        raise DmireidError(f"{args.checkpoint} is not a dmireid checkpoint (no config inside: its labeler is unknown)")
    labeler = build.labeler(load_config(base=saved), device=None, progress=not args.quiet)  # the training labeler
    est = calibrate(args.checkpoint, args.images, labeler, args.false_match_rate, encoder=args.encoder, device=args.device,
                    batch_size=args.batch_size, skip_unreadable=args.skip_unreadable, progress=not args.quiet,
                    write=not args.dry_run)
    print(f"open-set threshold {est['threshold']:.4f} (cosine distance) at a {100 * est['false_match_rate']:.2f}% "
          f"false-match rate between clusters")
    print(f"{est['num_images']} images -> {est['num_clusters']} clusters, {est['num_outliers']} outliers; "
          f"median distance within clusters {est['within_median']:.4f}, between {est['between_median']:.4f}; "
          f"estimated true-match rate {100 * est['estimated_true_match_rate']:.1f}% ({est['encoder']} encoder)")
    if args.dry_run:
        print("not stored (--dry-run)")
        return 0
    print(f"stored in {args.checkpoint}")
    if index is not None:
        store_in_index(index, est)
        print(f"stored in the index {args.index} (dmireid index search and serve use it)")
    return 0


def store_in_index(index, est: dict) -> None:
    """The estimate as the index's threshold, when the index was built with the same weights."""
    from .errors import DmireidError

    if est["fingerprint"] != index.manifest["fingerprint"]:
        raise DmireidError(f"--index {index.folder}: it was built with other weights "
                           f"({index.manifest['fingerprint'][:12]}) than this checkpoint's {est['encoder']} "
                           f"encoder ({est['fingerprint'][:12]}); the threshold is stored in the checkpoint only")
    index.set_threshold(est["threshold"], est["false_match_rate"], source="calibrate")


def _common(p: argparse.ArgumentParser, checkpoint: bool = False) -> None:
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N (default: cuda when available)")
    if checkpoint:
        p.add_argument("--checkpoint", help="the checkpoint the index was built with, if it moved")


def _approximate(p: argparse.ArgumentParser, default: str = "exact search") -> None:
    from .inference.vector_index import APPROXIMATE_KINDS, DEFAULT_NPROBE, DEFAULT_PQ_M

    kinds = APPROXIMATE_KINDS + (("exact",) if default != "exact search" else ())
    p.add_argument("--approximate", metavar="KIND", choices=kinds,
                   help=f"{', '.join(kinds)}: an approximate index for large galleries (IVF trained on the "
                        f"gallery's vectors; default: {default})")
    p.add_argument("--nlist", type=int, help="IVF lists (default about 4 x sqrt(N))")
    p.add_argument("--nprobe", type=int, help=f"IVF lists searched per query (default {DEFAULT_NPROBE})")
    p.add_argument("--pq-m", type=int, help=f"ivf-pq: bytes per vector (default {DEFAULT_PQ_M})")


def _adding(p: argparse.ArgumentParser) -> None:
    p.add_argument("--skip-unreadable", action="store_true",
                   help="leave out images that cannot be read and list them (default: stop before writing)")
    p.add_argument("--tag", help="a label stored with each added image (e.g. a camera or a day)")


def cmd_serve(args) -> int:
    from .serve import run_server

    setup_logging()
    run_server(args.index_dir, host=args.host, port=args.port, checkpoint=args.checkpoint, device=args.device,
               topk=args.topk, threshold=args.threshold, max_bytes=int(args.max_upload_mb * 1024 * 1024),
               max_pixels=args.max_pixels)
    return 0


def add_index_parsers(sub) -> None:
    """The ``index`` command group and ``calibrate`` on the main parser's subparsers."""
    index = sub.add_parser("index", help="a persistent gallery: build, add, remove, info, search")
    isub = index.add_subparsers(dest="index_command", required=True)

    p = isub.add_parser("build", help="embed images into a new index folder")
    p.add_argument("checkpoint")
    p.add_argument("images", nargs="+", help="image files or folders (recursive: jpg, png, bmp)")
    p.add_argument("--out", required=True, help="the new index folder")
    _approximate(p)
    p.add_argument("--encoder", choices=["online", "momentum"], help="default: momentum when the checkpoint has one")
    _adding(p)
    _common(p)
    p.set_defaults(func=cmd_index_build)

    p = isub.add_parser("add", help="embed and add images (a file already there is skipped)")
    p.add_argument("index")
    p.add_argument("images", nargs="+", help="image files or folders")
    _adding(p)
    _common(p, checkpoint=True)
    p.set_defaults(func=cmd_index_add)

    p = isub.add_parser("remove", help="remove images (files, or every image under a folder)")
    p.add_argument("index")
    p.add_argument("--paths", nargs="+", required=True)
    p.set_defaults(func=cmd_index_remove)

    p = isub.add_parser("rebuild", help="retrain the approximate index on every vector now in it (atomic)")
    p.add_argument("index")
    _approximate(p, "the index's kind")
    p.set_defaults(func=cmd_index_rebuild)

    p = isub.add_parser("info", help="what the index holds")
    p.add_argument("index")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_index_info)

    p = isub.add_parser("search", help="rank the gallery for query images; match / unknown")
    p.add_argument("index")
    p.add_argument("--query", nargs="+", required=True, help="query image files, folders or globs")
    p.add_argument("--topk", type=int, default=10)
    p.add_argument("--threshold", type=float, help="cosine distance for a match (default: the index's)")
    _common(p, checkpoint=True)
    p.set_defaults(func=cmd_index_search)

    p = sub.add_parser("calibrate", help="estimate a checkpoint's open-set threshold from unlabelled images")
    p.add_argument("checkpoint")
    p.add_argument("images", nargs="+", help="image files, folders or globs (no labels needed)")
    p.add_argument("--false-match-rate", type=float, default=0.01,
                   help="share of different-cluster pairs allowed below the threshold (default 0.01)")
    p.add_argument("--encoder", choices=["online", "momentum"])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--skip-unreadable", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="print the estimate, leave the checkpoint (and index) as they are")
    p.add_argument("--index", metavar="INDEX_DIR",
                   help="also store the threshold in this gallery index (built with the same checkpoint)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _common(p)
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("serve", help="a local web page: search a gallery index with a dropped image, add it")
    p.add_argument("index_dir", metavar="INDEX_DIR", help="gallery index folder (dmireid index build)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this computer only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--checkpoint", help="checkpoint (default: the one the index was built with)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--topk", type=int, default=10, help="gallery images shown per query (the page can change it)")
    p.add_argument("--threshold", type=float, help="match distance threshold (default: the index's)")
    p.add_argument("--max-upload-mb", type=float, default=10.0, help="largest accepted upload (default 10 MB)")
    p.add_argument("--max-pixels", type=int, default=40_000_000, help="largest accepted image, in pixels")
    p.set_defaults(func=cmd_serve)
