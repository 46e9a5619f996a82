"""Tracklets (issue 23): derived tracklets, the tracklet-aware labeler and the camera-local mask.

Hand-computed small cases; every labeler test wraps a stub base labeler whose output is fixed, so
what is checked is the tracklet logic alone.
"""

import numpy as np
import pytest
import torch

from dmireid.data import load_dataset
from dmireid.data.derived_tracklets import derive_tracklets, frame_of
from dmireid.errors import DmireidError
from dmireid.pseudo_labels import JaccardDBSCAN, call_labeler
from dmireid.pseudo_labels.tracklets import TrackletLabeler, compact_tracklets, majority, mutual_links


def samples(spec):
    """[(pid, cam, count)] -> Market-style (path, pid, cam) samples, image k of a group at frame k."""
    out = []
    for pid, cam, count in spec:
        out += [(f"/d/{pid:04d}_c{cam + 1}s1_{k:06d}_00.jpg", pid, cam) for k in range(count)]
    return sorted(out)


class Fixed:
    """A base labeler returning fixed labels (and recording what it was given)."""

    def __init__(self, labels):
        self.labels, self.seen = np.asarray(labels, dtype=np.int64), {}

    def __call__(self, features, cameras=None):
        self.seen = {"features": torch.as_tensor(features).clone(), "cameras": np.asarray(cameras).copy()}
        return self.labels


# ------------------------------------------------------------------------------ derived tracklets
def test_identity_camera_groups_are_tracklets():
    train = samples([(1, 0, 3), (1, 1, 2), (2, 0, 4)])
    tracks = derive_tracklets(train)
    groups = [(pid, cam) for _, pid, cam in train]
    assert len(set(tracks.tolist())) == 3
    assert all((tracks[i] == tracks[j]) == (groups[i] == groups[j]) for i in range(len(train)) for j in range(len(train)))


def test_fragments_cut_each_group_into_contiguous_pieces():
    train = samples([(1, 0, 5), (2, 0, 1), (3, 1, 4)])
    tracks = derive_tracklets(train, fragments=2)
    # 5 images -> pieces of 3 + 2 (path order), 1 image -> 1 piece (no empty tracklet), 4 -> 2 + 2
    assert tracks.tolist() == [0, 0, 0, 1, 1, 2, 3, 3, 4, 4]


def test_switches_move_round_p_n_images_within_their_camera():
    train = samples([(1, 0, 10), (2, 0, 10), (3, 1, 10), (4, 1, 10)])
    clean = derive_tracklets(train)
    noisy = derive_tracklets(train, switches=0.1, seed=3)
    moved = np.flatnonzero(clean != noisy)
    assert len(moved) == 4  # round(0.1 * 40)
    tracklet_camera = {int(t): cam for t, (_, _, cam) in zip(clean, train)}
    assert all(tracklet_camera[int(noisy[i])] == train[i][2] for i in moved)
    assert noisy.tolist() == derive_tracklets(train, switches=0.1, seed=3).tolist()  # seeded


def test_a_camera_with_one_tracklet_keeps_its_images():
    train = samples([(1, 0, 10)])
    assert derive_tracklets(train, switches=0.5).tolist() == [0] * 10


def test_frames_from_market_names_or_minus_one():
    assert frame_of("/x/0002_c1s3_000451_03.jpg") == 3 * 10**7 + 451
    assert frame_of("/x/0001_c2_f0046182.jpg") == -1


@pytest.mark.parametrize("options, message", [
    ({"tracklets": "ids"}, "data.options.tracklets='ids'"),
    ({"tracklets": "identity_camera", "tracklet_fragments": 0}, "data.options.tracklet_fragments=0"),
    ({"tracklets": "identity_camera", "tracklet_switches": 1.5}, "data.options.tracklet_switches=1.5"),
    ({"tracklet_fragments": 2}, "need data.options.tracklets=identity_camera"),
])
def test_bad_tracklet_options_are_one_line_errors(tmp_path, options, message):
    root = tmp_path / "m"
    for split in ("bounding_box_train", "query", "bounding_box_test"):
        (root / split).mkdir(parents=True)
        (root / split / "0001_c1s1_000001_00.jpg").touch()
    with pytest.raises(DmireidError, match=message) as info:
        load_dataset("market1501", root, **options)
    assert "\n" not in str(info.value)


