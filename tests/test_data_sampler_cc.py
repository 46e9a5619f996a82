"""ClusterBatchSampler(camera_rule="cc") against a per-block loop form of Cluster Contrast's
RandomMultipleGallerySampler (clustercontrast/utils/data/sampler.py), written here."""

import time
from collections import Counter

import numpy as np
import pytest

from dmireid.data import ClusterBatchSampler
from dmireid.errors import DmireidError

# clusters of 1, 3, 10 and 40 images over 1-4 cameras (camera of each member)
CLUSTERS = [
    [0],                                   # one image
    [2, 2, 2],                             # 3 images, one camera
    [0, 1, 1],                             # 3 images, 2 cameras
    [3] * 10,                              # 10 images, one camera
    [0, 0, 0, 0, 1, 1, 1, 2, 2, 2],        # 10 images, 3 cameras
    [0] * 37 + [1, 1, 2],                  # 40 images: anchor in camera 0 has only 3 others
    [0] * 10 + [1] * 10 + [2] * 10 + [3] * 10,  # 40 images, 4 cameras
]


def dataset(shuffle_seed=0):
    """Labels and cameras of CLUSTERS plus outliers, members interleaved in index order."""
    labels = np.concatenate([np.full(len(c), i) for i, c in enumerate(CLUSTERS)] + [np.full(5, -1)])
    cams = np.concatenate([np.array(c) for c in CLUSTERS] + [np.zeros(5, int)])
    order = np.random.default_rng(shuffle_seed).permutation(len(labels))
    return labels[order], cams[order]


def cc_block(members, cams, k, rng, camera_aware=True):
    """One block by the peer's rule, as a loop: anchor uniform; pool = other-camera members if any,
    else members without the anchor; K-1 from the pool without replacement iff len(pool) >= K."""
    anchor = members[rng.integers(len(members))]
    pool = [m for m in members if cams[m] != cams[anchor]] if camera_aware else []
    if not pool:
        pool = [m for m in members if m != anchor]
    if not pool:
        return [anchor] * k  # the peer yields the anchor once; dmireid fills the block with it
    return [anchor] + [int(x) for x in rng.choice(pool, size=k - 1, replace=len(pool) < k)]


def our_blocks(labels, cams, k, iters, rule="cc", camera_aware=True, seed=1):
    s = ClusterBatchSampler(labels, cams, k, k * len(CLUSTERS), iters, seed=seed, camera_rule=rule,
                            camera_aware=camera_aware)
    return s.batches().reshape(-1, k)


def loop_blocks(labels, cams, k, repeats, camera_aware=True, seed=2):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(repeats):
        for c in range(len(CLUSTERS)):
            out.append(cc_block(list(np.flatnonzero(labels == c)), cams, k, rng, camera_aware))
    return np.array(out)


def block_features(blocks, labels, cams):
    """Per (cluster, family) a histogram: the anchor's camera, # others in the anchor's camera,
    # distinct others, and how often each member is picked as one of the others."""
    hist = {}
    for b in blocks:
        c, others = labels[b[0]], b[1:]
        for family, values in (("anchor camera", [cams[b[0]]]), ("same camera", [(cams[others] == cams[b[0]]).sum()]),
                               ("distinct", [len(set(others.tolist()))]), ("member", others.tolist())):
            hist.setdefault((c, family), Counter()).update(int(v) for v in values)
    return hist


def total_variation(a: Counter, b: Counter) -> float:
    na, nb = sum(a.values()), sum(b.values())
    return 0.5 * sum(abs(a[key] / na - b[key] / nb) for key in set(a) | set(b))


