"""Evaluation metrics (spec §6) against a dense, per-query reference and hand-computed cases."""

import sys
import types

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from dmireid.errors import DmireidError
from dmireid.evaluation import evaluate, pairwise_distance


# --------------------------------------------------------------------------------- reference
def reference_metrics(qf, gf, q_pids, g_pids, q_cams, g_cams, max_rank, dist=None):
    """Straightforward dense evaluation: full matrix, per-query mask, sklearn AP, stable argsort."""
    if dist is None:
        dist = pairwise_distance(qf, gf).numpy()  # the same float32 values -> the same ties
    dist = np.asarray(dist, dtype=np.float64)
    aps, inps, firsts = [], [], []
    for i in range(len(q_pids)):
        keep = ~((g_pids == q_pids[i]) & (g_cams == q_cams[i]))
        match = g_pids[keep] == q_pids[i]
        d = dist[i, keep]
        if not match.any():
            continue
        aps.append(average_precision_score(match, -d))
        hits = np.flatnonzero(match[np.argsort(d, kind="stable")])
        firsts.append(hits[0])
        inps.append(len(hits) / (hits[-1] + 1))
    firsts = np.array(firsts)
    cmc = np.array([np.mean(firsts < k) for k in range(1, max_rank + 1)])
    return {"mAP": float(np.mean(aps)), "cmc": cmc, "mINP": float(np.mean(inps)), "num_valid_queries": len(aps)}