def test_market_loader_fills_train_tracklets_and_frames(tmp_path):
    root = tmp_path / "m"
    for split, names in (("bounding_box_train", ["0001_c1s1_000005_00.jpg", "0001_c1s1_000009_00.jpg",
                                                 "0002_c2s1_000001_00.jpg"]),
                         ("query", ["0003_c1s1_000001_00.jpg"]), ("bounding_box_test", ["0003_c2s1_000001_00.jpg"])):
        (root / split).mkdir(parents=True)
        for name in names:
            (root / split / name).touch()
    ds = load_dataset("market1501", root, tracklets="identity_camera")
    assert ds.train_tracklets == [0, 0, 1] and ds.train_frames == [10**7 + 5, 10**7 + 9, 10**7 + 1]
    assert load_dataset("market1501", root, tracklets="identity_camera", tracklet_frames="none").train_frames == [-1] * 3
    assert load_dataset("market1501", root).train_tracklets is None


# ------------------------------------------------------------------------------ the labeler
def unit(rows):
    return torch.nn.functional.normalize(torch.tensor(rows, dtype=torch.float32), dim=1)


def test_helpers_by_hand():
    assert compact_tracklets(np.array([7, -1, 7, 3, -1])).tolist() == [1, 2, 1, 0, 3]
    # group 0: values 2, 2, 1 -> 2; group 1: 1, 0 (tie) -> 0; group 2: only -1 -> -1
    assert majority(np.array([0, 0, 0, 1, 1, 2]), np.array([2, 2, 1, 1, 0, -1]), 3).tolist() == [2, 0, -1]


def test_a_tracklet_is_never_split_between_clusters():
    x = unit(np.eye(6, 4)[[0, 0, 1, 1, 2, 3]] + 0.01)
    tracks = np.array([0, 0, 0, 1, 1, 1])
    base = Fixed([4, 4, 7, 7, -1, 9])  # tracklet 0: majority 4; tracklet 1: 7 and 9 tie -> 7
    labeler = TrackletLabeler(base, association="none")
    labels = labeler(x, cameras=np.zeros(6, dtype=np.int64), tracklets=tracks)
    assert labels.tolist() == [0, 0, 0, 1, 1, 1]


@pytest.mark.parametrize("noise, expected", [("own", [0, 0, 1, 1, 2]), ("drop", [0, 0, -1, -1, -1])])
def test_noise_tracklets_own_pseudo_identity_or_dropped(noise, expected):
    x = unit(np.eye(5, 5))
    base = Fixed([3, -1, -1, -1, -1])  # tracklet 0 has one clustered image; tracklets 1, 2 none
    labels = TrackletLabeler(base, noise=noise, association="none")(
        x, cameras=np.zeros(5, dtype=np.int64), tracklets=np.array([0, 0, 1, 1, -1]))
    assert labels.tolist() == expected  # the -1 image is a tracklet of its own


def test_co_occurring_tracklets_of_one_camera_never_share_a_cluster():
    x = unit(np.ones((6, 3)))
    tracks = np.array([0, 0, 0, 1, 1, 2])
    frames = np.array([10, 11, 12, 12, 13, 20])  # tracklet 1 overlaps 0 (frame 12); 2 does not
    labels = TrackletLabeler(Fixed([5] * 6), noise="drop", association="none")(
        x, cameras=np.zeros(6, dtype=np.int64), tracklets=tracks, frames=frames)
    assert labels.tolist() == [0, 0, 0, -1, -1, 0]  # the larger (0) stays, 1 leaves, 2 stays
    other_camera = TrackletLabeler(Fixed([5] * 6), noise="drop", association="none")(
        x, cameras=np.array([0, 0, 0, 1, 1, 0]), tracklets=tracks, frames=frames)
    assert other_camera.tolist() == [0] * 6  # overlapping in time in two cameras: no conflict
    unknown = TrackletLabeler(Fixed([5] * 6), noise="drop", association="none")(
        x, cameras=np.zeros(6, dtype=np.int64), tracklets=tracks, frames=np.full(6, -1))
    assert unknown.tolist() == [0] * 6


