"""``dmireid index build|add|remove|rebuild|info|search``: parsing only.

The work is :class:`dmireid.inference.GalleryIndex`. ``calibrate`` is :mod:`dmireid.cli_calibrate`,
``serve`` :mod:`dmireid.cli_serve`.
"""

from __future__ import annotations

import argparse
import json



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


def add_index_parsers(sub) -> None:
    """The ``index`` command group and ``calibrate`` on the main parser's subparsers."""
    from .cli_calibrate import add_calibrate_parser
    from .cli_serve import add_serve_parser

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

    add_calibrate_parser(sub)
    add_serve_parser(sub)