@pytest.mark.parametrize("k", [4, 16])
def test_each_block_follows_the_peer_rule_exactly(k):
    labels, cams = dataset()
    for block in our_blocks(labels, cams, k, 300):
        members = np.flatnonzero(labels == labels[block[0]])
        anchor, others = block[0], block[1:]
        assert len(block) == k and (labels[block] == labels[anchor]).all()
        pool = set(members[cams[members] != cams[anchor]]) or set(members) - {anchor}
        if not pool:
            assert (block == anchor).all()  # one-image cluster: its image K times
            continue
        assert set(others) <= pool
        if len(pool) >= k:
            assert len(set(others)) == k - 1  # without replacement
    # with replacement when the pool has K-1 images exactly (the peer's ">= num_instances")
    labels = np.zeros(4, int)
    blocks = ClusterBatchSampler(labels, np.array([0, 1, 2, 3]), 4, 4, 400, seed=0, camera_rule="cc").batches()
    repeats = [len(set(b[1:])) < 3 for b in blocks]
    assert 0.6 < np.mean(repeats) < 0.85  # 1 - 3!/3^3 = 7/9 of the blocks repeat an image


@pytest.mark.parametrize("k,camera_aware", [(4, True), (16, True), (4, False)])
def test_distribution_matches_the_loop_form(k, camera_aware):
    labels, cams = dataset()
    repeats = 5000
    blocks = our_blocks(labels, cams, k, repeats, camera_aware=camera_aware)
    ours = block_features(blocks, labels, cams)
    loop = block_features(loop_blocks(labels, cams, k, repeats, camera_aware=camera_aware), labels, cams)
    assert set(ours) == set(loop)
    for key in ours:
        if key[1] == "anchor camera":
            assert sum(ours[key].values()) == repeats  # every cluster once per batch (7 clusters, P = 7)
        assert total_variation(ours[key], loop[key]) < 0.05, (key, ours[key].most_common(4), loop[key].most_common(4))
    # the anchor is uniform over the cluster, as random.choice in the peer
    anchors = Counter(blocks[:, 0].tolist())
    freq = np.array([anchors[i] for i in np.flatnonzero(labels == 6)]) / repeats
    assert np.abs(freq - 1 / 40).max() < 0.01


def test_spread_rule_is_told_apart():
    """A negative control: the comparison above fails for today's rule."""
    labels, cams = dataset()
    spread = block_features(our_blocks(labels, cams, 4, 2500, rule="spread"), labels, cams)
    loop = block_features(loop_blocks(labels, cams, 4, 2500), labels, cams)
    # anchor in camera 0 of the 37+3 cluster: spread takes the 3 other-camera images once each, the
    # peer draws 3 of them with replacement (3 < K): all distinct only with probability 3!/3^3
    assert total_variation(spread[5, "distinct"], loop[5, "distinct"]) > 0.5
    # 3 images in one camera: spread takes both others, then any image (the anchor too) again
    assert total_variation(spread[1, "distinct"], loop[1, "distinct"]) > 0.25  # exactly 1/3


def test_default_rule_is_cc_and_bad_rule_is_an_error():
    labels, cams = dataset()
    s = ClusterBatchSampler(labels, cams, 4, 28, 5, seed=3)
    assert s.camera_rule == "cc"  # data.camera_rule's default
    assert np.array_equal(s.batches(), our_blocks(labels, cams, 4, 5, rule="cc", seed=3).reshape(5, -1))
    with pytest.raises(DmireidError, match="camera_rule 'any'.*cc"):
        ClusterBatchSampler(labels, cams, 4, 28, 5, seed=3, camera_rule="any")


def test_cc_rule_deterministic_ddp_and_fast():
    labels, cams = dataset()
    a = ClusterBatchSampler(labels, cams, 4, 28, 20, seed=5, epoch=1, camera_rule="cc").batches()
    assert np.array_equal(a, ClusterBatchSampler(labels, cams, 4, 28, 20, seed=5, epoch=1, camera_rule="cc").batches())
    shares = [ClusterBatchSampler(labels, cams, 4, 28, 20, seed=5, epoch=1, camera_rule="cc", rank=r,
                                  world_size=7).batches() for r in range(7)]
    assert np.array_equal(np.concatenate(shares, axis=1), a)
    rng = np.random.default_rng(0)
    labels = rng.integers(-1, 700, 13000)
    labels[:3000] = 0
    start = time.perf_counter()
    batches = ClusterBatchSampler(labels, rng.integers(0, 6, 13000), 16, 256, 200, seed=1, camera_rule="cc").batches()
    assert time.perf_counter() - start < 1.0 and batches.shape == (200, 256)
