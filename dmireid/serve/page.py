"""The one HTML page of ``dmireid serve``: a plain form (works without JavaScript), a drop zone
(a few lines of inline JavaScript), the query, the verdict and the ranked gallery crops.

    html = render_page(PageState(gallery=index.info(), topk=10, hits=hits[0], ...))

Elements tests and scripts can read: ``#verdict[data-verdict]`` (match / unknown / none),
``#hits li.hit[data-id][data-distance][data-match]``, ``#error``, ``#notice``, ``#add-form``,
``#gallery-count``. Every value put into the page goes through :func:`html.escape`.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:80em}
h1{font-size:1.4em;margin:0 0 .2em} .muted{color:#666;font-size:.9em}
#drop{border:2px dashed #89a;border-radius:8px;padding:1.2em;text-align:center;margin:1em 0;background:#f7f9fb}
#drop.over{background:#e3eefb;border-color:#36c}
.error{background:#fde8e8;border:1px solid #d66;padding:.6em .8em;border-radius:6px}
.notice{background:#e8f6e8;border:1px solid #6a6;padding:.6em .8em;border-radius:6px}
.verdict{font-size:1.2em;font-weight:600;padding:.4em .8em;border-radius:6px;display:inline-block}
.verdict.match{background:#dff3df;color:#174} .verdict.unknown{background:#fdf1d8;color:#852}
.verdict.none{background:#eee}
#query{display:flex;gap:1.2em;align-items:flex-start;margin:1em 0}
#query img{height:160px;image-rendering:pixelated;border:1px solid #aaa}
#hits{display:flex;flex-wrap:wrap;gap:.8em;list-style:none;padding:0}
#hits li{border:1px solid #ccc;border-radius:6px;padding:.4em;width:9em;font-size:.85em;text-align:center}
#hits li.match{border:3px solid #2a2} #hits img{height:128px;max-width:100%;image-rendering:pixelated}
.dist{font-family:monospace;font-size:1.1em} .ok{color:#174} .path{word-break:break-all;color:#555}
"""

SCRIPT = """
const zone = document.getElementById('drop'), input = document.getElementById('image');
['dragenter', 'dragover'].forEach(e => zone.addEventListener(e, ev => {ev.preventDefault(); zone.classList.add('over');}));
['dragleave', 'drop'].forEach(e => zone.addEventListener(e, ev => {ev.preventDefault(); zone.classList.remove('over');}));
zone.addEventListener('drop', ev => {
  if (ev.dataTransfer.files.length) { input.files = ev.dataTransfer.files; input.form.submit(); }
});
input.addEventListener('change', () => { if (input.files.length) input.form.submit(); });
"""


@dataclass
class PageState:
    """What one rendering of the page shows.

    ``gallery``: the index's ``info()``; ``hits``: the ranked hits of the query (objects with id, path,
    distance, camera, tag, added_at, match), None before any search; ``query_sha``: the upload's
    sha256, which the add form sends back; ``query_src``: a ``data:`` URI of the query image.
    """

    gallery: dict[str, Any]
    topk: int = 10
    threshold: float | None = None
    hits: Sequence[Any] | None = None
    query_sha: str | None = None
    query_src: str | None = None
    query_name: str = ""
    notice: str | None = None
    error: str | None = None
    status: int = 200


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def verdict(hits: Sequence[Any] | None, threshold: float | None, gallery_count: int) -> tuple[str, str]:
    """``(kind, sentence)``: kind ``match`` (the nearest crop is within the threshold), ``unknown``, or
    ``none`` (no threshold, distances only)."""
    if not hits:
        return "unknown", ("unknown: the gallery is empty" if gallery_count == 0
                           else "unknown: no gallery image was returned")
    best = hits[0]
    if threshold is None or best.match is None:
        return "none", f"nearest gallery image at distance {best.distance:.4f} (no threshold set: no verdict)"
    if best.match:
        return "match", (f"match: gallery image #{best.id} at distance {best.distance:.4f} "
                         f"≤ threshold {threshold:.4f}")
    return "unknown", (f"unknown: the nearest gallery image (#{best.id}) is at distance {best.distance:.4f} "
                       f"> threshold {threshold:.4f}")


