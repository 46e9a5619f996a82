"""Approximate (IVF) indexes: built and trained once, ``add`` never retrains, ``rebuild`` retrains,
``info`` tells; and two real ``dmireid index add`` processes on one index, serialised by the lock."""

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from gallery_support import faiss_rows, tiny_checkpoint, tiny_images

from dmireid.cli import main
from dmireid.errors import DmireidError
from dmireid.inference import GalleryIndex

faiss = pytest.importorskip("faiss")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "last.pt")


def centroids(index: GalleryIndex) -> np.ndarray:
    ivf = faiss.extract_index_ivf(index.store.vectors)
    return ivf.quantizer.reconstruct_n(0, ivf.nlist)


def test_ivf_build_add_rebuild_and_info(ckpt, tmp_path, capsys):
    images = tiny_images(tmp_path / "g", 120)
    out = tmp_path / "ivf"
    assert main(["index", "build", str(ckpt), str(tmp_path / "g"), "--out", str(out), "--approximate", "ivf-flat",
                 "--nlist", "3", "--nprobe", "3", "--device", "cpu"]) == 0
    assert "IVF3,Flat inner product, nprobe=3" in capsys.readouterr().out
    index = GalleryIndex.open(out, device="cpu")
    info = index.info()
    assert info["kind"] == "ivf-flat" and info["parameters"] == {"nlist": 3, "nprobe": 3}
    assert info["trained_on"] == 120 and info["trained_at"]
    # nprobe = nlist: every list is searched, so the ranking is the exact one
    ids, vectors = index.store.meta.vectors(index.manifest["dim"])
    exact = np.argsort(-(vectors[:5] @ vectors.T), axis=1, kind="stable")[:, :10]
    assert index.search_vectors(vectors[:5], 10)[1].tolist() == ids[exact].tolist()
    before = centroids(index)
    new = tiny_images(tmp_path / "more", 30, seed=4, start=500)
    assert index.add(new)["added"] == 30
    reopened = GalleryIndex.open(out, device="cpu")
    np.testing.assert_array_equal(centroids(reopened), before)  # add never retrains
    assert reopened.info()["trained_on"] == 120 and reopened.info()["count"] == 150
    assert reopened.search(new[0], topk=1)[0][0].path == new[0]
    assert main(["index", "rebuild", str(out), "--nlist", "4"]) == 0
    assert "IVF4,Flat" in capsys.readouterr().out
    rebuilt = GalleryIndex.open(out, device="cpu")
    assert rebuilt.info()["trained_on"] == 150 and rebuilt.info()["parameters"] == {"nlist": 4, "nprobe": 3}
    assert faiss.extract_index_ivf(rebuilt.store.vectors).nlist == 4 and rebuilt.store.vectors.ntotal == 150
    assert main(["index", "info", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "ivf-flat" in shown and "trained_at" in shown and "'nlist': 4" in shown
    assert main(["index", "rebuild", str(out), "--approximate", "exact"]) == 0  # back to exact search
    assert GalleryIndex.open(out).info()["kind"] == "exact"


def test_ivf_sq8_finds_itself_and_ivf_pq_builds(ckpt, tmp_path):
    images = tiny_images(tmp_path / "g", 100)
    index = GalleryIndex.build(ckpt, images, tmp_path / "sq8", approximate="ivf-sq8", nlist=2, nprobe=2, device="cpu")
    assert [h[0].path for h in index.search(images[:3], topk=3)] == images[:3]
    assert "IVF2,SQ8" in index.info()["faiss"]
    with pytest.raises(DmireidError, match="at least 256 vectors"):  # 8-bit PQ codebooks
        GalleryIndex.build(ckpt, images, tmp_path / "pq_small", approximate="ivf-pq", nlist=2, pq_m=16, device="cpu")
    more = images + tiny_images(tmp_path / "g2", 200, seed=3, start=1000)
    pq = GalleryIndex.build(ckpt, more, tmp_path / "pq", approximate="ivf-pq", nlist=2, nprobe=2, pq_m=16, device="cpu")
    assert pq.info()["parameters"] == {"nlist": 2, "nprobe": 2, "pq_m": 16} and pq.store.vectors.ntotal == 300
    hits = pq.search(more[:2], topk=5)
    assert all(len(h) == 5 and len({x.id for x in h}) == 5 for h in hits)


def read_until(stream, text: str) -> str:
    seen = ""
    while text not in seen:
        line = stream.readline()
        assert line, f"the process ended before saying {text!r}:\n{seen}"
        seen += line
    return seen


def test_two_add_processes_are_serialised_nothing_lost_nothing_doubled(ckpt, tmp_path):
    GalleryIndex.build(ckpt, tiny_images(tmp_path / "base", 10), tmp_path / "index", device="cpu")
    common = tiny_images(tmp_path / "common", 40, seed=7, start=100)
    only_a = tiny_images(tmp_path / "a", 30, seed=8, start=200)
    only_b = tiny_images(tmp_path / "b", 30, seed=9, start=300)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    with open(tmp_path / "index" / ".lock", "a+") as held:  # this test holds the lock: both must wait
        fcntl.flock(held, fcntl.LOCK_EX)
        procs = [subprocess.Popen([sys.executable, "-m", "dmireid", "index", "add", str(tmp_path / "index"),
                                   str(tmp_path / "common"), str(tmp_path / name), "--device", "cpu"],
                                  env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for name in ("a", "b")]
        for proc in procs:
            read_until(proc.stderr, "is being changed by another process")
        fcntl.flock(held, fcntl.LOCK_UN)
    outs = [proc.communicate(timeout=600) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outs
    added = sorted(int(out.split("added ")[1].split()[0]) for out, _ in outs)
    assert added == [30, 70]  # the first adds common + its own; the second finds common already there
    index = GalleryIndex.open(tmp_path / "index", device="cpu")
    paths = [p for (p,) in index.store.meta.fetch("SELECT path FROM images")]
    assert len(paths) == len(set(paths)) == 10 + 40 + 30 + 30
    assert set(common + only_a + only_b) <= set(paths)
    ids, vectors = faiss_rows(index.store.vectors)
    meta_ids, meta_vectors = index.store.meta.vectors(index.manifest["dim"])
    assert ids.tolist() == meta_ids.tolist()
    np.testing.assert_array_equal(vectors, meta_vectors)
