"""The files of a gallery index and how a change reaches them atomically ("nothing lost").

    INDEX_DIR/meta.sqlite     the source of truth: one row per image (id, path UNIQUE, content hash,
                              camera, tag, added_at, vector as a float32 BLOB) and a generation number
    INDEX_DIR/vectors.faiss   the faiss index (ids = row ids) of the kind in index.json, see
                              :mod:`dmireid.inference.vector_index`: a derived, searchable copy
    INDEX_DIR/index.json      model fingerprint, dim, checkpoint, threshold, index kind, format, and
                              ``vectors_generation``: the generation vectors.faiss holds

A change (add and/or remove rows) is, in this order:

1. one SQLite transaction inserts/deletes the rows and increments ``generation`` to G+1 (SQLite's
   write-ahead log makes it all-or-nothing: a kill before COMMIT leaves generation G, and a reader
   sees the last committed state, never part of an add);
2. the new faiss index is written to ``vectors.faiss.tmp``, fsynced, ``os.replace``-d over
   ``vectors.faiss``, and the folder fsynced (a kill leaves the old file or the new one, whole);
3. ``index.json`` is rewritten the same way with ``vectors_generation = G+1``.

On open, ``vectors_generation`` is compared with SQLite's generation. Since step 3 follows step 2,
equal numbers mean vectors.faiss holds exactly the rows of meta.sqlite; a lag (a kill between
steps 1 and 3), a missing or unreadable vectors.faiss, or a row count that differs rebuilds
vectors.faiss from the SQLite vectors (and writes it as in steps 2-3). So after a SIGKILL at any
point the index is as before the change (killed before COMMIT) or as after it, and the next
command works. Row ids are never reused (AUTOINCREMENT), so a faiss id always names one image.

Writes hold an exclusive ``flock`` on ``INDEX_DIR/.lock`` (one writer across processes; a second
one logs that it waits, naming the holder's pid) and a thread lock. A change builds a *new* faiss
object and then swaps the :class:`~.vector_index.Snapshot` readers use, so searches in other
threads go on during a change (they see the state before it until it is saved); a reader that sees
another process's newer generation reloads once that process has finished. ``rebuild`` (retrain
an IVF quantizer) is a change without rows: the same steps, the same kill points. Cost: every change
rewrites vectors.faiss (O(N)); add images in batches. Removing from an HNSW index rebuilds its
graph; an IVF index repaired after a kill keeps the quantizer on disk when its nlist is the
manifest's (else it is trained again). SIGKILL tests: ``DMIREID_TEST_KILL_AT=<point>`` (:data:`KILL_POINTS`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sqlite3
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ..errors import DmireidError
from .index_lock import FolderLock
from .vector_index import Snapshot, changed, faiss_module, filled, is_hnsw, is_ivf, trained_fields

log = logging.getLogger(__name__)

FORMAT = "dmireid-gallery/1"
VECTORS, META, MANIFEST, LOCK = "vectors.faiss", "meta.sqlite", "index.json", ".lock"
KILL_ENV = "DMIREID_TEST_KILL_AT"
KILL_POINTS = ("before_meta_commit", "after_meta_commit", "before_vectors_replace", "after_vectors",
               "after_manifest")
COLUMNS = ("id", "path", "content_hash", "camera", "tag", "added_at")
SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY AUTOINCREMENT, path TEXT NOT NULL UNIQUE, content_hash TEXT NOT NULL,
    camera INTEGER, tag TEXT, added_at TEXT NOT NULL, vector BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS images_tag ON images(tag);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO state VALUES ('generation', 0);
"""


