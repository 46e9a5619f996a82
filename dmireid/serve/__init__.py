"""``dmireid serve``: a local web page over a gallery index (optional extra ``pip install dmireid[serve]``).

    run_server("gallery/", host="127.0.0.1", port=8000)     # blocks; Ctrl-C stops it

- :mod:`.uploads` — size / pixel limits and safe decoding of uploaded images (Pillow only).
- :mod:`.page` — the HTML page (plain form, inline drop-zone script, no build step).
- :mod:`.app` — the Starlette application (:func:`~.app.create_app`, :class:`~.app.ServeSettings`).

Importing this package needs no web stack; :func:`check_extra` names the missing packages in one line.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
from pathlib import Path

from ..errors import DmireidError
from .uploads import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install dmireid[serve]"


def check_extra() -> None:
    """Raise a one-line :class:`DmireidError` naming the install command when the web stack is missing."""
    try:
        import python_multipart  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise DmireidError(f"dmireid serve needs the optional web packages (missing: {exc.name}): "
                           f"{INSTALL_HINT}") from None


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1): reachable from this computer only."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def binding_note(host: str, port: int) -> tuple[bool, str]:
    """``(local, sentence)`` saying who can reach the page at ``host:port``."""
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    url = f"http://{shown}:{port}/"
    if is_loopback(host):
        return True, f"serving {url} on {host} only: reachable from this computer, not from the network"
    return False, (f"serving {url}: bound to {host}, NOT a loopback address, so anyone who can reach this "
                   f"machine on port {port} can search the gallery, see its images and add to it")


def make_app(index_dir: str | Path, checkpoint: str | Path | None = None, device: str = "auto",
             host: str = "127.0.0.1", **settings):
    """The application over ``GalleryIndex.open(index_dir, checkpoint, device)``; ``settings`` are
    :class:`~.app.ServeSettings` fields. Loopback hosts accept only loopback ``Host`` headers."""
    check_extra()
    from ..inference import GalleryIndex
    from .app import ServeSettings, create_app

    index_dir = Path(index_dir)
    if not index_dir.is_dir():
        raise DmireidError(f"{index_dir}: no such index folder (make one with dmireid index build)")
    settings.setdefault("allowed_hosts", None if is_loopback(host) else ["*"])
    return create_app(lambda: GalleryIndex.open(index_dir, checkpoint=checkpoint, device=device),
                      ServeSettings(index_dir=index_dir, **settings))


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``; a port already in use (or a bad address) is one line."""
    bare = host.strip("[]")
    try:
        family = socket.getaddrinfo(bare, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
    except (OSError, IndexError) as exc:
        raise DmireidError(f"--host {host}: cannot be bound ({getattr(exc, 'strerror', None) or exc})") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a TIME_WAIT left by a stopped server is fine
        sock.bind((bare, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise DmireidError(f"port {port} on {host} is already in use (another dmireid serve?): "
                               f"stop it or choose another with --port") from None
        raise DmireidError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    return sock


def run_server(index_dir: str | Path, host: str = "127.0.0.1", port: int = 8000,
               checkpoint: str | Path | None = None, device: str = "auto", *,
               topk: int = 10, threshold: float | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
               max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Open the index and serve the page until interrupted (uvicorn, one process)."""
    sock = bind_socket(host, port)  # before loading the model: a busy port is said at once
    try:
        app = make_app(index_dir, checkpoint, device, host, topk=topk, threshold=threshold,
                       max_bytes=max_bytes, max_pixels=max_pixels)
    except BaseException:
        sock.close()
        raise
    import uvicorn

    local, note = binding_note(host, port)
    (log.info if local else log.warning)(note)
    with sock:  # uvicorn serves on our bound socket (fd); host and port are for its messages
        uvicorn.run(app, host=host.strip("[]"), port=port, fd=sock.fileno(), log_config=None, access_log=False)