def random_problem(seed, num_q, num_g, num_ids, num_cams, dim, quantised):
    """Clustered features with distractors (pid 0), same-camera matches and (if quantised) many ties."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((num_ids + 1, dim))
    q_pids = rng.integers(1, num_ids + 1, num_q)
    g_pids = rng.integers(0, num_ids + 1, num_g)  # 0 = distractor
    q_cams = rng.integers(0, num_cams, num_q)
    g_cams = rng.integers(0, num_cams, num_g)
    qf = centres[q_pids] + 1.5 * rng.standard_normal((num_q, dim))
    gf = centres[g_pids] + 1.5 * rng.standard_normal((num_g, dim))
    if quantised:  # multiples of 1/2 in [-2, 2]: exact float32 dot products, lots of equal distances
        qf, gf = np.clip(np.round(qf), -2, 2) / 2, np.clip(np.round(gf), -2, 2) / 2
    else:
        qf /= np.linalg.norm(qf, axis=1, keepdims=True)
        gf /= np.linalg.norm(gf, axis=1, keepdims=True)
    return (qf.astype(np.float32), gf.astype(np.float32), q_pids, g_pids, q_cams, g_cams)


def assert_same(ours, ref, tol=1e-6):
    assert ours["num_valid_queries"] == ref["num_valid_queries"]
    assert ours["mAP"] == pytest.approx(ref["mAP"], abs=tol)
    assert ours["mINP"] == pytest.approx(ref["mINP"], abs=tol)
    assert ours["cmc"].dtype == np.float64 and ours["cmc"].shape == ref["cmc"].shape
    np.testing.assert_allclose(ours["cmc"], ref["cmc"], atol=tol, rtol=0)


PROBLEMS = [  # (seed, Q, G, ids, cams, dim, quantised, max_rank)
    (0, 40, 150, 12, 3, 4, True, 50),
    (1, 60, 90, 20, 2, 3, True, 5),
    (2, 30, 200, 8, 6, 6, True, 1),
    (3, 50, 120, 15, 4, 16, False, 200),  # max_rank beyond the gallery: CMC saturates
    (4, 25, 300, 5, 2, 2, True, 20),  # 2-D coarse features: huge tie blocks
]


@pytest.mark.parametrize("seed,nq,ng,ids,cams,dim,quantised,max_rank", PROBLEMS)
def test_matches_dense_reference(seed, nq, ng, ids, cams, dim, quantised, max_rank):
    problem = random_problem(seed, nq, ng, ids, cams, dim, quantised)
    qf, gf, qp, gp, qc, gc = problem
    dist = pairwise_distance(qf, gf).numpy()
    if quantised:  # the problem really has ties between matches and non-matches
        assert any(len(np.unique(row)) < len(row) // 2 for row in dist)
    assert (gp == 0).any() and any(((gp == p) & (gc == c)).any() for p, c in zip(qp, qc))
    ref = reference_metrics(*problem, max_rank)
    assert 0 < ref["num_valid_queries"] <= nq
    ours = evaluate(*problem, max_rank=max_rank)
    assert_same(ours, ref)
    assert 0.0 <= ours["mAP"] <= 1.0 and 0.0 <= ours["mINP"] <= 1.0


@pytest.mark.parametrize("seed", [0, 4])
def test_chunking_does_not_change_results(seed):
    problem = random_problem(seed, 37, 150, 10, 3, 4, True)
    whole = evaluate(*problem, chunk_size=10_000)
    for chunk in (1, 7):
        part = evaluate(*problem, chunk_size=chunk)
        assert part["mAP"] == whole["mAP"] and part["mINP"] == whole["mINP"]
        np.testing.assert_array_equal(part["cmc"], whole["cmc"])
        assert part["num_valid_queries"] == whole["num_valid_queries"]


def test_torch_and_numpy_inputs_agree():
    qf, gf, qp, gp, qc, gc = random_problem(5, 30, 80, 10, 3, 8, False)
    as_np = evaluate(qf, gf, qp, gp, qc, gc)
    as_torch = evaluate(torch.from_numpy(qf), torch.from_numpy(gf), torch.from_numpy(qp), torch.from_numpy(gp),
                        torch.from_numpy(qc), torch.from_numpy(gc))
    as_lists = evaluate(qf.astype(np.float64), gf, qp.tolist(), gp.tolist(), qc.tolist(), gc.tolist())
    for other in (as_torch, as_lists):
        assert other["mAP"] == as_np["mAP"] and other["mINP"] == as_np["mINP"]
        np.testing.assert_array_equal(other["cmc"], as_np["cmc"])
    assert isinstance(as_np["mAP"], float) and isinstance(as_np["num_valid_queries"], int)


def test_inputs_are_not_modified():
    qf, gf, qp, gp, qc, gc = random_problem(6, 10, 40, 5, 2, 4, True)
    copies = [a.copy() for a in (qf, gf, qp, gp, qc, gc)]
    evaluate(qf, gf, qp, gp, qc, gc)
    for before, after in zip(copies, (qf, gf, qp, gp, qc, gc)):
        np.testing.assert_array_equal(before, after)


def test_pairwise_distance_is_squared_euclidean():
    rng = np.random.default_rng(0)
    q, g = rng.standard_normal((7, 5)).astype(np.float32), rng.standard_normal((9, 5)).astype(np.float32)
    d = pairwise_distance(q, g)
    assert d.dtype == torch.float32 and d.shape == (7, 9)
    expected = ((q[:, None, :].astype(np.float64) - g[None, :, :]) ** 2).sum(-1)
    np.testing.assert_allclose(d.numpy(), expected, rtol=1e-5, atol=1e-5)
    u = q / np.linalg.norm(q, axis=1, keepdims=True)
    np.testing.assert_allclose(pairwise_distance(u, u).numpy(), 2 - 2 * u @ u.T, atol=1e-5)


# ---------------------------------------------------------------------------- hand-computed
def one_query(distances, pids, cams, q_pid=1, q_cam=0, max_rank=5):
    """One query at the origin of a 1-D space; gallery item i at sqrt(distances[i]) (exact squares)."""
    gf = np.sqrt(np.asarray(distances, dtype=np.float32))[:, None]
    return evaluate(np.zeros((1, 1), np.float32), gf, [q_pid], pids, [q_cam], cams, max_rank=max_rank)


def test_hand_case_no_ties():
    # ranked: neg, match, match, neg, distractor -> AP = (1/2 + 2/3) / 2, first match at rank 2, last at 3
    r = one_query([1, 4, 9, 16, 25], pids=[2, 1, 1, 3, 0], cams=[1, 1, 2, 1, 1])
    assert r["mAP"] == pytest.approx(7 / 12)  # 0.58333...
    np.testing.assert_array_equal(r["cmc"], [0, 1, 1, 1, 1])
    assert r["mINP"] == pytest.approx(2 / 3)
    assert r["num_valid_queries"] == 1


def test_hand_case_same_camera_match_is_left_out():
    # the closest item has the query's pid and camera: removed, the rest as in the case above
    r = one_query([0.25, 1, 4, 9, 16, 25], pids=[1, 2, 1, 1, 3, 0], cams=[0, 1, 1, 2, 1, 1])
    assert r["mAP"] == pytest.approx(7 / 12)
    np.testing.assert_array_equal(r["cmc"], [0, 1, 1, 1, 1])
    assert r["mINP"] == pytest.approx(2 / 3)


def test_hand_case_tie_block_is_one_threshold():
    # distances 1 (neg), 4 (match), 4 (neg), 9 (match): the block at 4 has precision 1/3 at its end
    # (sklearn groups ties), then 2/4 -> AP = (1/3 + 1/2) / 2 = 5/12 (not (1/2 + 2/4) / 2).
    r = one_query([1, 4, 4, 9, 16], pids=[2, 1, 5, 1, 3], cams=[1, 1, 1, 1, 1])
    assert r["mAP"] == pytest.approx(5 / 12)
    assert average_precision_score([0, 1, 0, 1, 0], [-1, -4, -4, -9, -16]) == pytest.approx(5 / 12)
    np.testing.assert_array_equal(r["cmc"], [0, 1, 1, 1, 1])  # stable order: the match comes first
    assert r["mINP"] == pytest.approx(2 / 4)


def test_hand_case_tied_negative_earlier_in_gallery_order():
    # gallery order: neg@4, match@4, match@9, neg@1 -> stable ranking neg@1, neg@4, match@4, match@9
    r = one_query([4, 4, 9, 1], pids=[2, 1, 1, 3], cams=[1, 1, 1, 1])
    assert r["mAP"] == pytest.approx(5 / 12)
    np.testing.assert_array_equal(r["cmc"], [0, 0, 1, 1, 1])
    assert r["mINP"] == pytest.approx(2 / 4)


def test_hand_case_tie_with_the_last_match():
    # match@4, neg@9, match@9, neg@9: AP = (1/1 + 2/4) / 2; stable: the last match is 3rd -> INP 2/3
    r = one_query([4, 9, 9, 9], pids=[1, 2, 1, 0], cams=[1, 1, 1, 1])
    assert r["mAP"] == pytest.approx(0.75)
    np.testing.assert_array_equal(r["cmc"], [1, 1, 1, 1, 1])
    assert r["mINP"] == pytest.approx(2 / 3)


def test_queries_without_match_are_skipped():
    gf = np.arange(1, 5, dtype=np.float32)[:, None]
    qf = np.zeros((3, 1), np.float32)
    # query 0: pid 1 matched by item 1 (other camera); query 1: pid 2 only in its own camera; query 2: pid 9 absent
    r = evaluate(qf, gf, [1, 2, 9], [3, 1, 2, 4], [0, 0, 0], [1, 1, 0, 1], max_rank=3)
    assert r["num_valid_queries"] == 1
    assert r["mAP"] == pytest.approx(1 / 2)
    np.testing.assert_array_equal(r["cmc"], [0, 1, 1])


# ------------------------------------------------------------------------------------ errors
def one_line_error(match, *args, **kwargs):
    with pytest.raises(DmireidError, match=match) as info:
        evaluate(*args, **kwargs)
    assert "\n" not in str(info.value)


def test_errors_are_one_line():
    qf, gf, qp, gp, qc, gc = random_problem(7, 6, 20, 3, 2, 4, False)
    one_line_error("query_pids has 5 entries but query_features has 6 rows", qf, gf, qp[:5], gp, qc, gc)
    one_line_error("gallery_cams has 21 entries", qf, gf, qp, gp, qc, np.append(gc, 0))
    one_line_error("feature dim", qf, gf[:, :3], qp, gp, qc, gc)
    one_line_error("2-D", qf[0], gf, qp, gp, qc, gc)
    one_line_error("query_features contains NaN", np.full_like(qf, np.nan), gf, qp, gp, qc, gc)
    bad = gf.copy()
    bad[3, 1] = np.inf
    one_line_error("gallery_features contains NaN or infinite", qf, bad, qp, gp, qc, gc)
    one_line_error("integers", qf, gf, qp.astype(float), gp, qc, gc)
    one_line_error("max_rank", qf, gf, qp, gp, qc, gc, max_rank=0)
    one_line_error("chunk_size", qf, gf, qp, gp, qc, gc, chunk_size=0)
    one_line_error("empty", qf[:0], gf, qp[:0], gp, qc[:0], gc)


def test_no_valid_query_raises():
    qf, gf, qp, gp, qc, gc = random_problem(8, 6, 20, 3, 2, 4, False)
    one_line_error("no query has a true match", qf, gf, qp + 100, gp, qc, gc)
    one_line_error("no query has a true match", qf, gf, np.ones(6, int), np.ones(20, int), np.zeros(6, int),
                   np.zeros(20, int))  # every match in the query's own camera


# ------------------------------------------------------------------------------------ rerank
def test_rerank_rows_plug_in(monkeypatch):
    """rerank=True evaluates the rows a KReciprocalReranker gives (here a stand-in: reversed order)."""
    created = {}

    class FakeReranker:
        def __init__(self, query_features, gallery_features, k1=20, k2=6, lambda_value=0.3):
            created.update(k1=k1, k2=k2, lambda_value=lambda_value, q=tuple(query_features.shape))
            self.dist = -pairwise_distance(query_features, gallery_features).numpy()

        def distance_rows(self, start, stop):
            return self.dist[start:stop]

    fake = types.ModuleType("dmireid.evaluation.rerank")
    fake.KReciprocalReranker = FakeReranker
    monkeypatch.setitem(sys.modules, "dmireid.evaluation.rerank", fake)
    qf, gf, qp, gp, qc, gc = random_problem(9, 20, 60, 6, 3, 4, True)
    r = evaluate(qf, gf, qp, gp, qc, gc, rerank=True, k1=7, k2=3, lambda_value=0.5, chunk_size=6)
    assert created == {"k1": 7, "k2": 3, "lambda_value": 0.5, "q": (20, 4)}
    ref = reference_metrics(qf, gf, qp, gp, qc, gc, 50, dist=-pairwise_distance(qf, gf).numpy())
    assert_same(r, ref)
    assert r["mAP"] < evaluate(qf, gf, qp, gp, qc, gc)["mAP"]  # the reversed ranking is worse
    again = evaluate(qf, gf, qp, gp, qc, gc, rerank=True, chunk_size=1)
    assert again["mAP"] == r["mAP"]  # the provider's rows were not modified in place
