"""A persistent gallery of embedded images: add, remove, search, with an open-set threshold.

    from dmireid.inference import GalleryIndex
    index = GalleryIndex.build("runs/demo/last.pt", ["crops/"], "gallery/")   # exact search
    index = GalleryIndex.build(..., approximate="ivf-flat", nprobe=32)        # IVF, trained here
    index.add(["new_crops/"], tag="cam2")     # {"added": n, "duplicates": n, "unreadable": [...]}
    hits = index.search(["query.jpg"], topk=5)[0]
    hits[0].path, hits[0].distance, hits[0].match   # cosine distance 1 - cos; match: <= threshold
    distances, ids = index.search_vectors(features, topk=10)   # Q×d unit rows already embedded
    index = GalleryIndex.open("gallery/")     # the checkpoint recorded at build, loaded when needed

Files, and why a SIGKILL at any point leaves the index as before or as after a change: see
:mod:`dmireid.inference.gallery_store`. The index records the *fingerprint* of the encoder's
weights (:func:`~dmireid.embedding.checkpoint.weights_fingerprint`); opening it with another
checkpoint, or adding vectors of another model or dimension, is refused with one line. A file is
keyed by its resolved path and the sha256 of its bytes: adding it again is a no-op, adding it again
after its content changed replaces its entry. The threshold comes from the checkpoint (``open_set``,
written by training's end and by ``dmireid calibrate``) when it was estimated for the same weights.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..embedding.checkpoint import OPEN_SET_KEY, load_checkpoint, weights_fingerprint
from ..data.market_layout import MARKET_NAME
from ..errors import DmireidError
from ..embedding.feature_extractor import FeatureExtractor, embed_files
from ..embedding.inputs import collect_image_paths, describe_unreadable
from .gallery_search import similarities_to_distances
from .gallery_store import META, VECTORS, GalleryStore, read_manifest
from .vector_index import EXACT, LEGACY_HNSW, approximate_params, describe, filled, is_ivf, trained_fields

log = logging.getLogger(__name__)


@dataclass
class Hit:
    """One ranked gallery entry."""

    id: int  # the vector's id in faiss (IndexIDMap2) == the SQLite row id
    path: str  # absolute path of the gallery image
    distance: float  # cosine distance 1 - <q, g> of unit features (smaller = closer), in [0, 2]
    camera: int | None  # from a Market-style name (..._c3s1_...) -> 2 (camera - 1), else None
    tag: str | None
    added_at: str  # ISO time (UTC)
    match: bool | None  # distance <= threshold (None when the index has no threshold)


def camera_of(path: str) -> int | None:
    """camera - 1 from a Market-style file name (``0002_c3s1_000451_03.jpg`` -> 2), else None."""
    found = MARKET_NAME.match(Path(path).name)
    return int(found.group(2)) - 1 if found else None


def file_hash(path: str) -> str:
    """sha256 (hex) of a file's bytes (raises OSError)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def gallery_files(specs: Sequence[str | os.PathLike]) -> list[str]:
    """Resolved absolute paths: folders expanded (recursive, image extensions), anything else taken
    as a file name (a missing one is reported later as unreadable); duplicates dropped."""
    paths: list[str] = []
    for spec in specs:
        found = collect_image_paths([spec]) if Path(spec).is_dir() else [str(spec)]
        paths.extend(str(Path(p).expanduser().resolve()) for p in found)
    return list(dict.fromkeys(paths))


def checkpoint_threshold(state: dict, fingerprint: str, source: str) -> dict | None:
    """The checkpoint's ``open_set`` estimate when it was made with these weights, else None."""
    open_set = state.get(OPEN_SET_KEY)
    if not isinstance(open_set, dict) or "threshold" not in open_set:
        log.info("%s holds no open-set threshold (estimate one with dmireid calibrate)", source)
        return None
    if open_set.get("fingerprint") != fingerprint:
        log.warning("%s: its open-set threshold was estimated with other weights (encoder %s); not used",
                    source, open_set.get("encoder"))
        return None
    return open_set


