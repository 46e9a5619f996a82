"""GalleryIndex: build / add / remove / search / info, the fingerprint refusal, duplicates, unreadable
files, exact vs approximate search, and the ``dmireid index`` commands (tiny random model, 32×16 PNGs)."""

import json
import shutil
import sqlite3

import numpy as np
import pytest
import torch
from gallery_support import faiss_rows, tiny_checkpoint, tiny_images
from PIL import Image

from dmireid.cli import main
from dmireid.errors import DmireidError
from dmireid.embedding import FeatureExtractor, weights_fingerprint
from dmireid.inference import GalleryIndex
from dmireid.inference.gallery import camera_of

pytest.importorskip("faiss")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "last.pt")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return tiny_images(tmp_path_factory.mktemp("images") / "gallery", 40)


@pytest.fixture(scope="module")
def features(ckpt, images):
    return FeatureExtractor(ckpt, device="cpu")(images).numpy()


@pytest.fixture(scope="module")
def built(ckpt, images, tmp_path_factory):
    """An exact index of the 40 images (tag "day1"), copied per test that changes it."""
    out = tmp_path_factory.mktemp("built") / "index"
    GalleryIndex.build(ckpt, images, out, device="cpu", tag="day1")
    return out


def fresh(built, tmp_path):
    shutil.copytree(built, tmp_path / "index")
    return GalleryIndex.open(tmp_path / "index", device="cpu")


