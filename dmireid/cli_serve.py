"""``dmireid serve``: the local web page over a gallery index (parsing only; :mod:`dmireid.serve`)."""

from __future__ import annotations

from .logs import setup_logging


def cmd_serve(args) -> int:
    from .serve import run_server

    setup_logging()
    run_server(args.index_dir, host=args.host, port=args.port, checkpoint=args.checkpoint, device=args.device,
               topk=args.topk, threshold=args.threshold, max_bytes=int(args.max_upload_mb * 1024 * 1024),
               max_pixels=args.max_pixels)
    return 0


def add_serve_parser(sub) -> None:
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
