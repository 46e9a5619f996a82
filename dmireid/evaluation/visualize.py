"""Looking at results: rank lists as image strips, an HTML index, contact sheets, training curves.

Everything here takes features, distances, ids and image paths (no model):

    idx, dist, match = rank_gallery(qf, gf, topk=10, query_pids=qp, gallery_pids=gp, query_cams=qc, gallery_cams=gc)
    draw_rank_strip(query_path, [gallery_paths[j] for j in idx[0]], dist[0], match[0]).save("q0.png")
    plot_training_curves("runs/demo/metrics.jsonl", "curves.png")   # needs matplotlib

Distances are squared Euclidean distances of unit features (``2 - 2·cos``), as in evaluation; with
ids, gallery items with the query's pid *and* camera are left out, as in evaluation (spec §6).
"""

from __future__ import annotations

import html
import json
import math
import re
from pathlib import Path
from typing import Sequence
from urllib.parse import quote

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..errors import DmireidError

GREEN, RED, GREY, BLUE = (0, 170, 0), (220, 0, 0), (150, 150, 150), (40, 90, 220)


# -------------------------------------------------------------------------------------- ranking
def _as_tensor(x) -> torch.Tensor:
    return (x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))).float().cpu()


def rank_gallery(query_features, gallery_features, topk: int = 10, query_pids=None, gallery_pids=None,
                 query_cams=None, gallery_cams=None, chunk_size: int = 256):
    """The ``topk`` nearest gallery items of each query.

    Returns ``(indices Q×k int64, distances Q×k float32, matches Q×k bool or None)``; ``k`` =
    min(topk, gallery size), rows padded with -1 / inf / False when exclusions leave fewer items.
    Ties are broken by gallery index. With pids and cams, items with the query's pid and camera
    are excluded and ``matches`` marks items with the query's pid; without them nothing is excluded
    and ``matches`` is None.
    """
    qf, gf = _as_tensor(query_features), _as_tensor(gallery_features)
    if qf.ndim != 2 or gf.ndim != 2 or qf.shape[1] != gf.shape[1]:
        raise DmireidError(f"query and gallery features must be N×d with the same d, got "
                           f"{tuple(qf.shape)} and {tuple(gf.shape)}")
    labelled = query_pids is not None and gallery_pids is not None
    if labelled:
        qp, gp = np.asarray(query_pids), np.asarray(gallery_pids)
        qc = np.asarray(query_cams) if query_cams is not None else np.full(len(qp), -1)
        gc = np.asarray(gallery_cams) if gallery_cams is not None else np.full(len(gp), -2)
    k = min(int(topk), gf.shape[0])
    indices = np.full((qf.shape[0], k), -1, dtype=np.int64)
    distances = np.full((qf.shape[0], k), np.inf, dtype=np.float32)
    matches = np.zeros((qf.shape[0], k), dtype=bool) if labelled else None
    for start in range(0, qf.shape[0], chunk_size):
        dist = (2 - 2 * qf[start:start + chunk_size] @ gf.T).clamp_min(0).numpy()
        for row, d in enumerate(dist, start):
            keep = np.arange(len(d))
            if labelled:
                keep = keep[~((gp == qp[row]) & (gc == qc[row]))]
            if len(keep) > k:
                part = keep[np.argpartition(d[keep], k - 1)[:k]]
                # argpartition may cut inside a tie; take every item tied with the k-th distance
                keep = keep[d[keep] <= d[part].max()]
            order = keep[np.lexsort((keep, d[keep]))][:k]
            indices[row, :len(order)] = order
            distances[row, :len(order)] = d[order]
            if labelled:
                matches[row, :len(order)] = gp[order] == qp[row]
    return indices, distances, matches


def select_queries(num_queries: int, count: int, mode: str = "spread") -> np.ndarray:
    """Indices of ``count`` queries: the first ones (``first``) or evenly spaced (``spread``)."""
    count = max(0, min(int(count), int(num_queries)))
    if mode == "first":
        return np.arange(count)
    if mode != "spread":
        raise DmireidError(f"query selection {mode!r} is not one of first, spread")
    return np.unique(np.linspace(0, num_queries - 1, count).round().astype(np.int64)) if count else np.arange(0)