def brute_force(query, gallery, k):
    """The independent form: cosine distances of unit rows, full sort."""
    distance = 1.0 - query @ gallery.T
    order = np.argsort(distance, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(distance, order, axis=1)


def test_search_matches_brute_force_and_reports_metadata(built, images, features, tmp_path):
    index = GalleryIndex.open(built, device="cpu")
    queries = images[:3] + [Image.open(images[5])]  # paths and a PIL image
    results = index.search(queries, topk=5)
    order, distance = brute_force(features[[0, 1, 2, 5]], features, 5)
    for hits, rows, dists in zip(results, order, distance):
        assert [h.path for h in hits] == [images[r] for r in rows]
        np.testing.assert_allclose([h.distance for h in hits], dists, atol=1e-5)
        assert all(h.match is None and h.tag == "day1" and h.added_at for h in hits)  # no threshold yet
        assert [h.camera for h in hits] == [camera_of(images[r]) for r in rows]
        assert [index.image_path(h.id) for h in hits] == [h.path for h in hits]
    assert results[0][0].path == images[0] and results[0][0].distance < 1e-5
    assert camera_of("/x/0002_c3s1_000451_03.jpg") == 2 and camera_of("/x/crop.jpg") is None
    hits = index.search(images[0], topk=100, threshold=float(distance[0, 2]))  # more than the gallery holds
    assert len(hits[0]) == 40
    assert [h.match for h in hits[0][:4]] == [True, True, True, False]
    with pytest.raises(DmireidError, match="topk"):
        index.search(images[0], topk=0)


def test_info_and_files(built, ckpt, features):
    info = GalleryIndex.open(built).info()
    fingerprint = weights_fingerprint(torch.load(ckpt, weights_only=True)["model"])
    assert info["count"] == 40 and info["dim"] == 512 and info["kind"] == "exact"
    assert info["fingerprint"] == fingerprint and info["checkpoint"] == str(ckpt.resolve())
    assert info["tags"] == {"day1": 40} and info["cameras"] == {0: 14, 1: 13, 2: 13}
    assert info["threshold"] is None and info["encoder"] == "online" and info["input_size"] == [32, 16]
    assert {p.name for p in built.iterdir()} >= {"vectors.faiss", "meta.sqlite", "index.json"}
    manifest = json.loads((built / "index.json").read_text())
    assert manifest["fingerprint"] == fingerprint and manifest["vectors_generation"] == 1
    with sqlite3.connect(built / "meta.sqlite") as db:
        rows = db.execute("SELECT id, vector FROM images ORDER BY id").fetchall()
    stored = np.stack([np.frombuffer(v, np.float32) for _, v in rows])
    np.testing.assert_allclose(stored, features, atol=1e-6)  # build order = the sorted input order
    import faiss

    ids, vectors = faiss_rows(faiss.read_index(str(built / "vectors.faiss")))
    assert ids.tolist() == [r[0] for r in rows]
    np.testing.assert_array_equal(vectors, stored)


def test_same_file_twice_is_a_no_op_and_a_changed_file_is_replaced(built, images, tmp_path):
    index = fresh(built, tmp_path)
    before = (tmp_path / "index" / "vectors.faiss").read_bytes()
    assert index.add(images[:10]) == {"added": 0, "duplicates": 10, "replaced": 0, "unreadable": []}
    assert (tmp_path / "index" / "vectors.faiss").read_bytes() == before  # nothing rewritten
    assert index.store.meta.generation() == 1
    changed = tmp_path / "changed.png"
    shutil.copy(images[0], changed)
    assert index.add([changed, changed])["added"] == 1  # listed twice: once
    Image.new("RGB", (16, 32), (200, 10, 10)).save(changed)  # same path, new content
    result = index.add([changed])
    assert result["added"] == 1 and result["replaced"] == 1 and index.info()["count"] == 41
    hit = index.search([changed], topk=1)[0][0]
    assert hit.path == str(changed.resolve()) and hit.distance < 1e-5


def test_unreadable_stops_before_writing_or_is_skipped(built, tmp_path):
    index = fresh(built, tmp_path)
    new = tiny_images(tmp_path / "new", 3, seed=5, start=100)
    broken = tmp_path / "broken.jpg"
    broken.write_text("not an image")
    missing = tmp_path / "missing.png"
    files = {p.name: p.read_bytes() for p in (tmp_path / "index").iterdir()}
    for bad in (broken, missing):
        with pytest.raises(DmireidError, match=bad.name):
            index.add([*new, bad])
        assert {p.name: p.read_bytes() for p in (tmp_path / "index").iterdir()} == files
    result = index.add([*new, broken, missing], skip_unreadable=True, tag="day2")
    assert result["added"] == 3 and result["unreadable"] == [str(broken), str(missing)]
    assert index.info()["tags"] == {"day1": 40, "day2": 3}


def test_remove_files_and_folders(built, images, tmp_path):
    index = fresh(built, tmp_path)
    extra = tiny_images(tmp_path / "extra" / "sub", 5, seed=3, start=200)
    index.add([tmp_path / "extra"])
    assert index.remove([images[0], images[1], tmp_path / "not-there.png"]) == 2
    assert index.remove([tmp_path / "extra"]) == 5
    assert index.info()["count"] == 38
    paths = {h.path for h in index.search(images[2], topk=50)[0]}
    assert images[0] not in paths and images[2] in paths and not paths & set(extra)
    reopened = GalleryIndex.open(tmp_path / "index")  # what is on disk agrees
    ids, _ = faiss_rows(reopened.store.vectors)
    assert len(ids) == 38 and reopened.store.generation == 4


def test_other_checkpoint_or_model_vectors_are_refused(built, ckpt, tmp_path, features, images):
    other = tiny_checkpoint(tmp_path / "other.pt", seed=1)
    with pytest.raises(DmireidError, match=r"not the model the index .* was built with") as err:
        GalleryIndex.open(built, checkpoint=other)
    assert "\n" not in str(err.value)
    index = fresh(built, tmp_path)
    other_fp = weights_fingerprint(torch.load(other, weights_only=True)["model"])
    with pytest.raises(DmireidError, match="another model"):
        index.add_embedded(images[:2], features[:2], fingerprint=other_fp)
    own = index.manifest["fingerprint"]
    with pytest.raises(DmireidError, match="d=8 cannot join an index of d=512"):
        index.add_embedded([tmp_path / "x.png"], np.ones((1, 8), np.float32), fingerprint=own)
    shutil.copy(other, tmp_path / "moved.pt")
    torch.save(torch.load(ckpt, weights_only=True), tmp_path / "same.pt")  # the same weights elsewhere
    assert GalleryIndex.open(built, checkpoint=tmp_path / "same.pt").search(images[0], topk=1)[0][0].distance < 1e-5
    manifest = json.loads((tmp_path / "index" / "index.json").read_text())
    (tmp_path / "index" / "index.json").write_text(json.dumps({**manifest, "checkpoint": str(tmp_path / "moved.pt")}))
    with pytest.raises(DmireidError, match="not the model"):
        GalleryIndex.open(tmp_path / "index").search(images[0])  # recorded checkpoint overwritten: refused


def test_approximate_index_agrees_with_exact(ckpt, images, features, tmp_path):
    approx = GalleryIndex.build(ckpt, images, tmp_path / "hnsw", approximate=True, device="cpu")
    assert approx.info()["kind"] == "approximate" and "HNSW" in approx.info()["faiss"]
    order, distance = brute_force(features[:6], features, 10)
    results = approx.search(images[:6], topk=10)
    recall = np.mean([len({h.path for h in hits} & {images[r] for r in rows}) / 10
                      for hits, rows in zip(results, order)])
    assert recall == 1.0  # 40 vectors: the graph search is exhaustive
    np.testing.assert_allclose([[h.distance for h in hits] for hits in results], distance, atol=1e-5)
    assert approx.remove(images[:4]) == 4  # HNSW: rebuilt without them
    reopened = GalleryIndex.open(tmp_path / "hnsw")
    assert reopened.store.vectors.ntotal == 36
    assert images[0] not in {h.path for h in reopened.search(images[0], topk=36)[0]}


def test_threshold_from_checkpoint_and_set(ckpt, images, tmp_path):
    state = torch.load(ckpt, weights_only=True)
    fingerprint = weights_fingerprint(state["model"])
    with_threshold = tmp_path / "calibrated.pt"
    torch.save({**state, "open_set": {"threshold": 0.01, "false_match_rate": 0.01, "fingerprint": fingerprint,
                                      "encoder": "online", "estimated_from": "calibrate"}}, with_threshold)
    index = GalleryIndex.build(with_threshold, images[:10], tmp_path / "a", device="cpu")
    assert index.threshold == 0.01 and index.info()["threshold_source"] == "checkpoint (calibrate)"
    hits = index.search(images[0], topk=3)[0]
    assert [h.match for h in hits] == [h.distance <= 0.01 for h in hits] and hits[0].match
    index.set_threshold(0.5, false_match_rate=0.05)
    reopened = GalleryIndex.open(tmp_path / "a")
    assert reopened.threshold == 0.5 and all(h.match for h in reopened.search(images[0], topk=3)[0])
    torch.save({**state, "open_set": {"threshold": 0.3, "fingerprint": "0" * 64}}, with_threshold)
    assert GalleryIndex.build(with_threshold, images[:2], tmp_path / "b").threshold is None  # other weights
    with pytest.raises(DmireidError, match="already holds a gallery index"):
        GalleryIndex.build(with_threshold, images[:2], tmp_path / "b")
    with pytest.raises(DmireidError, match=r"\[0, 2\]"):
        reopened.set_threshold(3.0)


def test_cli_index_commands(ckpt, images, tmp_path, capsys):
    folder = tmp_path / "crops"
    shutil.copytree(str(images[0].rsplit("/", 1)[0]), folder)
    (folder / "broken.jpg").write_text("not an image")
    out = str(tmp_path / "idx")
    assert main(["index", "build", str(ckpt), str(folder), "--out", out, "--device", "cpu"]) == 2
    assert "broken.jpg" in capsys.readouterr().err and not (tmp_path / "idx").exists()
    assert main(["index", "build", str(ckpt), str(folder), "--out", out, "--skip-unreadable", "--tag", "cam1"]) == 0
    text = capsys.readouterr().out
    assert "built" in text and "40 images x 512" in text and "skipped 1 unreadable image" in text
    assert main(["index", "add", out, str(folder), "--skip-unreadable"]) == 0
    assert "added 0 images" in capsys.readouterr().out
    assert main(["index", "search", out, "--query", images[3], "--topk", "2", "--threshold", "0.001"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"query {images[3]}: match (nearest 0.0000 <= threshold 0.0010)")
    assert lines[1].split()[:3] == ["1", "0.0000", "match"] and lines[1].endswith(str((folder / images[3].rsplit("/", 1)[1]).resolve()))
    assert lines[2].split()[2] == "unknown"
    assert main(["index", "remove", out, "--paths", str(folder / images[3].rsplit("/", 1)[1])]) == 0
    assert "removed 1 images" in capsys.readouterr().out
    assert main(["index", "info", out, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["count"] == 39 and info["tags"] == {"cam1": 39}
    assert main(["index", "info", str(tmp_path)]) == 2
    assert "not a gallery index" in capsys.readouterr().err
