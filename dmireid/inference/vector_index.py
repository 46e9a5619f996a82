"""The faiss side of a gallery index: the kinds, training, changes without touching what readers
see, and searching a snapshot.

Kinds (``index.json`` ``kind``):

- ``exact``: ``IndexIDMap2(IndexFlatIP)``; searched by :func:`~.gallery_search.exact_topk` (one
  sgemm per block + partial top-k) on a zero-copy view of the flat vectors, not by faiss's scan;
- ``ivf-flat`` / ``ivf-sq8`` / ``ivf-pq``: ``IndexIVF*`` (inner product) with ``nlist`` lists
  (default ≈ 4√N), vectors stored whole, as 8-bit scalar-quantized residuals, or as product
  codes (``pq_m`` bytes); ``nprobe`` lists searched per query. The coarse quantizer is trained
  once, at build (or ``rebuild``), on a sample of the gallery's own vectors (at most
  ``TRAIN_PER_LIST × nlist`` rows, seeded; ``TRAIN_ITERATIONS`` k-means rounds); adding never retrains;
- ``hnsw`` (``approximate`` in indexes made before 0.3.0): ``IndexIDMap2(IndexHNSWFlat)``.

A change never modifies the faiss object a reader may be searching: :func:`changed` returns a new
one (a copy plus the change), and :class:`Snapshot` pairs one faiss object with its generation.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np

from ..errors import DmireidError
from .gallery_search import DEFAULT_BLOCK_SIZE, exact_topk

log = logging.getLogger(__name__)

EXACT, LEGACY_HNSW = "exact", "approximate"
IVF_CODES = {"ivf-flat": "Flat", "ivf-sq8": "SQ8", "ivf-pq": "PQ{pq_m}"}
APPROXIMATE_KINDS = ("ivf-flat", "ivf-sq8", "ivf-pq", "hnsw")
DEFAULT_APPROXIMATE = "ivf-flat"  # recall@10 >= 0.95 at the largest speed-up measured (benchmarks/bench_index.py)
HNSW_M, HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH = 32, 80, 128
DEFAULT_NPROBE, DEFAULT_PQ_M, PQ_CODEBOOK = 64, 64, 256  # nprobe 64: recall@10 0.957 at 1M (bench_index)
TRAIN_PER_LIST, TRAIN_SEED, TRAIN_ITERATIONS = 40, 0, 10


def faiss_module():
    try:
        import faiss  # noqa: PLC0415
    except Exception:  # ImportError, or a broken binary wheel
        raise DmireidError("the gallery index needs faiss: pip install 'dmireid[faiss]' (faiss-cpu)") from None
    return faiss


def is_ivf(kind: str) -> bool:
    return kind in IVF_CODES


def is_hnsw(kind: str) -> bool:
    return kind in ("hnsw", LEGACY_HNSW)


def default_nlist(count: int) -> int:
    """≈ 4√N lists, and at least 39 training vectors per list (faiss's k-means minimum)."""
    return max(1, min(round(4 * math.sqrt(max(count, 1))), count // 39))


def approximate_params(kind: str, count: int, nlist: int | None = None, nprobe: int | None = None,
                       pq_m: int | None = None) -> dict[str, Any]:
    """The manifest fields of an index ``kind`` for a gallery of ``count`` vectors."""
    if kind == EXACT:
        return {"kind": kind}
    if kind not in APPROXIMATE_KINDS and kind != LEGACY_HNSW:
        raise DmireidError(f"--approximate {kind!r}: expected one of {', '.join(APPROXIMATE_KINDS)}")
    if is_hnsw(kind):
        return {"kind": kind, "hnsw_m": HNSW_M, "ef_search": HNSW_EF_SEARCH}
    for name, value in (("nlist", nlist), ("nprobe", nprobe), ("pq_m", pq_m)):
        if value is not None and value < 1:
            raise DmireidError(f"--{name} must be >= 1, got {value}")
    return {"kind": kind, "nlist": int(nlist or default_nlist(count)), "nprobe": int(nprobe or DEFAULT_NPROBE),
            "pq_m": int(pq_m or DEFAULT_PQ_M) if kind == "ivf-pq" else None}


def new_index(manifest: dict[str, Any]):
    """An empty faiss index of the manifest's kind (an IVF one still untrained)."""
    faiss, kind, dim = faiss_module(), manifest["kind"], manifest["dim"]
    if kind == EXACT:
        return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    if is_hnsw(kind):
        inner = faiss.IndexHNSWFlat(dim, int(manifest.get("hnsw_m") or HNSW_M), faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        return faiss.IndexIDMap2(inner)
    code = IVF_CODES[kind].format(pq_m=manifest.get("pq_m") or DEFAULT_PQ_M)
    if kind == "ivf-pq" and dim % int(manifest.get("pq_m") or DEFAULT_PQ_M):
        raise DmireidError(f"--pq-m {manifest.get('pq_m')} does not divide the dimension {dim}")
    return faiss.index_factory(dim, f"IVF{manifest['nlist']},{code}", faiss.METRIC_INNER_PRODUCT)


def train(index, vectors: np.ndarray, nlist: int) -> None:
    """Train an IVF index's quantizer (and codes) on a seeded sample of ``vectors`` (N×d)."""
    if len(vectors) < nlist:
        raise DmireidError(f"an IVF index of {nlist} lists needs at least {nlist} vectors to train on, "
                           f"the gallery has {len(vectors)}")
    limit = TRAIN_PER_LIST * max(nlist, PQ_CODEBOOK if "PQ" in type(index).__name__ else 0)
    if len(vectors) > limit:
        rows = np.sort(np.random.default_rng(TRAIN_SEED).choice(len(vectors), limit, replace=False))
        vectors = vectors[rows]
    faiss_module().extract_index_ivf(index).cp.niter = TRAIN_ITERATIONS  # k-means iterations
    index.train(np.ascontiguousarray(vectors, dtype=np.float32))


def trained_fields(count: int) -> dict[str, Any]:
    return {"trained_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "trained_on": int(count)}


def filled(manifest: dict[str, Any], ids: np.ndarray, vectors: np.ndarray, trained_like=None):
    """A new faiss index of ``vectors`` under ``ids``; IVF: trained on them, or with the quantizer
    of ``trained_like`` (a trained index of the same kind and nlist) when given."""
    faiss = faiss_module()
    if trained_like is not None and is_ivf(manifest["kind"]):
        index = faiss.clone_index(trained_like)
        index.reset()
    else:
        index = new_index(manifest)
        if is_ivf(manifest["kind"]):
            if manifest["kind"] == "ivf-pq" and len(vectors) < PQ_CODEBOOK:
                raise DmireidError(f"ivf-pq needs at least {PQ_CODEBOOK} vectors to train its 8-bit codebooks, "
                                   f"the gallery has {len(vectors)} (use ivf-flat or ivf-sq8)")
            train(index, vectors, manifest["nlist"])
    if len(ids):
        index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(ids, dtype=np.int64))
    return index


def changed(index, manifest: dict[str, Any], vectors: np.ndarray, ids: np.ndarray, delete_ids) -> Any:
    """A new faiss index: ``index`` without ``delete_ids``, plus ``vectors`` under ``ids`` (never
    retrains; ``index`` itself is left untouched for the readers that hold it)."""
    faiss = faiss_module()
    delete_ids = np.asarray(delete_ids, dtype=np.int64)
    if manifest["kind"] == EXACT:
        old_ids, old_vectors = flat_view(index)
        keep = ~np.isin(old_ids, delete_ids) if len(delete_ids) else slice(None)
        new = faiss.IndexIDMap2(faiss.IndexFlatIP(manifest["dim"]))
        new.add_with_ids(np.ascontiguousarray(old_vectors[keep]), old_ids[keep])
    else:
        new = faiss.clone_index(index)
        if len(delete_ids):
            new.remove_ids(delete_ids)  # IVF lists and IndexIDMap2 drop them; HNSW is rebuilt by the caller
    if len(ids):
        new.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(ids, dtype=np.int64))
    return new


def flat_view(index) -> tuple[np.ndarray, np.ndarray]:
    """``(ids N, vectors N×d)`` of an ``IndexIDMap2(IndexFlatIP)``: the vectors a view of faiss's
    memory (valid while ``index`` lives and is not changed), in stored order."""
    faiss = faiss_module()
    flat = faiss.downcast_index(index.index)
    ids = faiss.vector_to_array(index.id_map).astype(np.int64)
    if flat.ntotal == 0:
        return ids, np.zeros((0, flat.d), dtype=np.float32)
    return ids, faiss.rev_swig_ptr(flat.get_xb(), flat.ntotal * flat.d).reshape(flat.ntotal, flat.d)


@dataclass(frozen=True)
class Snapshot:
    """One faiss index as readers see it, and the generation of meta.sqlite it holds."""

    index: Any
    generation: int
    manifest: dict[str, Any]
    ids: np.ndarray = field(default=None, repr=False)  # exact: ids sorted ascending
    matrix: np.ndarray = field(default=None, repr=False)  # exact: N×d rows in the order of ids

    @classmethod
    def of(cls, index, generation: int, manifest: dict[str, Any]) -> "Snapshot":
        if manifest["kind"] != EXACT:
            return cls(index, generation, manifest)
        ids, matrix = flat_view(index)
        if len(ids) > 1 and not np.all(ids[1:] > ids[:-1]):  # not in id order (an index of another tool)
            order = np.argsort(ids, kind="stable")
            ids, matrix = ids[order], matrix[order]
        return cls(index, generation, manifest, ids, matrix)

    @property
    def count(self) -> int:
        return int(self.index.ntotal)

    def search(self, queries: np.ndarray, k: int, block_size: int = DEFAULT_BLOCK_SIZE,
               nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(similarities Q×k, ids Q×k)``, nearest first; id -1 / -inf where fewer than k."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if self.matrix is not None:
            return exact_topk(self.matrix, self.ids, queries, k, block_size)
        faiss, kind = faiss_module(), self.manifest["kind"]
        if is_ivf(kind):
            params = faiss.SearchParametersIVF(nprobe=int(nprobe or self.manifest.get("nprobe") or DEFAULT_NPROBE))
        else:
            params = faiss.SearchParametersHNSW(efSearch=max(int(self.manifest.get("ef_search") or
                                                                 HNSW_EF_SEARCH), k))
        return self.index.search(queries, k, params=params)


def describe(manifest: dict[str, Any]) -> str:
    """One line: the faiss structure and its search parameters."""
    kind = manifest["kind"]
    if kind == EXACT:
        return "IndexIDMap2(IndexFlatIP), blocked BLAS search"
    if is_hnsw(kind):
        return f"IndexIDMap2(IndexHNSWFlat inner product, M={manifest.get('hnsw_m')}, efSearch={manifest.get('ef_search')})"
    code = IVF_CODES[kind].format(pq_m=manifest.get("pq_m"))
    return (f"IVF{manifest['nlist']},{code} inner product, nprobe={manifest['nprobe']}, trained "
            f"{manifest.get('trained_at')} on {manifest.get('trained_on')} vectors")