def kill_point(name: str) -> None:
    """Test hook: SIGKILL this process at ``name`` when ``DMIREID_TEST_KILL_AT`` names it."""
    if os.environ.get(KILL_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, write: Callable[[Path], None], kill_before: str | None = None,
                 kill_after: str | None = None) -> None:
    """``write(tmp)``, fsync, ``os.replace(tmp, path)``, fsync the folder: ``path`` is old or new, whole."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if kill_before:
            kill_point(kill_before)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise DmireidError(f"cannot write {path}: {exc.strerror or exc}") from None
    if kill_after:
        kill_point(kill_after)


def write_json(path: Path, data: dict, kill_after: str | None = None) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(json.dumps(data, indent=1) + "\n"), kill_after=kill_after)


def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    if not path.is_file():
        raise DmireidError(f"{folder} is not a gallery index (no {MANIFEST}; make one with dmireid index build)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DmireidError(f"{path} cannot be read ({' '.join(str(exc).split())[:120]})") from None
    if manifest.get("format") != FORMAT:
        raise DmireidError(f"{path}: format {manifest.get('format')!r} is not {FORMAT!r}")
    return manifest


class MetaStore:
    """meta.sqlite: rows and the generation number. Writes: one autocommit connection, explicit
    transactions, under ``self.db_lock``. Reads (:meth:`fetch`): one connection per thread, so a
    search never waits for a transaction and, the database being in WAL mode, sees the last commit."""

    def __init__(self, path: Path):
        self.path, self.db_lock = path, threading.RLock()
        self._local, self._readers, self._readers_lock = threading.local(), [], threading.Lock()
        try:
            self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=60)
            self.db.execute("PRAGMA journal_mode=WAL")  # readers see the last commit while a writer works
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(SCHEMA)
        except sqlite3.Error as exc:
            raise DmireidError(f"{path}: cannot open the metadata database ({exc})") from None

    def close(self) -> None:
        with self.db_lock, self._readers_lock:
            for db in [self.db, *self._readers]:
                db.close()
            self._readers.clear()

    def fetch(self, sql: str, params: Sequence = ()) -> list[tuple]:
        """Every row of one read-only statement, on this thread's reading connection."""
        db = getattr(self._local, "db", None)
        if db is None:
            try:
                db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=60)
            except sqlite3.Error as exc:
                raise DmireidError(f"{self.path}: cannot open the metadata database ({exc})") from None
            with self._readers_lock:
                self._readers.append(db)
            self._local.db = db
        return db.execute(sql, params).fetchall()

    def generation(self) -> int:
        return int(self.fetch("SELECT value FROM state WHERE key='generation'")[0][0])

    def count(self) -> int:
        return int(self.fetch("SELECT count(*) FROM images")[0][0])

    def lookup(self, paths: Sequence[str]) -> dict[str, tuple[int, str]]:
        """``{path: (id, content_hash)}`` of the given paths that are in the index."""
        found: dict[str, tuple[int, str]] = {}
        for start in range(0, len(paths), 500):
            chunk = list(paths[start:start + 500])
            query = f"SELECT path, id, content_hash FROM images WHERE path IN ({','.join('?' * len(chunk))})"
            found.update({p: (i, h) for p, i, h in self.fetch(query, chunk)})
        return found

    def rows(self, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        """``{id: {column: value}}`` (no vectors) of the given ids."""
        out: dict[int, dict[str, Any]] = {}
        for start in range(0, len(ids), 500):
            chunk = [int(i) for i in ids[start:start + 500]]
            query = f"SELECT {','.join(COLUMNS)} FROM images WHERE id IN ({','.join('?' * len(chunk))})"
            out.update({row[0]: dict(zip(COLUMNS, row)) for row in self.fetch(query, chunk)})
        return out

    def ids_under(self, paths: Sequence[str]) -> list[int]:
        """Ids of rows whose path is one of ``paths`` or lies in a folder named by one of them."""
        ids: set[int] = set()
        for path in paths:
            prefix = path.rstrip("/") + "/"
            escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            ids.update(i for (i,) in self.fetch(
                "SELECT id FROM images WHERE path = ? OR path LIKE ? ESCAPE '\\'", (path, escaped + "%")))
        return sorted(ids)

    def vectors(self, dim: int) -> tuple[np.ndarray, np.ndarray]:
        """``(ids int64 N, vectors float32 N×dim)`` of every row, by id."""
        rows = self.fetch("SELECT id, vector FROM images ORDER BY id")
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dim)
        return ids, vectors

    def apply(self, rows: Sequence[tuple], vectors: np.ndarray, delete_ids: Sequence[int]) -> tuple[int, np.ndarray]:
        """One transaction: delete ``delete_ids``, insert ``rows`` (path, hash, camera, tag, added_at)
        with ``vectors`` (row i ↔ vectors[i]) under fresh ids, generation + 1. Returns (generation, ids)."""
        db = self.db
        try:
            with self.db_lock:
                db.execute("BEGIN IMMEDIATE")
                try:
                    db.executemany("DELETE FROM images WHERE id = ?", ((int(i),) for i in delete_ids))
                    seq = db.execute("SELECT seq FROM sqlite_sequence WHERE name='images'").fetchone()
                    first = (int(seq[0]) if seq else 0) + 1
                    ids = np.arange(first, first + len(rows), dtype=np.int64)
                    db.executemany("INSERT INTO images (id, path, content_hash, camera, tag, added_at, vector) "
                                   "VALUES (?, ?, ?, ?, ?, ?, ?)",
                                   ((int(i), *row, v.tobytes()) for i, row, v in zip(ids, rows, vectors)))
                    db.execute("UPDATE state SET value = value + 1 WHERE key='generation'")
                    generation = int(db.execute("SELECT value FROM state WHERE key='generation'").fetchone()[0])
                    kill_point("before_meta_commit")
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            raise DmireidError(f"{self.path}: the change was not saved ({exc}); the index is as it was") from None
        kill_point("after_meta_commit")
        return generation, ids


