"""``dmireid calibrate``: a checkpoint's open-set threshold from unlabelled images (parsing only).

The work is :func:`dmireid.inference.calibrate`; ``--index`` also stores it in a gallery index.
"""

from __future__ import annotations


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


def add_calibrate_parser(sub) -> None:
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
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N (default: cuda when available)")
    p.set_defaults(func=cmd_calibrate)
