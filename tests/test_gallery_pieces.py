"""The pieces of issue 25 point 5: ``dmireid calibrate --index``, the one-line error for a busy port,
and a reader (another connection, another thread) never seeing half of an add."""

import socket
import sqlite3
import threading

import numpy as np
import pytest
from gallery_support import tiny_checkpoint, tiny_images

from dmireid.cli import main
from dmireid.inference import GalleryIndex
from dmireid.inference import gallery_store

pytest.importorskip("faiss")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "last.pt")


def test_calibrate_index_stores_the_threshold_in_an_existing_index(ckpt, synthetic_root, tmp_path, capsys):
    folder = str(synthetic_root / "bounding_box_test")
    index = GalleryIndex.build(ckpt, [folder], tmp_path / "index", device="cpu")
    assert index.threshold is None
    assert main(["calibrate", str(ckpt), folder, "--quiet", "--index", str(tmp_path / "index")]) == 0
    out = capsys.readouterr().out
    reopened = GalleryIndex.open(tmp_path / "index")
    threshold = float(out.split("open-set threshold ")[1].split()[0])
    assert reopened.threshold == pytest.approx(threshold, abs=5e-5) and 0 < reopened.threshold < 2
    assert reopened.info()["threshold_source"] == "calibrate" and f"stored in the index {tmp_path / 'index'}" in out
    # an index of another model is refused in one line, and keeps no threshold
    other = tiny_checkpoint(tmp_path / "other.pt", seed=5)
    GalleryIndex.build(other, [folder], tmp_path / "other_index", device="cpu")
    assert main(["calibrate", str(ckpt), folder, "--quiet", "--index", str(tmp_path / "other_index")]) == 2
    err = capsys.readouterr().err
    assert "built with other weights" in err and len(err.strip().splitlines()) == 1
    assert GalleryIndex.open(tmp_path / "other_index").threshold is None
    assert main(["calibrate", str(ckpt), folder, "--quiet", "--index", str(tmp_path / "nowhere")]) == 2
    assert "is not a gallery index" in capsys.readouterr().err


def test_serve_on_a_busy_port_is_one_line(ckpt, tmp_path, capsys):
    pytest.importorskip("uvicorn")
    GalleryIndex.build(ckpt, tiny_images(tmp_path / "g", 3), tmp_path / "index", device="cpu")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        assert main(["serve", str(tmp_path / "index"), "--port", str(port), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"dmireid: error: port {port} on 127.0.0.1 is already in use (another dmireid serve?): "
                   f"stop it or choose another with --port"]


def test_a_reader_never_sees_half_an_add(ckpt, tmp_path, monkeypatch):
    index = GalleryIndex.build(ckpt, tiny_images(tmp_path / "a", 10), tmp_path / "index", device="cpu")
    assert index.store.meta.fetch("PRAGMA journal_mode")[0][0] == "wal"
    new = tiny_images(tmp_path / "b", 25, seed=3, start=100)
    seen = {}
    real_kill_point = gallery_store.kill_point

    def observe(name):  # inside the add: rows inserted, not committed / committed, faiss not yet saved
        if name in ("before_meta_commit", "after_meta_commit", "after_vectors"):
            with sqlite3.connect(tmp_path / "index" / "meta.sqlite", timeout=0.5) as other:  # never waits
                rows = other.execute("SELECT count(*) FROM images").fetchone()[0]
            reader = threading.Thread(target=lambda: seen.setdefault(name, (rows, index.search_vectors(
                index.store.meta.vectors(index.manifest["dim"])[1][:2], topk=50)[1])))
            reader.start()
            reader.join(timeout=10)
            assert not reader.is_alive(), f"a search waited for the add at {name}"
        real_kill_point(name)

    monkeypatch.setattr(gallery_store, "kill_point", observe)
    assert index.add(new)["added"] == 25
    assert seen["before_meta_commit"][0] == 10 and seen["after_meta_commit"][0] == 35
    for name, (_, ids) in seen.items():  # the searching thread saw the 10 images before the add, whole
        assert np.count_nonzero(ids >= 0, axis=1).tolist() == [10, 10], name
    assert np.count_nonzero(index.search_vectors(np.eye(index.manifest["dim"], dtype=np.float32)[:1], 50)[1] >= 0) == 35
