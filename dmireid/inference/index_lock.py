"""One writer per gallery folder: an exclusive ``flock`` on ``INDEX_DIR/.lock``, re-entrant in a
process, with a thread lock in front, and a clear line while another process holds it.

    lock = FolderLock(Path("gallery/.lock"))
    with lock.held():            # logs "... being changed by another process (pid 123): waiting ..."
        ...
    with lock.held(wait=False) as got:   # got is False when another process holds it
        ...
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
from pathlib import Path
from typing import Iterator

from ..errors import DmireidError

log = logging.getLogger(__name__)


class FolderLock:
    """``flock(path)`` across processes + ``threading.RLock`` across threads; nesting counted."""

    def __init__(self, path: Path):
        self.path, self.thread_lock = path, threading.RLock()
        self._depth, self._handle = 0, None

    @property
    def held_here(self) -> bool:
        """True inside :meth:`held` on this thread (or another thread of this process holds it)."""
        return self._depth > 0

    def _acquire_file(self, wait: bool) -> bool:
        try:
            handle = open(self.path, "a+")
        except OSError as exc:
            raise DmireidError(f"cannot lock {self.path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                handle.close()
                return False
            handle.seek(0)
            holder = handle.read().strip() or "?"
            log.warning("%s is being changed by another process (pid %s): waiting for its lock %s",
                        self.path.parent, holder, self.path)
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._handle = handle
        return True

    @contextlib.contextmanager
    def held(self, wait: bool = True) -> Iterator[bool]:
        """Hold the lock (yield True); with ``wait=False`` yield False at once when another thread
        or process holds it."""
        if not self.thread_lock.acquire(blocking=wait):
            yield False
            return
        try:
            if self._depth == 0 and not self._acquire_file(wait):
                yield False
                return
            self._depth += 1
            try:
                yield True
            finally:
                self._depth -= 1
                if self._depth == 0:
                    fcntl.flock(self._handle, fcntl.LOCK_UN)
                    self._handle.close()
        finally:
            self.thread_lock.release()
