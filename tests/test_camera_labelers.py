"""Camera-aware labeling: CA-Jaccard (pseudo_labels.camera_balance) against a dense transcription
of chenyiyuu/CA-Jaccard caj/utils/caj_rerank.py, the InfoMap labeler against Cluster Contrast's
loops (clustercontrast/utils/infomap_cluster.py) and a hand-checkable case, and the per-epoch
camera spread diagnostics against a loop."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dmireid.errors import DmireidError
from dmireid.pseudo_labels import (JaccardDBSCAN, build_labeler, call_labeler, camera_jaccard_distance,
                                   camera_spread)
from dmireid.pseudo_labels.infomap import knn_links, labels_from_modules


def unit(n, d=12, seed=0):
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=1)


def k_reciprocal(rank, i, k):
    forward = rank[i, :k + 1]
    backward = rank[forward, :k + 1]
    return forward[np.where(backward == i)[0]]


def dense_ca_jaccard(x, cams, k1_intra, k1_inter, k2_intra, k2_inter):
    """caj_rerank.py lines 40-131 with ckrnns and clqe on (stable sort instead of argpartition)."""
    n = len(x)
    original = 2 - 2 * x @ x.T
    same = cams[:, None] == cams[None, :]
    inter_rank = np.argsort(original + 999.0 * same, axis=1, kind="stable")
    intra_rank = np.argsort(original + 999.0 * ~same, axis=1, kind="stable")
    V = np.zeros((n, n))
    for i in range(n):
        s = np.union1d(k_reciprocal(intra_rank, i, k1_intra), k_reciprocal(inter_rank, i, k1_inter))
        w = np.exp(-original[i, s])
        V[i, s] = w / w.sum()
    V = np.stack([V[np.append(intra_rank[i, :k2_intra], inter_rank[i, :k2_inter])].mean(0) for i in range(n)])
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            m = np.minimum(V[i], V[j]).sum()
            out[i, j] = max(0.0, 1 - m / (2 - m))
    return out


@pytest.mark.parametrize("k1_intra, k1_inter, k2_intra, k2_inter", [(5, 20, 3, 3), (3, 6, 1, 2)])
def test_ca_jaccard_matches_the_dense_reference(k1_intra, k1_inter, k2_intra, k2_inter):
    x = unit(45, seed=1).numpy().astype(np.float64)
    cams = np.repeat([0, 1, 2], 15)
    x[cams == 1] += 0.35  # a camera bias: cross-camera pairs are farther than same-camera pairs
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    ref = dense_ca_jaccard(x, cams, k1_intra, k1_inter, k2_intra, k2_inter)
    got = camera_jaccard_distance(torch.from_numpy(x).float(), cams, k1_intra, k1_inter, k2_intra, k2_inter,
                                  knn_backend="torch")
    dense = np.ones((45, 45))
    coo = got.tocoo()
    dense[coo.row, coo.col] = coo.data
    np.testing.assert_allclose(dense, ref, atol=1e-5)
    assert np.all(np.diag(dense) == 0)


def test_camera_balance_lets_clusters_cross_cameras():
    """Two identities, two cameras, a strong camera offset: plain Jaccard + DBSCAN groups by
    camera, the camera-balanced one by identity."""
    g = torch.Generator().manual_seed(0)
    ids = torch.repeat_interleave(torch.arange(2), 20)
    cams = np.tile(np.repeat([0, 1], 10), 2)
    centres = F.normalize(torch.randn(2, 16, generator=g), dim=1)
    offset = 1.2 * F.normalize(torch.randn(16, generator=g), dim=0)
    x = F.normalize(centres[ids] + torch.from_numpy(cams)[:, None] * offset + 0.05 * torch.randn(40, 16, generator=g), dim=1)
    plain = JaccardDBSCAN(k1=8, k2=3, eps=0.6, min_samples=3, knn_backend="torch", progress=False)
    balanced = JaccardDBSCAN(k1=8, k2=3, eps=0.6, min_samples=3, knn_backend="torch", progress=False,
                             camera_balance=True, k1_intra=4, k1_inter=6, k2_intra=2, k2_inter=2)
    assert camera_spread(plain(x), cams)["cluster_cross_camera_share"] == 0.0
    labels = call_labeler(balanced, x, cameras=cams, identities=ids.numpy())
    assert camera_spread(labels, cams)["cluster_cross_camera_share"] == 1.0
    assert len(set(labels.tolist())) == 2 and all(len(set(labels[ids.numpy() == k])) == 1 for k in (0, 1))
    with pytest.raises(DmireidError, match="camera_balance=true needs the images' camera ids"):
        balanced(x)


def test_camera_spread_matches_a_loop():
    rng = np.random.default_rng(0)
    labels, cams = rng.integers(-1, 9, 300), rng.integers(0, 4, 300)
    labels[labels == 5] = -1  # an id without a member
    clusters = [k for k in range(9) if (labels == k).any()]
    per = [len(set(cams[labels == k])) for k in clusters]
    assert camera_spread(labels, cams) == pytest.approx(
        {"cluster_cross_camera_share": np.mean([p >= 2 for p in per]), "cluster_cameras_mean": np.mean(per)}, abs=1e-12)
    assert camera_spread([0, 0, 1, -1], [0, 0, 0, 1]) == {"cluster_cross_camera_share": 0.0, "cluster_cameras_mean": 1.0}
    assert camera_spread([-1, -1], [0, 1]) == {"cluster_cross_camera_share": 0.0, "cluster_cameras_mean": 0.0}


def cc_get_links(nbrs, dists, min_sim):
    """infomap_cluster.py get_links (lines 129-144), dists = 1 - cosine."""
    single, links = [], {}
    for i in range(nbrs.shape[0]):
        count = 0
        for j in range(len(nbrs[i])):
            if i == nbrs[i][j]:
                pass
            elif dists[i][j] <= 1 - min_sim:
                count += 1
                links[(i, nbrs[i][j])] = float(1 - dists[i][j])
            else:
                break
        if count == 0:
            single.append(i)
    return single, links


def test_knn_links_match_cluster_contrast_get_links():
    from dmireid.pseudo_labels import knn

    x = unit(60, d=6, seed=4)
    distances, indices = knn(x, 8, backend="torch")
    sources, targets, weights = knn_links(distances, indices, min_sim=0.6)
    single, links = cc_get_links(indices, distances / 2.0, 0.6)  # squared distance of unit rows = 2·(1 - cos)
    assert {(int(s), int(t)): w for s, t, w in zip(sources, targets, weights)} == pytest.approx(links, abs=1e-6)
    assert sorted(set(range(60)) - set(sources.tolist())) == single


def cc_labels(modules: dict, single, cluster_num):
    """infomap_cluster.py lines 167-223 on the leaf nodes' modules."""
    idx2label = dict(modules)
    keys_len = max(modules.values()) + 1 if modules else 0
    label2idx = {}
    for node, module in modules.items():
        label2idx.setdefault(module, []).append(node)
    for node in single:
        idx2label[node] = keys_len
        label2idx[keys_len] = [node]
        keys_len += 1
    kept = sorted(k for k, v in label2idx.items() if len(v) > cluster_num)
    old2new = {old: new for new, old in enumerate(kept)}
    return np.array([old2new.get(idx2label[i], -1) for i in range(len(idx2label))])