# -------------------------------------------------------------------------------------- drawing
def _font(size: int = 11):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _thumbnail(path, size: tuple[int, int]) -> Image.Image:
    """The image at ``path`` resized to ``size`` (w, h); a grey tile with '?' when unreadable."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB").resize(size, Image.BILINEAR)
    except Exception:  # noqa: BLE001 - a broken file shows as a placeholder, not an error
        tile = Image.new("RGB", size, (200, 200, 200))
        ImageDraw.Draw(tile).text((size[0] // 2 - 3, size[1] // 2 - 6), "?", fill=(90, 90, 90), font=_font())
        return tile


def draw_rank_strip(query_path, gallery_paths: Sequence, distances: Sequence[float], matches=None,
                    thumb: tuple[int, int] = (64, 128), border: int = 4, query_label: str = "query",
                    gallery_labels: Sequence[str] | None = None) -> Image.Image:
    """One row: the query (blue border), a gap, then the ranked gallery images, each with a green
    (same pid) / red (other pid) / grey (unknown) border, its rank above and distance below."""
    n = len(gallery_paths)
    cell_w, cell_h = thumb[0] + 2 * border, thumb[1] + 2 * border
    pad, text_h, gap = 4, 14, 16
    width = pad + cell_w + gap + n * (cell_w + pad)
    height = pad + text_h + cell_h + 2 * text_h + pad
    strip = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    font = _font()

    def cell(x: int, path, colour, above: str, below: list[str]) -> None:
        draw.text((x, pad), above, fill=(0, 0, 0), font=font)
        y = pad + text_h
        draw.rectangle([x, y, x + cell_w - 1, y + cell_h - 1], fill=colour)
        strip.paste(_thumbnail(path, thumb), (x + border, y + border))
        for i, line in enumerate(below):
            draw.text((x, y + cell_h + 1 + i * text_h), line, fill=(0, 0, 0), font=font)

    cell(pad, query_path, BLUE, query_label, [])
    x = pad + cell_w + gap
    for i in range(n):
        colour = GREY if matches is None else (GREEN if matches[i] else RED)
        below = [f"{float(distances[i]):.3f}"] + ([gallery_labels[i]] if gallery_labels else [])
        cell(x, gallery_paths[i], colour, f"#{i + 1}", below)
        x += cell_w + pad
    return strip


def contact_sheet(paths: Sequence, columns: int = 10, thumb: tuple[int, int] = (48, 96), max_images: int = 100,
                  title: str | None = None) -> Image.Image:
    """A grid of thumbnails of ``paths`` (at most ``max_images``, noted in the title when cut)."""
    shown = list(paths)[:max_images]
    columns = max(1, min(columns, len(shown) or 1))
    rows = max(1, math.ceil(len(shown) / columns))
    pad, text_h = 2, 16
    sheet = Image.new("RGB", (pad + columns * (thumb[0] + pad), text_h + pad + rows * (thumb[1] + pad)), "white")
    caption = title or ""
    if len(paths) > len(shown):
        caption += f" (first {len(shown)} of {len(paths)})"
    ImageDraw.Draw(sheet).text((pad, 2), caption, fill=(0, 0, 0), font=_font())
    for i, path in enumerate(shown):
        r, c = divmod(i, columns)
        sheet.paste(_thumbnail(path, thumb), (pad + c * (thumb[0] + pad), text_h + pad + r * (thumb[1] + pad)))
    return sheet


# -------------------------------------------------------------------------------------- rank lists
def safe_name(text: str, limit: int = 60) -> str:
    """A file-name-safe version of ``text`` (letters, digits, ``._-``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:limit].strip("._") or "image"


def visualize_rank_lists(query_features, gallery_features, query_samples: Sequence, gallery_samples: Sequence,
                         out_dir: str | Path, num_queries: int = 10, topk: int = 10, select: str = "spread",
                         query_indices: Sequence[int] | None = None, curves: str | None = None,
                         title: str = "rank lists") -> tuple[Path, list[Path]]:
    """Rank-list strips of selected queries plus ``out_dir/index.html`` linking them.

    ``query_samples``/``gallery_samples``: ``(path, pid, camid)`` lists matching the feature rows
    (``query_features`` may hold only the rows of ``query_indices``; otherwise queries are chosen
    with :func:`select_queries`). ``curves``: an image file name in ``out_dir`` to show on the page.
    Strips of an earlier call in ``out_dir`` are removed. Returns ``(index path, strip paths)``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("query_[0-9][0-9][0-9][0-9][0-9]_*.png"):
        stale.unlink()
    qf = _as_tensor(query_features)
    if query_indices is None:
        query_indices = select_queries(len(query_samples), num_queries, select)
        qf = qf[torch.as_tensor(query_indices, dtype=torch.long)]
    query_indices = [int(i) for i in query_indices]
    if len(qf) != len(query_indices):
        raise DmireidError(f"{len(qf)} query feature rows for {len(query_indices)} selected queries")
    queries = [query_samples[i] for i in query_indices]
    gp = np.array([s[1] for s in gallery_samples])
    gc = np.array([s[2] for s in gallery_samples])
    idx, dist, match = rank_gallery(qf, gallery_features, topk, [s[1] for s in queries], gp,
                                    [s[2] for s in queries], gc)
    entries, strips = [], []
    for row, (qi, (qpath, qpid, qcam)) in enumerate(zip(query_indices, queries)):
        valid = idx[row] >= 0
        ranked = [gallery_samples[j] for j in idx[row][valid]]
        strip = draw_rank_strip(qpath, [s[0] for s in ranked], dist[row][valid], match[row][valid],
                                query_label=f"pid {qpid} c{qcam + 1}",
                                gallery_labels=[f"pid {s[1]} c{s[2] + 1}" for s in ranked])
        name = f"query_{qi:05d}_{safe_name(Path(qpath).stem)}.png"
        strip.save(out_dir / name)
        strips.append(out_dir / name)
        hits = np.flatnonzero(match[row][valid])
        entries.append({"file": name, "query": str(qpath), "pid": int(qpid), "cam": int(qcam) + 1,
                        "first_match": int(hits[0]) + 1 if len(hits) else None})
    index = out_dir / "index.html"
    index.write_text(_index_html(entries, topk, title, curves), encoding="utf-8")
    return index, strips


def _index_html(entries: list[dict], topk: int, title: str, curves: str | None) -> str:
    e = html.escape
    rows = []
    for entry in entries:
        link = e(quote(entry["file"]))
        first = f"rank {entry['first_match']}" if entry["first_match"] else f"none in the top {topk}"
        rows.append(f"<tr><td><a href=\"{link}\">{e(entry['file'])}</a><br><small>{e(entry['query'])}</small><br>"
                    f"pid {entry['pid']}, camera {entry['cam']}; first true match: {e(first)}</td>"
                    f"<td><a href=\"{link}\"><img src=\"{link}\" alt=\"{e(entry['file'])}\"></a></td></tr>")
    curves_html = (f"<h2>Training curves</h2><p><a href=\"{e(quote(curves))}\"><img src=\"{e(quote(curves))}\" "
                   f"alt=\"training curves\" style=\"max-width:100%\"></a></p>" if curves else "")
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
            f"<title>{e(title)}</title>"
            "<style>body{font-family:sans-serif} td{vertical-align:top;padding:4px} small{color:#555}</style>"
            f"</head><body>\n<h1>{e(title)}</h1>\n"
            "<p>Query (blue) and its top gallery matches by squared Euclidean distance of unit features; "
            "green = same identity, red = different; gallery images of the query's identity seen by the "
            "query's camera are left out, as in evaluation.</p>\n"
            f"{curves_html}\n<table>\n" + "\n".join(rows) + "\n</table>\n</body></html>\n")


# -------------------------------------------------------------------------------------- curves
def read_metrics(metrics_jsonl: str | Path) -> list[dict]:
    """The well-formed JSON lines of a run's ``metrics.jsonl`` (one dict per epoch)."""
    path = Path(metrics_jsonl)
    if not path.is_file():
        raise DmireidError(f"metrics file {path} does not exist")
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("epoch"), int):
            records.append(record)
    if not records:
        raise DmireidError(f"metrics file {path} holds no epoch records")
    return records