class GalleryIndex:
    """A gallery folder (faiss vectors + SQLite metadata + index.json) and the model that embeds into it."""

    def __init__(self, store: GalleryStore, checkpoint: str | Path | None = None, device: str | None = "auto"):
        self.store, self.folder, self.device = store, store.folder, device
        self._checkpoint, self._extractor, self._extractor_lock = checkpoint, None, threading.Lock()
        self.block_size: int | None = None  # exact search: gallery rows per BLAS product (None: the default)
        self.last_result: dict | None = None  # what the last add (or build) did
        if checkpoint is not None:
            self.extractor  # noqa: B018 - a checkpoint given explicitly is checked now

    # ------------------------------------------------------------------------- making and opening
    @classmethod
    def build(cls, checkpoint, paths, out_dir, *, approximate: bool | str | None = None, skip_unreadable: bool = False,
              device: str | None = "auto", tag: str | None = None, encoder: str | None = None,
              nlist: int | None = None, nprobe: int | None = None, pq_m: int | None = None) -> "GalleryIndex":
        """Embed ``paths`` (files or folders) with ``checkpoint``'s encoder into a new index in ``out_dir``.

        ``approximate``: a kind of :mod:`~.vector_index` (``ivf-flat``, ``ivf-sq8``, ``ivf-pq``,
        ``hnsw``; True = ``approximate``, the HNSW of before 0.3.0) instead of exact search; an IVF quantizer is trained here on
        the gallery's vectors (``nlist`` default ≈ 4√N). Nothing is written when an image is
        unreadable (unless ``skip_unreadable``) or the folder holds an index.
        """
        out_dir = Path(out_dir)
        if (out_dir / "index.json").exists():
            raise DmireidError(f"{out_dir} already holds a gallery index (add to it with dmireid index add)")
        source = str(Path(checkpoint).resolve())
        state = load_checkpoint(source)
        extractor = FeatureExtractor(state, device=device, encoder=encoder, source=source)
        fingerprint = weights_fingerprint(extractor.model.state_dict())
        open_set = checkpoint_threshold(state, fingerprint, source)
        del state
        index = cls.__new__(cls)
        index._extractor, index._checkpoint, index.device, index.last_result = extractor, source, device, None
        index._extractor_lock, index.block_size = threading.Lock(), None
        prepared = index._prepare(gallery_files(paths), tag, skip_unreadable, existing={})
        kind = LEGACY_HNSW if approximate is True else (approximate or EXACT)  # True: HNSW, as before 0.3.0
        params = approximate_params(kind, len(prepared["rows"]), nlist, nprobe, pq_m)
        manifest = {"fingerprint": fingerprint, "dim": extractor.feature_dim, "checkpoint": source,
                    "encoder": extractor.encoder, "height": extractor.height, "width": extractor.width,
                    **params, **(trained_fields(len(prepared["rows"])) if is_ivf(kind) else {}),
                    "threshold": open_set["threshold"] if open_set else None,
                    "false_match_rate": open_set.get("false_match_rate") if open_set else None,
                    "threshold_source": f"checkpoint ({open_set.get('estimated_from', 'calibration')})"
                    if open_set else None,
                    "created_at": now()}
        empty = None
        if is_ivf(kind):  # trained once, here, on the gallery's own vectors
            empty = filled(manifest, np.zeros(0, np.int64), prepared["vectors"])
        index.store, index.folder = GalleryStore.create(out_dir, manifest, empty), out_dir
        index._commit(prepared)
        return index

    @classmethod
    def open(cls, index_dir, checkpoint=None, device: str | None = "auto") -> "GalleryIndex":
        """Open ``index_dir``. ``checkpoint`` (default: the one recorded at build, loaded at the first
        embedding) must hold the weights the index was built with, else a one-line error."""
        folder = Path(index_dir)
        return cls(GalleryStore(folder, read_manifest(folder)), checkpoint, device)

    @property
    def manifest(self) -> dict[str, Any]:
        return self.store.manifest

    @property
    def extractor(self) -> FeatureExtractor:
        """The recorded encoder of the checkpoint, loaded once and checked against the fingerprint."""
        with self._extractor_lock:
            return self._load_extractor()

    def _load_extractor(self) -> FeatureExtractor:
        if self._extractor is None:
            m = self.manifest
            source = str(self._checkpoint or m["checkpoint"])
            if self._checkpoint is None and not Path(source).is_file():
                raise DmireidError(f"{self.folder}: its checkpoint {source} is gone (pass the checkpoint "
                                   f"it was built with: --checkpoint)")
            extractor = FeatureExtractor(source, device=self.device, encoder=m["encoder"])
            fingerprint = weights_fingerprint(extractor.model.state_dict())
            if fingerprint != m["fingerprint"]:
                raise DmireidError(f"{source}: its {m['encoder']} encoder (weights {fingerprint[:12]}) is not the "
                                   f"model the index {self.folder} was built with ({m['fingerprint'][:12]})")
            self._extractor = extractor
        return self._extractor

    # ------------------------------------------------------------------------- changes
    def add(self, paths, *, tag: str | None = None, skip_unreadable: bool = False) -> dict:
        """Embed and add image files (or folders). Returns ``{"added", "duplicates", "replaced",
        "unreadable": [paths]}``; an unreadable file stops before anything is written unless
        ``skip_unreadable``."""
        files = gallery_files(paths)
        with self.store.locked():  # one add at a time, from lookup to commit (other processes wait, and say so)
            return self._commit(self._prepare(files, tag, skip_unreadable, self.store.meta.lookup(files)))

    def add_embedded(self, paths: Sequence[str], features, *, fingerprint: str, tag: str | None = None) -> dict:
        """Add already embedded files: ``features`` (N×d unit rows) made by the model whose
        :func:`weights_fingerprint` is ``fingerprint`` (another model's vectors are refused)."""
        if fingerprint != self.manifest["fingerprint"]:
            raise DmireidError(f"these vectors come from another model (weights {fingerprint[:12]}) than the "
                               f"index {self.folder} ({self.manifest['fingerprint'][:12]})")
        files = gallery_files(paths)
        features = torch.as_tensor(np.asarray(features, dtype=np.float32))
        if features.ndim != 2 or len(files) != len(features):
            raise DmireidError(f"{len(files)} paths for features of shape {tuple(features.shape)}")
        if features.shape[1] != self.manifest["dim"]:
            raise DmireidError(f"{self.folder}: vectors of d={features.shape[1]} cannot join an index of "
                               f"d={self.manifest['dim']}")
        hashes = {}
        for i, path in enumerate(files):
            try:
                hashes[path] = file_hash(path)
            except OSError:
                raise DmireidError(f"cannot read image {describe_unreadable(path, i)}") from None
        with self.store.locked():
            return self._commit(self._plan(files, hashes, features, tag, [], self.store.meta.lookup(files)))

    def remove(self, paths) -> int:
        """Remove the entries of these files, or of every file under these folders; returns how many."""
        with self.store.locked():
            ids = self.store.meta.ids_under([str(Path(p).expanduser().resolve()) for p in paths])
            if ids:
                self.store.change([], np.zeros((0, self.manifest["dim"]), np.float32), ids)
        log.info("removed %d entries from %s", len(ids), self.folder)
        return len(ids)

    def _prepare(self, files: Sequence[str], tag: str | None, skip_unreadable: bool, existing: dict) -> dict:
        """Hash and embed the new or changed ``files`` (resolved paths) before anything is written;
        an unreadable one is a one-line error, or listed with ``skip_unreadable``."""
        hashes, unreadable = {}, []
        for i, path in enumerate(files):
            try:
                hashes[path] = file_hash(path)
            except OSError:
                if not skip_unreadable:
                    raise DmireidError(f"cannot read image {describe_unreadable(path, i)}; --skip-unreadable "
                                       f"leaves such images out (nothing was written)") from None
                unreadable.append(path)
        todo = [p for p in hashes if existing.get(p, (None, None))[1] != hashes[p]]
        embedded = embed_files(self.extractor, todo, skip_unreadable=skip_unreadable)
        position = {p: i for i, p in enumerate(files)}
        unreadable = sorted(unreadable + embedded.skipped, key=position.__getitem__)  # in input order
        return self._plan(embedded.paths, hashes, embedded.features, tag, unreadable, existing,
                          duplicates=len(hashes) - len(todo))

    def _plan(self, paths, hashes, features, tag, unreadable, existing, duplicates: int | None = None) -> dict:
        new = [p for p in paths if existing.get(p, (None, None))[1] != hashes[p]]
        keep = torch.tensor([existing.get(p, (None, None))[1] != hashes[p] for p in paths], dtype=torch.bool)
        added_at = now()
        return {"rows": [(p, hashes[p], camera_of(p), tag, added_at) for p in new],
                "vectors": features[keep].numpy(),
                "delete": [existing[p][0] for p in new if p in existing],
                "duplicates": len(paths) - len(new) if duplicates is None else duplicates,
                "unreadable": unreadable}

    def _commit(self, plan: dict) -> dict:
        if plan["rows"]:
            self.store.change(plan["rows"], plan["vectors"], plan["delete"])
        result = {"added": len(plan["rows"]), "duplicates": plan["duplicates"], "replaced": len(plan["delete"]),
                  "unreadable": plan["unreadable"]}
        log.info("%s: added %d (%d replaced a changed file), %d already there, %d unreadable", self.folder,
                 result["added"], result["replaced"], result["duplicates"], len(result["unreadable"]))
        self.last_result = result
        return result

    # ------------------------------------------------------------------------- queries
    @property
    def threshold(self) -> float | None:
        value = self.manifest.get("threshold")
        return None if value is None else float(value)

    def set_threshold(self, value: float, false_match_rate: float | None = None, source: str = "set") -> None:
        """Set the open-set distance threshold (cosine distance, in [0, 2]) stored in index.json;
        ``source`` says where it came from (shown by ``info``)."""
        if not 0 <= float(value) <= 2:
            raise DmireidError(f"threshold {value} is not a cosine distance in [0, 2]")
        self.store.update_manifest(threshold=float(value), false_match_rate=false_match_rate, threshold_source=source)

    def search(self, queries, topk: int = 10, threshold: float | None = None) -> list[list[Hit]]:
        """Rank the gallery for each query (file paths or PIL images): up to ``topk`` hits each,
        nearest first; ``match`` against ``threshold`` (default: the index's)."""
        if topk < 1:
            raise DmireidError(f"topk must be >= 1, got {topk}")
        if isinstance(queries, (str, os.PathLike)) or not isinstance(queries, (list, tuple)):
            queries = [queries]
        distances, ids = self.search_vectors(self.extractor(list(queries)).numpy(), topk)
        rows = self.store.meta.rows(sorted({int(i) for i in ids.ravel() if i >= 0}))
        threshold = self.threshold if threshold is None else float(threshold)
        results = []
        for row_distances, row_ids in zip(distances, ids):
            hits = []
            for distance, i in zip(row_distances.tolist(), row_ids.tolist()):
                row = rows.get(i)
                if row is None:
                    continue  # -1 (fewer results) or removed by another process meanwhile
                hits.append(Hit(row["id"], row["path"], distance, row["camera"], row["tag"], row["added_at"],
                                None if threshold is None else distance <= threshold))
            results.append(hits)
        return results

    def search_vectors(self, features, topk: int = 10, nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(distances float32 Q×topk, ids int64 Q×topk)`` of already embedded queries (``features``
        Q×d unit rows of this index's model): cosine distances ``1 - <q, g>`` in [0, 2], nearest
        first, equal distances (equal inner products) by smaller id; where the gallery has fewer
        than ``topk`` entries, id -1 and distance inf. Exact indexes: :func:`~.gallery_search.exact_topk`
        (``self.block_size`` rows per BLAS product); IVF: ``nprobe`` lists (default: the index's)."""
        if topk < 1:
            raise DmireidError(f"topk must be >= 1, got {topk}")
        features = np.asarray(features.numpy() if isinstance(features, torch.Tensor) else features, dtype=np.float32)
        if features.ndim != 2 or features.shape[1] != self.manifest["dim"]:
            raise DmireidError(f"{self.folder}: queries of shape {features.shape} for an index of d={self.manifest['dim']}")
        sims, ids = self.store.search(features, topk, block_size=self.block_size, nprobe=nprobe)
        return similarities_to_distances(sims), ids

    def rebuild(self, approximate: str | None = None, nlist: int | None = None, nprobe: int | None = None,
                pq_m: int | None = None) -> dict:
        """Retrain (IVF: the coarse quantizer on every vector now in the index, ``nlist`` default
        ≈ 4√N again) or change the kind (``approximate``: a kind, or ``"exact"``), atomically."""
        m = self.manifest
        kind = approximate or m["kind"]
        keep = kind == m["kind"]
        params = approximate_params(kind, self.store.meta.count(), nlist,
                                    nprobe or (m.get("nprobe") if keep else None), pq_m or (m.get("pq_m") if keep else None))
        self.store.retrain(params)
        log.info("%s: rebuilt as %s", self.folder, describe(self.manifest))
        return self.info()

    def image_path(self, id: int) -> str:  # noqa: A002 - the contract's name
        row = self.store.meta.rows([int(id)]).get(int(id))
        if row is None:
            raise DmireidError(f"{self.folder}: no image with id {id}")
        return row["path"]

    def info(self) -> dict:
        """count, dim, fingerprint, checkpoint, encoder, kind, threshold, tags, cameras, sizes, ..."""
        self.store.refresh()
        m, fetch = self.manifest, self.store.meta.fetch
        tags = dict(fetch("SELECT coalesce(tag, ''), count(*) FROM images GROUP BY tag"))
        cameras = dict(fetch("SELECT camera, count(*) FROM images WHERE camera IS NOT NULL GROUP BY camera"))
        first, last = fetch("SELECT min(added_at), max(added_at) FROM images")[0]
        return {"index_dir": str(self.folder), "count": self.store.meta.count(), "dim": m["dim"],
                "kind": m["kind"], "faiss": describe_kind(m),
                "parameters": {k: m.get(k) for k in ("nlist", "nprobe", "pq_m", "hnsw_m", "ef_search") if m.get(k)},
                "trained_at": m.get("trained_at"), "trained_on": m.get("trained_on"),
                "fingerprint": m["fingerprint"], "checkpoint": m["checkpoint"], "encoder": m["encoder"],
                "input_size": [m["height"], m["width"]], "threshold": self.threshold,
                "false_match_rate": m.get("false_match_rate"), "threshold_source": m.get("threshold_source"),
                "generation": self.store.generation, "created_at": m.get("created_at"), "first_added": first,
                "last_added": last, "tags": tags, "cameras": cameras,
                "bytes": {name: (self.folder / name).stat().st_size for name in (VECTORS, META)}}


def describe_kind(manifest: dict) -> str:
    return describe(manifest)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