def threshold_text(gallery: dict[str, Any], threshold: float | None) -> str:
    """The threshold and where it comes from (the index's calibration, or set for this server)."""
    if threshold is None:
        return "none (distances only)"
    stored = gallery.get("threshold")
    if stored is None or abs(float(stored) - threshold) > 1e-12:
        return f"{threshold:.4f} (cosine distance, set for this server)"
    details = ["cosine distance"]
    source, rate = gallery.get("threshold_source"), gallery.get("false_match_rate")
    if source:
        details.append("set on the index" if source == "set" else f"from {source}")
    if rate is not None:
        details.append(f"false-match rate {100 * float(rate):g} %")
    return f"{threshold:.4f} ({', '.join(details)})"


def render_gallery_line(gallery: dict[str, Any], threshold: float | None) -> str:
    count = int(gallery.get("count", 0))
    thr = threshold_text(gallery, threshold)
    checkpoint = str(gallery.get("checkpoint") or "?")
    return (f'<p class="muted">Gallery: <span id="gallery-count">{count}</span> images · threshold {esc(thr)} · '
            f'checkpoint <span title="{esc(checkpoint)}">{esc(Path(checkpoint).name)}</span></p>')


def render_form(topk: int) -> str:
    return f"""<form id="search-form" action="/search" method="post" enctype="multipart/form-data">
<div id="drop"><p><b>Drop a query image here</b> or pick one:</p>
<input type="file" id="image" name="image" accept="image/*" required>
<label>top <input type="number" id="topk" name="topk" value="{int(topk)}" min="1" max="100" style="width:4em"></label>
<button type="submit" id="search">Search</button></div></form>"""


def render_hit(rank: int, hit: Any) -> str:
    match = "" if hit.match is None else ("true" if hit.match else "false")
    klass = "hit match" if hit.match else "hit"
    camera = "" if hit.camera is None else f" · cam {int(hit.camera) + 1}"
    tag = f"<br>tag {esc(hit.tag)}" if hit.tag else ""
    word = '<b class="ok">match</b>' if hit.match else ""
    name = Path(str(hit.path)).name
    short = name if len(name) <= 24 else name[:10] + "…" + name[-8:]
    return (f'<li class="{klass}" data-id="{int(hit.id)}" data-distance="{hit.distance:.6f}" data-match="{match}">'
            f'<img src="/image/{int(hit.id)}" alt="gallery image {int(hit.id)}"><br>'
            f'<b>#{rank}</b> <span class="dist">{hit.distance:.4f}</span> {word}<br>id {int(hit.id)}{camera}{tag}'
            f'<br><span class="path" title="{esc(hit.path)}">{esc(short)}</span></li>')


def render_results(state: PageState) -> str:
    count = int(state.gallery.get("count", 0))
    kind, sentence = verdict(state.hits, state.threshold, count)
    add = ""
    if state.query_sha:
        add = (f'<form id="add-form" action="/add" method="post">'
               f'<input type="hidden" name="query" value="{esc(state.query_sha)}">'
               f'<input type="hidden" name="topk" value="{int(state.topk)}">'
               f'<label>tag (optional) <input type="text" name="tag" maxlength="100"></label> '
               f'<button type="submit" id="add">Add this query to the gallery</button></form>')
    img = f'<img src="{esc(state.query_src)}" alt="query">' if state.query_src else ""
    items = "".join(render_hit(rank, hit) for rank, hit in enumerate(state.hits or (), 1))
    return (f'<section id="query">{img}<div><p class="muted">Query: {esc(state.query_name)}</p>'
            f'<p id="verdict" class="verdict {kind}" data-verdict="{kind}">{esc(sentence)}</p>{add}</div></section>'
            f'<h2>Ranked gallery (top {len(state.hits or ())})</h2><ol id="hits">{items}</ol>')


def render_page(state: PageState) -> str:
    """The whole HTML document for ``state``."""
    parts = [render_gallery_line(state.gallery, state.threshold), render_form(state.topk)]
    if state.error:
        parts.append(f'<p id="error" class="error" data-status="{int(state.status)}">'
                     f'Error {int(state.status)}: {esc(state.error)}</p>')
    if state.notice:
        parts.append(f'<p id="notice" class="notice">{esc(state.notice)}</p>')
    if state.hits is not None:
        parts.append(render_results(state))
    body = "\n".join(parts)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>dmireid gallery search</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style></head>
<body><h1>dmireid gallery search</h1>
{body}
<script>{SCRIPT}</script></body></html>
"""
