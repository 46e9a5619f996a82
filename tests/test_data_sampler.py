"""ClusterBatchSampler with ``camera_rule="spread"``: block layout, camera preference, outliers,
determinism, DDP shares, speed (the ``cc`` rule, the default since 0.2, is test_data_sampler_cc.py)."""

import functools
import time

import numpy as np
import pytest
import torch

from dmireid.data import ClusterBatchSampler as Sampler
from dmireid.errors import DmireidError

ClusterBatchSampler = functools.partial(Sampler, camera_rule="spread")


def random_labels(n=600, clusters=30, cams=4, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(-1, clusters, n)
    labels[:3] = clusters  # a singleton-ish cluster of 3 images
    labels[3] = clusters + 1  # a true singleton
    return labels, rng.integers(0, cams, n)


def blocks_of(sampler):
    b = sampler.batches()
    return b.reshape(len(b), -1, sampler.K)


def check_block(block, labels, cams, k, camera_aware=True):
    """Exact block rule: anchor, other cameras (distinct), same camera (distinct), then repeats."""
    assert len(block) == k
    cluster = labels[block[0]]
    assert cluster >= 0 and (labels[block] == cluster).all()
    members = np.flatnonzero(labels == cluster)
    anchor, rest = block[0], list(block[1:])
    if camera_aware:
        other = set(members[cams[members] != cams[anchor]])
        same = set(members[cams[members] == cams[anchor]]) - {anchor}
    else:
        other, same = set(), set(members) - {anchor}
    n_other = min(k - 1, len(other))
    n_same = min(k - 1 - n_other, len(same))
    first, second = rest[:n_other], rest[n_other:n_other + n_same]
    assert set(first) <= other and len(set(first)) == n_other
    assert set(second) <= same and len(set(second)) == n_same


@pytest.mark.parametrize("camera_aware", [True, False])
def test_blocks_are_k_consecutive_indices_of_one_cluster(camera_aware):
    labels, cams = random_labels()
    s = ClusterBatchSampler(labels, cams, num_instances=8, batch_size=64, iters=30, seed=1,
                            camera_aware=camera_aware)
    batches = list(s)
    assert len(s) == 30 and len(batches) == 30 and all(len(b) == 64 for b in batches)
    assert all(isinstance(i, int) for i in batches[0])
    for batch in blocks_of(s):
        assert len({labels[blk[0]] for blk in batch}) == 8  # 8 distinct clusters (30 > P)
        for block in batch:
            check_block(block, labels, cams, 8, camera_aware)


def test_outliers_never_sampled_and_all_clusters_visited():
    labels, cams = random_labels()
    s = ClusterBatchSampler(labels, cams, 4, 32, 40, seed=0)
    seen = np.concatenate(s.batches())
    assert (labels[seen] >= 0).all()
    assert set(labels[seen]) == set(labels[labels >= 0])  # every pass covers every cluster


def test_small_clusters_repeat_and_singletons_fill_the_block():
    labels = np.array([0, 0, 0, 1, -1, -1, 2, 2, 2, 2, 2, 2], dtype=np.int64)
    cams = np.array([0, 1, 1, 0, 0, 1, 0, 0, 1, 1, 2, 2])
    s = ClusterBatchSampler(labels, cams, num_instances=4, batch_size=12, iters=20, seed=5)
    for batch in blocks_of(s):
        assert sorted(labels[blk[0]] for blk in batch) == [0, 1, 2]
        for block in batch:
            check_block(block, labels, cams, 4)
            if labels[block[0]] == 1:
                assert block.tolist() == [3, 3, 3, 3]
            if labels[block[0]] == 0:
                assert set(block) == {0, 1, 2}  # all usable images, then a repeat
    anchors = {blk[0] for batch in blocks_of(s) for blk in batch if labels[blk[0]] == 2}
    assert anchors == {6, 7, 8, 9, 10, 11}  # anchors drawn from the whole cluster


def test_camera_preference_is_observed():
    # cluster 0: anchor camera has many images, other cameras few -> all other-camera images come first
    labels = np.zeros(20, dtype=np.int64)
    cams = np.array([0] * 16 + [1, 1, 2, 3])
    s = ClusterBatchSampler(labels, cams, num_instances=6, batch_size=6, iters=50, seed=2)
    for (block,) in blocks_of(s):
        check_block(block, labels, cams, 6)
        if cams[block[0]] == 0:
            assert set(block[1:5]) == {16, 17, 18, 19} and (cams[block[5:]] == 0).all()
    off = ClusterBatchSampler(labels, cams, 6, 6, 50, seed=2, camera_aware=False)
    share_cam0 = np.mean([(cams[blk[1:]] == 0).mean() for (blk,) in blocks_of(off) if cams[blk[0]] == 0])
    assert 0.55 < share_cam0 < 0.95  # no preference: about 15/19 of the others are camera 0


def test_no_cluster_repeats_across_pass_boundaries():
    labels = np.repeat(np.arange(10), 3)  # 10 clusters, 4 per batch: passes end inside batches
    cams = np.tile([0, 1, 2], 10)
    s = ClusterBatchSampler(labels, cams, 3, 12, 60, seed=3)
    for batch in blocks_of(s):
        assert len({labels[blk[0]] for blk in batch}) == 4


def test_fewer_clusters_than_p_still_fills_batches():
    labels = np.repeat(np.arange(2), 5)
    s = ClusterBatchSampler(labels, np.zeros(10), 4, 16, 5, seed=0)
    b = blocks_of(s)
    assert b.shape == (5, 4, 4)
    assert all((labels[blk] == labels[blk[0]]).all() for batch in b for blk in batch)


def test_deterministic_from_seed_and_epoch_only():
    labels, cams = random_labels()
    make = lambda seed, epoch: ClusterBatchSampler(labels, cams, 4, 32, 10, seed=seed, epoch=epoch).batches()
    np.random.seed(0)
    expected_global = np.random.random()
    np.random.seed(0)
    torch.manual_seed(0)
    a = make(1, 0)
    assert np.random.random() == expected_global  # the global RNG is untouched
    np.random.seed(123)
    torch.manual_seed(123)
    assert np.array_equal(a, make(1, 0))
    assert not np.array_equal(a, make(1, 1)) and not np.array_equal(a, make(2, 0))
    s = ClusterBatchSampler(labels, cams, 4, 32, 10, seed=1)
    assert list(s) == list(s)  # iterating twice gives the same epoch
    s.set_epoch(1)
    assert np.array_equal(s.batches(), make(1, 1))


@pytest.mark.parametrize("world_size", [2, 4])
def test_ddp_shares_union_is_the_single_process_batch(world_size):
    labels, cams = random_labels(seed=4)
    full = ClusterBatchSampler(labels, cams, 4, 32, 12, seed=7, epoch=2).batches()
    shares = [ClusterBatchSampler(labels, cams, 4, 32, 12, seed=7, epoch=2, rank=r, world_size=world_size).batches()
              for r in range(world_size)]
    assert all(len(sh) == 12 and sh.shape[1] == 32 // world_size for sh in shares)
    assert np.array_equal(np.concatenate(shares, axis=1), full)  # rank r = clusters [r·P/W, (r+1)·P/W)


def test_tensor_inputs_and_errors():
    labels, cams = random_labels()
    a = ClusterBatchSampler(torch.from_numpy(labels), torch.from_numpy(cams), 4, 32, 3, seed=0).batches()
    assert np.array_equal(a, ClusterBatchSampler(labels, cams, 4, 32, 3, seed=0).batches())
    cases = [(dict(pseudo_labels=np.full(5, -1)), "-1"),
             (dict(batch_size=2), "batch_size"),
             (dict(world_size=3), "world_size"),
             (dict(world_size=2, rank=2), "rank"),
             (dict(iters=0), "iters")]
    for override, needle in cases:
        kwargs = dict(pseudo_labels=labels, camids=cams, num_instances=4, batch_size=32, iters=3, seed=0)
        kwargs.update(override)
        if len(kwargs["pseudo_labels"]) != len(kwargs["camids"]):
            kwargs["camids"] = np.zeros(len(kwargs["pseudo_labels"]))
        with pytest.raises(DmireidError, match=needle):
            ClusterBatchSampler(**kwargs)
    with pytest.raises(ValueError):
        ClusterBatchSampler(labels, cams[:-1], 4, 32, 3, seed=0)


def test_fast_on_13k_images():
    rng = np.random.default_rng(0)
    labels = rng.integers(-1, 700, 13000)
    labels[:3000] = 0  # one huge cluster costs nothing extra
    cams = rng.integers(0, 6, 13000)
    start = time.perf_counter()
    batches = ClusterBatchSampler(labels, cams, 16, 256, 200, seed=1).batches()
    assert time.perf_counter() - start < 1.0
    assert batches.shape == (200, 256)
