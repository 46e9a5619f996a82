"""The Starlette application of ``dmireid serve``: search a gallery index with an uploaded crop, show
the ranked crops, add the query to the gallery.

    app = create_app(lambda: GalleryIndex.open("gallery/"), ServeSettings(Path("gallery/")))

Routes: ``GET /`` the page; ``POST /search`` (multipart: ``image``, ``topk``); ``POST /add`` (``query``:
the sha256 of a recent upload, ``tag``); ``GET /image/{id}`` a gallery image, by its id in the index
only (never a path from the request). Adds run on one writer thread, one at a time; searches, the
page and images on a few reader threads at the same time, also while an add runs (they see the
gallery before the add until it is saved: :class:`~dmireid.inference.gallery_store.GalleryStore`).
Any failure is an HTML page with a 4xx/5xx status and one line; the server keeps running.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import logging
import os
import re
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from PIL import Image
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Route

from ..errors import DmireidError
from .page import PageState, render_page
from .uploads import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, UploadError, check_size, decode_upload

log = logging.getLogger(__name__)

FORM_OVERHEAD = 256 * 1024  # multipart boundaries and the small fields around the file
DRAIN_FACTOR = 8            # an oversized body is read (and dropped) up to this × the limit, so the browser sees the page
SHA256 = re.compile(r"[0-9a-f]{64}")
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]


@dataclass
class ServeSettings:
    """``index_dir``: the gallery (uploads go to ``index_dir/uploads``); ``threshold``: overrides the
    index's; ``max_bytes`` / ``max_pixels``: upload limits; ``allowed_hosts``: Host headers accepted
    (None = the loopback names; ``["*"]`` = any); ``pending``: recent uploads kept for "add"."""

    index_dir: Path
    topk: int = 10
    threshold: float | None = None
    max_bytes: int = DEFAULT_MAX_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    allowed_hosts: list[str] | None = None
    pending: int = 8


class IndexWorker:
    """Runs index calls off the event loop: changes on one writer thread (one at a time, where the
    index is opened), reads on ``readers`` threads (concurrently, also during a change)."""

    def __init__(self, open_index: Callable[[], Any], readers: int = 4):
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dmireid-index-write")
        self.readers = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="dmireid-index-read")
        self.index = self.executor.submit(open_index).result()

    async def run(self, fn: Callable[[Any], Any], write: bool = False) -> Any:
        """``fn(index)`` on a reader thread, or on the writer thread with ``write``."""
        return await asyncio.wrap_future((self.executor if write else self.readers).submit(fn, self.index))

    def close(self) -> None:
        self.readers.shutdown(wait=True)
        close = getattr(self.index, "close", None)
        if callable(close):
            self.executor.submit(close).result()
        self.executor.shutdown(wait=True)


class PendingUploads:
    """The last ``size`` uploads (sha256 -> (bytes, file name)), so "add" needs no second upload."""

    def __init__(self, size: int):
        self.size, self.items = size, OrderedDict()

    def put(self, sha: str, data: bytes, name: str) -> None:
        self.items[sha] = (data, name)
        self.items.move_to_end(sha)
        while len(self.items) > self.size:
            self.items.popitem(last=False)

    def get(self, sha: str) -> tuple[bytes, str] | None:
        return self.items.get(sha)


async def read_limited_form(request: Request, max_bytes: int) -> FormData:
    """The request's form, refusing (413) a body over ``max_bytes`` plus the form's overhead."""
    limit = max_bytes + FORM_OVERHEAD
    declared = request.headers.get("content-length", "")
    declared_size = int(declared) if declared.isdigit() else 0
    body, received = bytearray(), 0
    async for chunk in request.stream():
        received += len(chunk)
        if received <= limit and declared_size <= limit:
            body += chunk
        elif received > DRAIN_FACTOR * limit:
            break
    if max(received, declared_size) > limit:  # the body alone shows the file is too large
        check_size(max(received, declared_size), max_bytes)
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": bytes(body), "more_body": False}

    try:
        return await Request(request.scope, replay).form(max_files=1, max_fields=10, max_part_size=1024 * 1024)
    except HTTPException as exc:
        raise UploadError(400, f"the form could not be read ({exc.detail})") from None


def parse_topk(value: Any, default: int) -> int:
    """The ``topk`` field: an integer 1–100 (empty = ``default``)."""
    if value in (None, ""):
        return default
    try:
        topk = int(str(value))
    except ValueError:
        raise UploadError(400, f"top k must be a whole number, got {str(value)[:20]!r}") from None
    if not 1 <= topk <= 100:
        raise UploadError(400, f"top k must be between 1 and 100, got {topk}")
    return topk


def data_uri(image: Image.Image, height: int = 256) -> str:
    """A small PNG ``data:`` URI of ``image`` (at most ``height`` pixels high) for the page."""
    if image.height > height:
        image = image.resize((max(1, round(image.width * height / image.height)), height), Image.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def save_upload(uploads: Path, sha: str, image: Image.Image) -> Path:
    """Write ``uploads/<sha>.png`` (atomically: a temporary file, then a rename); reuse an existing one."""
    path = uploads / f"{sha}.png"
    if not path.is_file():
        uploads.mkdir(parents=True, exist_ok=True)
        tmp = uploads / f".{sha}.{os.getpid()}.tmp"
        image.save(tmp, format="PNG")
        os.replace(tmp, path)
    return path.resolve()


def same_origin(request: Request) -> bool:
    """False for a cross-site form post (a browser's ``Origin`` naming another host than ``Host``)."""
    origin = request.headers.get("origin")
    return not origin or origin == "null" or urlsplit(origin).netloc == request.headers.get("host", "")


def create_app(open_index: Callable[[], Any], settings: ServeSettings) -> Starlette:
    """The application over the index ``open_index()`` returns (opened now, on the index thread)."""
    worker = IndexWorker(open_index)
    pending = PendingUploads(settings.pending)

    def threshold(index: Any) -> float | None:
        return settings.threshold if settings.threshold is not None else index.threshold

    async def page(status: int = 200, **fields: Any) -> HTMLResponse:
        try:
            gallery, thr = await worker.run(lambda index: (index.info(), threshold(index)))
        except Exception:  # noqa: BLE001 - an error page must render even if the index cannot answer
            log.exception("the index could not describe itself")
            gallery, thr = {}, settings.threshold
        fields.setdefault("topk", settings.topk)
        state = PageState(gallery=gallery, threshold=thr, status=status, **fields)
        return HTMLResponse(render_page(state), status_code=status)

    async def results(image: Image.Image, sha: str, name: str, topk: int, notice: str | None = None) -> HTMLResponse:
        hits = await worker.run(lambda index: index.search([image], topk=topk, threshold=threshold(index))[0])
        src = await run_in_threadpool(data_uri, image)
        return await page(hits=hits, query_sha=sha, query_src=src, query_name=name, topk=topk, notice=notice)

    def guarded(handler: Callable) -> Callable:
        async def endpoint(request: Request) -> Response:
            try:
                if request.method == "POST" and not same_origin(request):
                    raise UploadError(403, "cross-site form posts are refused: use the page itself")
                return await handler(request)
            except UploadError as exc:
                return await page(status=exc.status, error=exc.message)
            except DmireidError as exc:
                return await page(status=400, error=str(exc))
            except Exception as exc:  # noqa: BLE001 - the server answers and keeps running
                log.exception("request %s %s failed", request.method, request.url.path)
                return await page(status=500, error=f"internal error ({type(exc).__name__}); see the server log")
        return endpoint

    async def home(request: Request) -> Response:
        return await page()

    async def search(request: Request) -> Response:
        form = await read_limited_form(request, settings.max_bytes)
        upload = form.get("image")
        if not isinstance(upload, UploadFile):
            raise UploadError(400, "no image in the form: choose an image file")
        data = await upload.read()
        image = await run_in_threadpool(decode_upload, data, settings.max_pixels, settings.max_bytes)
        topk = parse_topk(form.get("topk"), settings.topk)
        sha = hashlib.sha256(data).hexdigest()
        name = Path(upload.filename or "upload").name
        pending.put(sha, data, name)
        return await results(image, sha, name, topk)

    async def add(request: Request) -> Response:
        form = await read_limited_form(request, 64 * 1024)
        sha = str(form.get("query", ""))
        if not SHA256.fullmatch(sha):
            raise UploadError(400, "the add form names no upload (expected the sha256 of a query)")
        held = pending.get(sha)
        if held is None:
            raise UploadError(400, f"this query is no longer held by the server (it keeps the last "
                                   f"{settings.pending} uploads): drop it again, then add it")
        data, name = held
        image = await run_in_threadpool(decode_upload, data, settings.max_pixels, settings.max_bytes)
        tag = " ".join(str(form.get("tag") or "").split())[:100] or None
        path = await run_in_threadpool(save_upload, settings.index_dir / "uploads", sha, image)
        report = await worker.run(lambda index: index.add([str(path)], tag=tag), write=True)
        where = f"uploads/{path.name}"
        notice = (f"added to the gallery as {where}" if report.get("added") else f"already in the gallery ({where})")
        log.info("serve: %s", notice)
        return await results(image, sha, name, parse_topk(form.get("topk"), settings.topk), notice=notice)

    async def image(request: Request) -> Response:
        image_id = request.path_params["id"]
        try:
            path = await worker.run(lambda index: index.image_path(image_id))
        except (LookupError, ValueError, DmireidError):
            path = None
        if not path:
            return await page(status=404, error=f"no gallery image with id {image_id}")
        if not Path(path).is_file():
            return await page(status=404, error=f"the file of gallery image {image_id} is missing: {path}")
        return FileResponse(path, headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        yield
        worker.close()

    hosts = settings.allowed_hosts if settings.allowed_hosts is not None else LOOPBACK_HOSTS
    routes = [Route("/", guarded(home)), Route("/search", guarded(search), methods=["POST"]),
              Route("/add", guarded(add), methods=["POST"]), Route("/image/{id:int}", guarded(image))]
    app = Starlette(routes=routes, middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=hosts)],
                    lifespan=lifespan)
    app.state.worker, app.state.settings = worker, settings
    return app
