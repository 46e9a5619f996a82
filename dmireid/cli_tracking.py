"""``dmireid crops``, ``dmireid make-video`` and ``dmireid export --for boxmot``: parsing only.

The work is :func:`dmireid.inference.footage.cut_crops`, :mod:`dmireid.data.synthetic_video`
and :func:`dmireid.inference.export.export_for_boxmot`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .errors import DmireidError
from .logs import setup_logging


def cmd_crops(args) -> int:
    from .inference.footage import cut_crops

    setup_logging(quiet=False)
    report = cut_crops(args.frames, args.tracks, args.camera, args.out, every=args.every,
                       max_per_track=args.max_per_track, min_height=args.min_height, pad=args.pad,
                       replace=args.replace, append=args.append)
    print(report.summary())
    return 0


def cmd_make_video(args) -> int:
    from .data.synthetic_video import render_clip, write_clip, write_labelled_crops

    out = Path(args.out)
    options = dict(frames=args.frames, people=args.people, population=args.population, num_cameras=args.cameras)
    for camera in range(1, args.cameras + 1):
        clip = render_clip(args.site, args.scene, camera, **options)
        write_clip(clip, out / f"c{camera}")
        print(f"wrote {out / f'c{camera}'}: {len(clip.frames)} frames, {len(clip.gt)} boxes "
              f"(img1/, gt/gt.txt)")
    if args.test_scene is not None:
        clips = [render_clip(args.site, args.test_scene, camera, **options) for camera in range(1, args.cameras + 1)]
        write_labelled_crops(clips, out / "test")
        print(f"wrote {out / 'test'}: labelled query/ and bounding_box_test/ crops of scene {args.test_scene}")
    return 0


def add_export_target_options(p: argparse.ArgumentParser, plain) -> None:
    """``--for onnx|boxmot`` and ``--out FILE`` on ``dmireid export`` (``plain``: the ONNX command)."""
    p.add_argument("--for", dest="target", choices=["onnx", "boxmot"], default="onnx",
                   help="onnx (default) or boxmot: the .onnx (or *_openvino_model folder) boxmot's ReID backend loads")
    p.add_argument("--out", help="output file (same as --onnx)")
    p.set_defaults(func=lambda args: cmd_export_target(args, plain))


def cmd_export_target(args, plain) -> int:
    if args.onnx and args.out and args.onnx != args.out:
        raise DmireidError("give the output once: --out or --onnx")
    args.onnx = args.onnx or args.out
    if not args.onnx:
        raise DmireidError("dmireid export needs --out FILE (or --onnx FILE)")
    if args.target == "onnx":
        return plain(args)
    from .inference.export import BOXMOT_NOTE, export_for_boxmot

    path = export_for_boxmot(args.checkpoint, args.onnx, encoder=args.encoder, opset=args.opset)
    print(f"wrote {path} for boxmot ({BOXMOT_NOTE}); output L2-normalised")
    return 0


def add_tracking_parsers(sub) -> None:
    p = sub.add_parser("crops", help="cut training crops from footage and a tracker's MOT tracks file")
    p.add_argument("frames", help="MOTChallenge img1/ folder (or its sequence folder) or a video file")
    p.add_argument("--tracks", required=True, help="MOTChallenge text file: frame, id, left, top, width, height, ...")
    p.add_argument("--camera", type=int, required=True, help="camera number (1-based, like Market's c1)")
    p.add_argument("--out", required=True, help="crops folder (shared by several cameras; manifest.csv)")
    p.add_argument("--every", type=int, default=1, help="keep every n-th frame (default 1)")
    p.add_argument("--max-per-track", type=int, help="at most M crops per track, spread over it")
    p.add_argument("--min-height", type=int, default=0, help="skip boxes lower than this (pixels, after clipping)")
    p.add_argument("--pad", type=float, default=0.0, help="pad each box by this fraction of its size per side")
    p.add_argument("--replace", action="store_true", help="replace this camera's crops already in --out")
    p.add_argument("--append", action="store_true",
                   help="add to this camera's crops already in --out (more footage; other track ids)")
    p.set_defaults(func=cmd_crops)

    p = sub.add_parser("make-video", help="write synthetic MOTChallenge clips (two cameras, known tracks)")
    p.add_argument("out")
    p.add_argument("--site", type=int, default=0, help="site seed: the cameras and the population")
    p.add_argument("--scene", type=int, default=0, help="scene seed: who walks by, and when")
    p.add_argument("--test-scene", type=int, help="also write OUT/test (labelled query / gallery) from this scene")
    p.add_argument("--cameras", type=int, default=2)
    p.add_argument("--frames", type=int, default=120)
    p.add_argument("--people", type=int, default=8)
    p.add_argument("--population", type=int, default=24)
    p.set_defaults(func=cmd_make_video)
