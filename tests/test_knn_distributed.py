"""kNN split by rows over ranks: lists (indices and distances) and DBSCAN labels equal one process.

The reference is written here from the documented rule: a stable argsort of each dense float64
row of ``sum((x_i − x_j)²)`` (ties → smaller index) with the point itself moved to the front, and
those float64 values as distances.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from dmireid.pseudo_labels import JaccardDBSCAN, knn
from dmireid.pseudo_labels.neighbours import as_features, resolve_backend
from dmireid.pseudo_labels.sharded import knn_lists, knn_shard, list_sqdist, shard_bounds

try:
    import faiss  # noqa: F401

    BACKENDS = ["faiss", "torch"]
except ImportError:  # pragma: no cover - faiss is an optional extra
    BACKENDS = ["torch"]


def make_features(n=3000, d=48, seed=0):
    """Clustered unit rows with exact duplicates (every row near a duplicated pair sees two equal
    distances: a tie broken by index), a group of 45 identical rows (more than k1 + the search
    window) and near-duplicates 1e-7 apart (below float32 resolution)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n // 15, d))
    x = centers[rng.integers(0, len(centers), n)] + 0.5 * rng.normal(size=(n, d)) / np.sqrt(d)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x = x.astype(np.float32)
    src, dst = rng.choice(n, (2, n // 10), replace=False)
    x[dst] = x[src]
    x[rng.choice(n, 45, replace=False)] = x[7]
    near_src, near_dst = rng.choice(n, (2, n // 20), replace=False)
    x[near_dst] = x[near_src] + (1e-7 * rng.standard_normal((len(near_dst), d))).astype(np.float32)
    return x


def reference_lists(x, k):
    sq = cdist(x.astype(np.float64), x.astype(np.float64), "sqeuclidean")  # sum((x_i − x_j)²), float64
    order = np.argsort(sq, axis=1, kind="stable")
    idx = np.empty((len(x), k), dtype=np.int64)
    for i in range(len(x)):
        idx[i] = [i] + [j for j in order[i] if j != i][: k - 1]
    return np.take_along_axis(sq, idx, axis=1), idx


@pytest.fixture(scope="module")
def features():
    return make_features()


@pytest.fixture(scope="module")
def one_process(features):
    return {b: knn_lists(as_features(features), 20, backend=b) for b in BACKENDS}


def simulated_ranks(x, k, backend, world, block_size=None):
    """What ``world`` ranks compute, concatenated in rank order (no process group needed)."""
    t = as_features(x)
    name, faiss_module = resolve_backend(backend)
    parts = [knn_shard(t, x, k, name, faiss_module, *shard_bounds(len(x), r, world), block_size) for r in range(world)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def assert_same_lists(a, b):
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[0], b[0])  # bit for bit, not approximately


def test_one_process_matches_the_dense_reference(features, one_process):
    ref_dist, ref_idx = reference_lists(features, 20)
    for backend in BACKENDS:
        dist, idx = one_process[backend]
        np.testing.assert_array_equal(idx, ref_idx)
        np.testing.assert_allclose(dist, ref_dist, rtol=1e-12, atol=1e-12)
    assert (ref_dist[:, 1] == 0).sum() > 100  # the data has exact duplicates ...
    assert (np.diff(ref_dist[:, 1:], axis=1) == 0).any(axis=1).sum() > 100  # ... and tied distances


@pytest.mark.parametrize("world", [2, 3, 7])
def test_any_split_over_ranks_gives_identical_lists(features, one_process, world):
    for backend in BACKENDS:
        assert_same_lists(simulated_ranks(features, 20, backend, world), one_process[backend])


def test_block_size_threads_and_backend_do_not_change_lists(features, one_process):
    for block in (1, 7, 100):
        assert_same_lists(simulated_ranks(features, 20, "torch", 2, block_size=block), one_process["torch"])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert_same_lists(knn_lists(as_features(features), 20, backend="torch", block_size=64), one_process["torch"])
    finally:
        torch.set_num_threads(threads)
    if len(BACKENDS) == 2:
        assert_same_lists(one_process["faiss"], one_process["torch"])


def test_more_ranks_than_rows_and_public_knn():
    x = make_features(n=60, d=8, seed=3)[:5]
    d1, i1 = knn(x, 5, backend="torch")
    d7, i7 = simulated_ranks(x, 5, "torch", 7)
    np.testing.assert_array_equal(i1, i7)
    np.testing.assert_array_equal(d1, d7.astype(np.float32))
    assert d1.dtype == np.float32 and (i1[:, 0] == np.arange(5)).all() and (d1[:, 0] == 0).all()


def test_list_sqdist_by_hand():
    x = np.array([[0, 0], [3, 4], [1, 1]], dtype=np.float32)
    got = list_sqdist(x, np.array([0, 2]), np.array([[0, 1, 2], [2, 1, 0]]))
    np.testing.assert_array_equal(got, [[0.0, 25.0, 2.0], [0.0, 13.0, 2.0]])


# ----------------------------------------------------------------------------------------------
# two gloo processes
DRIVER = textwrap.dedent('''
    import sys
    import numpy as np, torch, torch.distributed as td
    torch.set_num_threads(1)
    from dmireid import distributed as dist
    from dmireid.errors import DmireidError
    from dmireid.pseudo_labels import JaccardDBSCAN, knn_lists_sharded
    from dmireid.pseudo_labels.neighbours import as_features

    features, out, backend = sys.argv[1:]
    td.init_process_group("gloo")
    x = as_features(np.load(features))
    result = {}
    result["dist"], result["idx"] = knn_lists_sharded(x, 20, backend=backend)
    labels = JaccardDBSCAN(k1=20, k2=6, eps=0.5, min_samples=4, knn_backend=backend, progress=False)(x)
    result["labels_per_rank"] = dist.all_gather_cat(torch.from_numpy(labels)[None]).numpy()
    try:  # rank 1 passes one row fewer: a clear error on every rank, not a hang or garbage
        knn_lists_sharded(x[: len(x) - dist.rank()], 20, backend=backend)
    except DmireidError as exc:
        result["error"] = str(exc)
    if dist.rank() == 0:
        np.savez(out, **result)
    dist.cleanup()
''')


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_gloo_processes_equal_one_process(tmp_path, features, one_process, backend):
    driver, data, out = tmp_path / "driver.py", tmp_path / "x.npy", tmp_path / "out.npz"
    driver.write_text(DRIVER)
    np.save(data, features)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(driver), str(data), str(out), backend],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = np.load(out)
    assert_same_lists((got["dist"], got["idx"]), one_process[backend])
    labels = JaccardDBSCAN(k1=20, k2=6, eps=0.5, min_samples=4, knn_backend=backend, progress=False)(features)
    for rank_labels in got["labels_per_rank"]:  # every rank returns rank 0's labels
        np.testing.assert_array_equal(rank_labels, labels)
    assert 50 < labels.max() + 1 < len(labels) // 4  # a real clustering, neither one blob nor singletons
    assert "every rank must pass the same features" in str(got["error"])


def test_labeler_is_collective_and_searches_on_its_device(features):
    x = torch.from_numpy(features[:600])
    default = JaccardDBSCAN(k1=20, eps=0.5, knn_backend="torch", progress=False)
    on_cpu = JaccardDBSCAN(k1=20, eps=0.5, knn_backend="torch", progress=False, device="cpu")
    assert JaccardDBSCAN.collective is True and on_cpu.device == torch.device("cpu")
    labels = default(x)
    np.testing.assert_array_equal(on_cpu(x.double()), labels)  # moved (and cast) before the search
    assert labels.dtype == np.int64 and labels.max() >= 1


def test_auto_backend_keeps_gpu_features_off_a_cpu_only_faiss(monkeypatch):
    from dmireid.pseudo_labels import neighbours

    class CpuFaiss:
        @staticmethod
        def get_num_gpus():
            return 0

    monkeypatch.setattr(neighbours, "_faiss", lambda: CpuFaiss)
    assert neighbours.resolve_backend("auto", torch.device("cuda"))[0] == "torch"
    assert neighbours.resolve_backend("auto", torch.device("cpu"))[0] == "faiss"
    assert neighbours.resolve_backend("auto")[0] == "faiss"
    monkeypatch.setattr(CpuFaiss, "get_num_gpus", staticmethod(lambda: 1))
    assert neighbours.resolve_backend("auto", torch.device("cuda"))[0] == "faiss"