LOSS_KEYS = None  # in CURVE_PANELS: every ``loss*`` key of the records (see :func:`loss_keys`)
CURVE_PANELS = (  # title, keys on the left axis, keys on a right axis, scale
    ("accuracy (%)", ("mAP", "mAP_ema", "rank1", "rank1_ema"), (), 100.0),
    ("pseudo labels", ("num_clusters",), ("num_outliers",), 1.0),
    ("loss", LOSS_KEYS, (), 1.0),
)


def loss_keys(records: list[dict]) -> tuple[str, ...]:
    """Every numeric ``loss*`` key of the records (any objective's terms): ``loss`` first, then the
    others in order of first appearance."""
    found = dict.fromkeys(k for r in records for k, v in r.items()
                          if k.startswith("loss") and isinstance(v, (int, float)) and not isinstance(v, bool))
    return tuple(sorted(found, key=lambda k: k != "loss"))


def _series(records: list[dict], key: str, scale: float) -> list[tuple[int, float]]:
    """(epoch + 1, value) where ``key`` was recorded; losses of skipped epochs (no clusters) left out."""
    return [(r["epoch"] + 1, scale * r[key]) for r in records
            if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)
            and math.isfinite(r[key]) and not (key.startswith("loss") and r.get("skipped"))]


def plot_training_curves(metrics_jsonl: str | Path, out_png: str | Path) -> Path:
    """mAP / R1 (θ and θ'), #clusters / #outliers and losses (every ``loss*`` key) per epoch from
    ``metrics.jsonl``.

    Uses matplotlib's Agg canvas directly (no global backend change). Returns ``out_png``.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        raise DmireidError("training curves need matplotlib: pip install 'dmireid[viz]'") from None
    records = read_metrics(metrics_jsonl)
    figure = Figure(figsize=(12, 3.6), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(CURVE_PANELS))
    for ax, (label, keys, right_keys, scale) in zip(axes, CURVE_PANELS):
        keys = loss_keys(records) if keys is LOSS_KEYS else keys
        handles = []
        for axis, names, style in ((ax, keys, "-"), (ax.twinx() if right_keys else None, right_keys, "--")):
            for key in names:
                points = _series(records, key, scale)
                if points:
                    xs, ys = zip(*points)
                    colour = f"C{len(handles)}"
                    handles += axis.plot(xs, ys, style, color=colour, marker="o", markersize=3, label=key)
            if right_keys and axis is not ax:
                axis.set_ylabel(", ".join(right_keys))
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(label)
        ax.grid(alpha=0.3)
        if handles:
            ax.legend(handles=handles, fontsize=8)
        else:
            ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes, color="grey")
    figure.suptitle(f"training curves: {Path(metrics_jsonl).parent.name or metrics_jsonl}")
    out_png = Path(out_png)
    figure.savefig(out_png, dpi=100)
    return out_png