class GalleryStore:
    """meta.sqlite + vectors.faiss + index.json of one folder, kept in step (see the module doc)."""

    def __init__(self, folder: Path, manifest: dict[str, Any]):
        self.folder, self.manifest = folder, manifest
        self.meta = MetaStore(folder / META)
        self.lock = FolderLock(folder / LOCK)  # this process's changes and reloads, and other processes'
        self.snapshot: Snapshot | None = None  # what searches read; replaced whole, never changed
        self._stale = False
        self.load()

    vectors = property(lambda self: self.snapshot.index, doc="The faiss index readers see now.")
    generation = property(lambda self: self.snapshot.generation)

    @classmethod
    def create(cls, folder: Path, manifest: dict[str, Any], index=None) -> "GalleryStore":
        """A new index in ``folder`` (which must hold no index yet; the files of a build cut short
        before its index.json was written are replaced), empty or with ``index``'s (trained) structure."""
        if (folder / MANIFEST).exists():
            raise DmireidError(f"{folder} already holds a gallery index (add to it with dmireid index add)")
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for stale in (META, META + "-journal", META + "-wal", META + "-shm", VECTORS):
                (folder / stale).unlink(missing_ok=True)
        except OSError as exc:
            raise DmireidError(f"cannot create index folder {folder}: {exc.strerror or exc}") from None
        MetaStore(folder / META).close()
        empty = index if index is not None else filled(manifest, np.zeros(0, np.int64), None)
        write_atomic(folder / VECTORS, lambda tmp: faiss_module().write_index(empty, str(tmp)))
        write_json(folder / MANIFEST, {**manifest, "format": FORMAT, "vectors_generation": 0})
        return cls(folder, read_manifest(folder))

    @contextlib.contextmanager
    def locked(self, wait: bool = True) -> Iterator[bool]:
        """Exclusive across threads and processes (:class:`~.index_lock.FolderLock`); re-entrant.
        ``wait=False`` yields False at once when another thread or process holds it."""
        with self.lock.held(wait) as got:
            yield got

    def refresh(self) -> None:
        """Reload when another process moved meta.sqlite to a newer generation. Never waits for a
        change in progress (this process's or another's): the snapshot before it is served meanwhile."""
        if not self._stale and self.meta.generation() == self.snapshot.generation:
            return
        if not self.lock.thread_lock.acquire(blocking=False):
            return  # a change in this process: its new snapshot arrives when it is saved
        try:
            self.load(wait=False)
        finally:
            self.lock.thread_lock.release()

    def sync(self) -> None:
        """Under :meth:`locked`: make the snapshot hold meta.sqlite's generation (repairing if needed)."""
        if self._stale or self.meta.generation() != self.snapshot.generation:
            self.load()

    def _read_vectors(self, generation: int):
        """``(faiss index or None, problem)``: vectors.faiss when it holds ``generation``."""
        if self.manifest.get("vectors_generation") != generation:
            return None, f"it holds generation {self.manifest.get('vectors_generation')}, the metadata {generation}"
        try:
            vectors = faiss_module().read_index(str(self.folder / VECTORS))
        except RuntimeError as exc:
            return None, f"unreadable ({' '.join(str(exc).split())[:80]})"
        if vectors.ntotal != self.meta.count() or vectors.d != self.manifest["dim"]:
            return None, f"{vectors.ntotal} vectors of d={vectors.d} for {self.meta.count()} rows"
        return vectors, ""

    def load(self, wait: bool = True) -> None:
        """Read vectors.faiss; rebuild it from meta.sqlite when it lags (a change was cut short).
        ``wait=False``: keep the current snapshot while another process holds the lock."""
        manifest, generation = read_manifest(self.folder), self.meta.generation()
        self.manifest = manifest
        vectors, problem = self._read_vectors(generation)
        if problem:
            with self.locked(wait=wait or self.snapshot is None) as got:
                if not got:
                    return  # another process is mid-change: its result is read once it is saved
                self.manifest, generation = read_manifest(self.folder), self.meta.generation()
                vectors, problem = self._read_vectors(generation)  # look again: it may have finished
                if problem:
                    log.warning("%s: %s was not up to date (%s): rebuilt from %s", self.folder, VECTORS,
                                problem, META)
                    vectors, retrained = self.rebuilt()
                    self.save_vectors(vectors, generation, **retrained)
        self.snapshot, self._stale = Snapshot.of(vectors, generation, self.manifest), False

    def rebuilt(self):
        """``(faiss index of every vector in meta.sqlite, manifest changes)``. IVF: with the quantizer
        of the vectors.faiss on disk when it is readable, trained, of the manifest's nlist (else
        trained again, and said)."""
        ids, vectors = self.meta.vectors(self.manifest["dim"])
        trained_like, retrained = None, {}
        if is_ivf(self.manifest["kind"]):
            faiss = faiss_module()
            try:
                on_disk = faiss.read_index(str(self.folder / VECTORS))
                if on_disk.is_trained and faiss.extract_index_ivf(on_disk).nlist == self.manifest["nlist"]:
                    trained_like = on_disk
            except RuntimeError:
                pass
            if trained_like is None:
                log.warning("%s: the quantizer is trained again on the %d vectors of %s", self.folder, len(ids), META)
                retrained = trained_fields(len(ids))
        return filled({**self.manifest, **retrained}, ids, vectors, trained_like), retrained

    def save_vectors(self, vectors, generation: int, **manifest_changes) -> None:
        """Steps 2-3 of a change: vectors.faiss, then index.json's ``vectors_generation`` (and changes)."""
        faiss = faiss_module()
        write_atomic(self.folder / VECTORS, lambda tmp: faiss.write_index(vectors, str(tmp)),
                     kill_before="before_vectors_replace", kill_after="after_vectors")
        self.manifest = {**read_manifest(self.folder), **manifest_changes, "vectors_generation": generation}
        write_json(self.folder / MANIFEST, self.manifest, kill_after="after_manifest")

    def change(self, rows: Sequence[tuple], vectors: np.ndarray, delete_ids: Sequence[int] = ()) -> np.ndarray:
        """Atomically delete ``delete_ids`` and add ``rows`` with ``vectors`` (N×dim float32 unit rows);
        returns the new rows' ids. Searches in other threads read the snapshot before it meanwhile."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(rows):
            raise DmireidError(f"{len(rows)} rows for vectors of shape {vectors.shape}")
        if len(rows) and vectors.shape[1] != self.manifest["dim"]:
            raise DmireidError(f"{self.folder}: vectors of d={vectors.shape[1]} cannot join an index of "
                               f"d={self.manifest['dim']}")
        with self.locked():
            self.sync()
            generation, ids = self.meta.apply(rows, vectors, delete_ids)
            try:
                if len(delete_ids) and is_hnsw(self.manifest["kind"]):
                    new = self.rebuilt()[0]  # HNSW graphs cannot drop nodes
                else:
                    new = changed(self.snapshot.index, self.manifest, vectors, ids, delete_ids)
                self.save_vectors(new, generation)
            except (DmireidError, RuntimeError) as exc:
                self._stale = True  # reload (and rebuild) at the next use
                raise DmireidError(f"{exc}; the change is saved in {META} and {VECTORS} is rebuilt at the "
                                   f"next use") from None
            self.snapshot = Snapshot.of(new, generation, self.manifest)
        return ids

    def retrain(self, params: dict[str, Any]) -> None:
        """``dmireid index rebuild``: a new faiss index of ``params`` (kind, nlist, ...) over every
        vector, trained again, as one change (generation + 1, the same steps and kill points)."""
        with self.locked():
            self.sync()
            generation, _ = self.meta.apply([], np.zeros((0, self.manifest["dim"]), np.float32), [])
            ids, vectors = self.meta.vectors(self.manifest["dim"])
            cleared = {k: None for k in ("nlist", "nprobe", "pq_m", "hnsw_m", "ef_search", "trained_at", "trained_on")}
            manifest = {**self.manifest, **cleared, **params,
                        **(trained_fields(len(ids)) if is_ivf(params["kind"]) else {})}
            new = filled(manifest, ids, vectors)
            self.manifest = manifest
            try:
                self.save_vectors(new, generation, **manifest)
            except (DmireidError, RuntimeError):
                self._stale = True
                raise
            self.snapshot = Snapshot.of(new, generation, self.manifest)

    def update_manifest(self, **changes) -> None:
        with self.locked():
            self.manifest = {**read_manifest(self.folder), **changes}
            write_json(self.folder / MANIFEST, self.manifest)

    def search(self, queries: np.ndarray, k: int, block_size: int | None = None,
               nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(similarities Q×k, ids Q×k)`` (inner products; id -1, -inf where the index has fewer than k)."""
        self.refresh()
        snapshot = self.snapshot
        sims, ids = snapshot.search(queries, k, **({"block_size": block_size} if block_size else {}), nprobe=nprobe)
        sims = np.where(ids < 0, -np.inf, sims).astype(np.float32)
        return sims, ids