def test_tracklet_level_clusters_one_mean_per_tracklet():
    rows = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 1, 1], [0, 1, 0]], dtype=np.float32)
    x = unit(rows)
    base = Fixed([0, 0, -1])  # tracklets 0, 1 one cluster, tracklet 2 noise
    labeler = TrackletLabeler(base, level="tracklet", noise="drop", association="none")
    labels = labeler(x, cameras=np.array([0, 0, 1, 1, 1]), tracklets=np.array([4, 4, 9, 9, 11]))
    expected_means = torch.nn.functional.normalize(torch.stack([x[:2].sum(0), x[2:4].sum(0), x[4]]), dim=1)
    torch.testing.assert_close(base.seen["features"], expected_means)
    assert base.seen["cameras"].tolist() == [0, 1, 1]
    assert labels.tolist() == [0, 0, 0, 0, -1]


def test_mutual_links_by_hand():
    means = unit([[1, 0], [0, 1], [1, 0.1], [0.1, 1], [0.7, 0.7]])
    cams = np.array([0, 0, 1, 1, 1])
    links = mutual_links(means, cams, min_similarity=-1.0)
    # 0 <-> 2 and 1 <-> 3 are mutual; 4 is nobody's nearest
    assert [(a, b) for _, a, b in links] == [(0, 2), (1, 3)]
    assert mutual_links(means, cams, min_similarity=1.1) == []


def test_association_joins_unassociated_tracklets_across_cameras():
    x = unit([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0.9, 0.1, 0], [0, 1, 0.1], [0, 0, 1]])
    cams = np.array([0, 0, 0, 1, 1, 1])
    tracks = np.array([0, 0, 1, 2, 3, 4])
    labeler = TrackletLabeler(Fixed([-1] * 6), level="image", noise="drop", association="mutual")
    labels = labeler(x, cameras=cams, tracklets=tracks)
    # the camera-centred means: 0 <-> 2 and 1 <-> 3 mutual; tracklet 4 (camera 1) is left out
    assert labels[0] == labels[1] == labels[3] and labels[2] == labels[4] and labels[0] != labels[2]
    assert labels[5] == -1 and labeler.stats["tracklets_associated"] == 4


def test_without_tracklets_is_a_one_line_error():
    with pytest.raises(DmireidError, match="pseudo_labels.tracklets=true needs a dataset with tracklets"):
        TrackletLabeler(Fixed([0, 0]))(torch.zeros(2, 2), cameras=np.zeros(2, dtype=np.int64))


def test_options_off_give_today_s_labels():
    """call_labeler passes tracklets/frames only when the dataset has them and the labeler names them."""
    gen = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(40, 8, generator=gen), dim=1)
    cams, pids = np.arange(40) % 2, np.arange(40) // 4
    labeler = JaccardDBSCAN(k1=6, k2=3, eps=0.6, min_samples=2, progress=False)
    today = labeler(x)
    assert call_labeler(labeler, x, cameras=cams, identities=pids).tolist() == today.tolist()
    assert call_labeler(labeler, x, cameras=cams, identities=pids, tracklets=pids, frames=pids).tolist() == today.tolist()
    seen = {}
    call_labeler(lambda features, **kw: seen.update(kw) or np.zeros(40, dtype=np.int64), x, cams, pids)
    assert sorted(seen) == ["cameras", "identities"]


def test_build_wraps_only_when_asked():
    from dmireid import build
    from dmireid.config import load_config

    assert isinstance(build.labeler(load_config("smoke", [])), JaccardDBSCAN)
    wrapped = build.labeler(load_config("smoke", ["pseudo_labels.tracklets=true", "pseudo_labels.tracklet_level=tracklet"]))
    assert isinstance(wrapped, TrackletLabeler) and wrapped.base.min_samples == 2 and wrapped.level == "tracklet"


def test_cross_camera_pair_counts_by_hand():
    from dmireid.pseudo_labels.tracklets import cross_camera_pairs

    labels = np.array([0, 0, 0, 1, 1, -1])
    cameras = np.array([0, 1, 1, 0, 0, 1])
    ids = np.array([5, 5, 6, 7, 7, 7])
    # cluster 0: cross-camera pairs (0,1) correct, (0,2) wrong; cluster 1: one camera; -1 ignored
    assert cross_camera_pairs(labels, cameras, ids) == (2, 1)
