"""The synthetic generator: layout, id split, determinism, caching, and that it is a real re-ID task."""

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dmireid.data import check_images, load_dataset, make_synthetic
from dmireid.errors import DmireidError

SMALL = dict(num_ids=6, num_cameras=2, height=32, width=16)


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_loads_as_market1501_and_synthetic(synthetic_root):
    market = load_dataset("market1501", synthetic_root)
    synth = load_dataset("synthetic", synthetic_root, num_ids=20, num_cameras=3, height=64, width=32)
    assert (market.train, market.query, market.gallery) == (synth.train, synth.query, synth.gallery)
    assert synth.name == "synthetic" and synth.root == str(synthetic_root)
    names = [p.name for p in (synthetic_root / "bounding_box_train").iterdir()]
    assert all(len(n.split("_")) == 4 and n.endswith(".jpg") for n in names)  # 0001_c1s1_000123_00.jpg
    junk = [p.name for p in (synthetic_root / "bounding_box_test").iterdir() if p.name.startswith("-1_")]
    assert junk and all(path.split("/")[-1] not in junk for path, _, _ in market.gallery)
    assert {cam for _, _, cam in market.train + market.query + market.gallery} == {0, 1, 2}


def test_identity_split_and_query_protocol(synthetic_root):
    ds = load_dataset("market1501", synthetic_root)
    train_ids = {pid for _, pid, _ in ds.train}
    query_ids = {pid for _, pid, _ in ds.query}
    gallery_ids = {pid for _, pid, _ in ds.gallery} - {0}
    assert len(train_ids) == 10 and query_ids == gallery_ids and len(query_ids) == 10
    assert not train_ids & (query_ids | gallery_ids)
    assert train_ids | query_ids == set(range(1, 21))
    assert sum(pid == 0 for _, pid, _ in ds.gallery) == 10  # distractors, gallery only
    cams = defaultdict(set)
    for _, pid, cam in ds.train + ds.query + ds.gallery:
        cams[pid].add(cam)
    assert all(len(cams[pid]) >= 2 for pid in train_ids | query_ids)
    query_cams = defaultdict(list)
    for _, pid, cam in ds.query:
        query_cams[pid].append(cam)
    for pid, qc in query_cams.items():
        assert len(qc) == len(set(qc))  # one query per camera
        for cam in qc:  # every query has a true match in another camera
            assert any(g == pid and c != cam for _, g, c in ds.gallery)


def test_images_decode_at_the_requested_size(synthetic_root):
    ds = load_dataset("market1501", synthetic_root)
    paths = [p for p, _, _ in ds.train[:10] + ds.gallery[:10]]
    assert check_images(paths, progress=False) == []
    for path in paths:
        with Image.open(path) as im:
            assert im.size == (32, 64) and im.mode == "RGB" and im.format == "JPEG"


def test_byte_identical_for_same_seed_and_different_otherwise(tmp_path):
    a = files(make_synthetic(tmp_path / "a", seed=3, **SMALL))
    b = files(make_synthetic(tmp_path / "b", seed=3, **SMALL))
    c = files(make_synthetic(tmp_path / "c", seed=4, **SMALL))
    assert a == b and len(a) > 20
    assert a != c
    assert json.loads(a["synthetic.json"])["seed"] == 3
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary folder left behind


def test_load_synthetic_generates_caches_and_regenerates(tmp_path):
    root = tmp_path / "cache"
    ds = load_dataset("synthetic", root, seed=1, **SMALL)
    assert len(ds.train) > 0 and (root / "synthetic.json").is_file()
    marker_time = (root / "synthetic.json").stat().st_mtime_ns
    before = files(root)
    again = load_dataset("synthetic", root, seed=1, **SMALL)
    assert again.train == ds.train and (root / "synthetic.json").stat().st_mtime_ns == marker_time
    other = load_dataset("synthetic", root, seed=2, **SMALL)  # other parameters: regenerated in place
    assert json.loads((root / "synthetic.json").read_text())["seed"] == 2
    assert files(root) != before and len(other.train) > 0


def test_default_root_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    ds = load_dataset("synthetic", None, num_ids=4, num_cameras=2, height=32, width=16)
    assert ds.root == str(tmp_path / "dmireid" / "synthetic-n4-c2-s0-32x16")


def test_refuses_foreign_folders_and_bad_parameters(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "holiday.jpg").write_bytes(b"x")
    for call in (lambda: load_dataset("synthetic", tmp_path / "photos", **SMALL),
                 lambda: make_synthetic(tmp_path / "photos", **SMALL)):
        with pytest.raises(DmireidError, match="photos") as info:
            call()
        assert "\n" not in str(info.value)
    assert (tmp_path / "photos" / "holiday.jpg").read_bytes() == b"x"
    for bad in (dict(num_ids=1), dict(num_cameras=1), dict(height=8), dict(images_per_camera=(3, 2))):
        with pytest.raises(DmireidError, match="synthetic"):
            make_synthetic(tmp_path / "bad", **{**SMALL, **bad})


def test_images_per_camera_bounds(tmp_path):
    ds = load_dataset("market1501", make_synthetic(tmp_path / "s", num_ids=8, num_cameras=3, height=32, width=16,
                                                   images_per_camera=(2, 2)))
    counts = defaultdict(int)
    for _, pid, cam in ds.train + ds.query + ds.gallery:
        counts[pid, cam] += pid > 0
    assert set(v for (pid, _), v in counts.items() if pid > 0) == {2}


def raw_pixel_map(ds) -> float:
    """mAP of flattened, L2-normalised pixels, same-pid-same-camera gallery items removed."""
    def feats(samples):
        x = np.stack([np.asarray(Image.open(p).convert("RGB"), np.float32).ravel() for p, _, _ in samples])
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    sim = feats(ds.query) @ feats(ds.gallery).T
    gp, gc = np.array([s[1] for s in ds.gallery]), np.array([s[2] for s in ds.gallery])
    aps = []
    for i, (_, pid, cam) in enumerate(ds.query):
        keep = ~((gp == pid) & (gc == cam))
        order = np.argsort(-sim[i, keep], kind="stable")
        hits = (gp[keep] == pid)[order]
        aps.append(np.mean(np.cumsum(hits)[hits] / (np.flatnonzero(hits) + 1)))
    return float(np.mean(aps))


def test_raw_pixels_do_not_solve_it(synthetic_root):
    """Cameras change appearance enough that raw pixels rank poorly, yet better than chance."""
    ds = load_dataset("market1501", synthetic_root)
    score = raw_pixel_map(ds)
    chance = np.mean([np.mean([g == pid for _, g, c in ds.gallery if not (g == pid and c == cam)])
                      for _, pid, cam in ds.query])
    assert chance < score < 0.5
