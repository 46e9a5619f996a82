"""Exact blocked search (one matmul per block + argpartition) against a numpy full sort written here.

The vectors have entries in {0, ±1/4} with exactly 16 non-zeros (unit rows): every inner product
is a multiple of 1/16 computed without rounding in any order, so ties are many and exact, and the
reference's order (larger inner product first, equal ones by smaller id) is unambiguous.
"""

import numpy as np
import pytest
from gallery_support import tiny_checkpoint, tiny_images

from dmireid.inference import GalleryIndex
from dmireid.inference.gallery_search import exact_topk


def tie_rich_rows(rng, n: int, d: int = 32) -> np.ndarray:
    rows = np.zeros((n, d), dtype=np.float32)
    for i in range(n):
        cols = rng.choice(d, 16, replace=False)
        rows[i, cols] = rng.choice([-0.25, 0.25], 16)
    return rows


def reference(gallery, ids, queries, topk):
    """Full sort of every score: by -score, then id (np.lexsort, last key first)."""
    scores = queries.astype(np.float64) @ gallery.astype(np.float64).T
    out_ids = np.full((len(queries), topk), -1, dtype=np.int64)
    out_sims = np.full((len(queries), topk), -np.inf)
    for q in range(len(queries)):
        order = np.lexsort((ids, -scores[q]))[:topk]
        out_ids[q, :len(order)], out_sims[q, :len(order)] = ids[order], scores[q, order]
    return out_sims, out_ids


@pytest.mark.parametrize("n,block,topk", [(1000, 64, 10), (1000, 1000, 10), (1000, 7, 25), (300, 128, 1),
                                          (40, 16, 50), (5, 2, 8), (1000, 3, 1000)])
def test_ranking_equals_the_full_sort_reference(n, block, topk):
    rng = np.random.default_rng(n + block + topk)
    gallery = tie_rich_rows(rng, n)
    gallery[n // 2:n // 2 + 5] = gallery[3]  # exact duplicates: equal scores, ranked by id
    ids = np.sort(rng.choice(10 * n, n, replace=False)).astype(np.int64)  # sorted, with gaps (removed rows)
    queries = np.concatenate([tie_rich_rows(rng, 20), gallery[3:4]])
    sims, found = exact_topk(gallery, ids, queries, topk, block_size=block)
    ref_sims, ref_ids = reference(gallery, ids, queries, topk)
    assert found.shape == sims.shape == (len(queries), topk)
    np.testing.assert_array_equal(found, ref_ids)
    np.testing.assert_array_equal(sims, ref_sims.astype(np.float32))
    copies = ids[np.all(gallery == gallery[3], axis=1)]  # the last query's copies: inner product 1, by id
    shown = min(len(copies), topk)
    assert found[-1, :shown].tolist() == sorted(copies)[:shown] and np.all(sims[-1, :shown] == 1)


def test_ties_at_the_block_boundary_keep_the_smaller_ids():
    gallery = np.tile(np.eye(4, dtype=np.float32)[:1], (50, 1))  # 50 equal rows: every score ties
    ids = np.arange(100, 150, dtype=np.int64)
    sims, found = exact_topk(gallery, ids, gallery[:2], topk=7, block_size=9)
    assert found.tolist() == [list(range(100, 107))] * 2 and np.all(sims == 1)


def test_empty_gallery_and_bad_arguments():
    sims, found = exact_topk(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.ones((2, 4), np.float32), 3)
    assert found.tolist() == [[-1] * 3] * 2 and np.all(np.isneginf(sims))
    with pytest.raises(ValueError):
        exact_topk(np.zeros((3, 4), np.float32), np.arange(3), np.ones((1, 4), np.float32), 0)


def test_gallery_index_search_vectors_uses_the_same_ranking(tmp_path):
    ckpt = tiny_checkpoint(tmp_path / "last.pt")
    images = tiny_images(tmp_path / "gallery", 30)
    index = GalleryIndex.build(ckpt, images, tmp_path / "index", device="cpu")
    ids, vectors = index.store.meta.vectors(index.manifest["dim"])
    queries = np.concatenate([vectors[:4], vectors[7:8]])
    index.block_size = 8
    distances, found = index.search_vectors(queries, topk=40)  # topk > N: padded
    ref_sims, ref_ids = reference(vectors, ids, queries, 40)
    # real features have near-ties below float32 rounding: the same distances, the same ids, each query first
    assert all(set(f) == set(r) for f, r in zip(found[:, :30].tolist(), ref_ids[:, :30].tolist()))
    assert found[:, 0].tolist() == [ids[0], ids[1], ids[2], ids[3], ids[7]] and np.all(found[:, 30:] == -1)
    np.testing.assert_allclose(distances[:, :30], np.clip(1 - ref_sims[:, :30], 0, 2), atol=1e-5)
    assert np.all(np.isinf(distances[:, 30:]))
    hits = index.search(images[:4], topk=5)  # the image path goes through search_vectors too
    assert [[h.id for h in row] for row in hits] == found[:4, :5].tolist()