def test_labels_from_modules_match_cluster_contrast():
    rng = np.random.default_rng(1)
    modules = rng.integers(0, 7, 50)
    modules[[3, 9, 20]] = -1  # images without a link: singletons
    expected = cc_labels({i: int(m) for i, m in enumerate(modules) if m >= 0}, [3, 9, 20], cluster_num=4)
    got = labels_from_modules(modules, outlier_size=4)
    assert np.array_equal(got, expected)
    assert np.array_equal(labels_from_modules(modules, outlier_size=0) >= 0, np.ones(50, dtype=bool))


def test_infomap_hand_checkable_case():
    """Two tight groups of 6, a group of 3 and 2 isolated points: with k=8, min_sim=0.9 the
    groups link only inside themselves; outlier_size=4 turns the group of 3 and the isolated
    points into outliers."""
    pytest.importorskip("infomap")
    g = torch.Generator().manual_seed(2)
    centres = torch.eye(8)[:5]
    members = [0] * 6 + [1] * 6 + [2] * 3 + [3, 4]
    x = F.normalize(centres[members] + 0.02 * torch.randn(len(members), 8, generator=g), dim=1)
    labeler = build_labeler("infomap", {"k": 8, "min_sim": 0.9, "outlier_size": 4}, knn_backend="torch",
                            progress=False)
    labels = labeler(x)
    assert labels[:6].tolist() == [0] * 6 and labels[6:12].tolist() == [1] * 6
    assert (labels[12:] == -1).all()


def test_infomap_options_are_one_line_errors():
    pytest.importorskip("infomap")
    for options, fragment in (({"k": 1}, "options.k must be an integer >= 2"),
                              ({"min_sim": 2}, "options.min_sim"), ({"outlier_size": -1}, "options.outlier_size"),
                              ({"eps": 0.5}, "gets eps from pseudo_labels.eps")):
        with pytest.raises(DmireidError, match=fragment) as info:
            build_labeler("infomap", options)
        assert "\n" not in str(info.value)


def test_infomap_missing_package_is_one_line(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_infomap(name, *args, **kwargs):
        if name == "infomap":
            raise ImportError("No module named 'infomap'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_infomap)
    with pytest.raises(DmireidError, match=r'needs the infomap package: pip install "dmireid\[infomap\]"'):
        build_labeler("infomap")


def test_infomap_runs_in_a_process_that_loaded_faiss():
    """Result.modules() walks a SWIG iterator that segfaults when faiss (also SWIG) is loaded after infomap, as
    the labeler's kNN does: the labeler must not use it. A subprocess, so a crash fails this test, not the run."""
    import subprocess
    import sys

    pytest.importorskip("infomap")
    pytest.importorskip("faiss")
    code = ("import torch\n"
            "from dmireid.pseudo_labels import build_labeler\n"
            "torch.manual_seed(0)\n"
            "centers = torch.nn.functional.normalize(torch.randn(20, 32), dim=1)\n"
            "f = torch.nn.functional.normalize(centers.repeat_interleave(6, 0) + 0.01 * torch.randn(120, 32), dim=1)\n"
            "labels = build_labeler('infomap', k1=10, k2=6, eps=0.5, min_samples=4)(f)\n"
            "groups = {tuple(sorted(set(labels[i * 6:(i + 1) * 6].tolist()))) for i in range(20)}\n"
            "print(all(len(g) == 1 and g[0] >= 0 for g in groups), int(labels.max()) + 1 >= 15)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["True", "True"]  # each group in one cluster, no outlier; few merges
