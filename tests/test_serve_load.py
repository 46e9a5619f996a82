"""Many clients at once: the short form of ``benchmarks/bench_serve.py`` (a real ``dmireid serve``
process, loopback clients searching and adding) and the page answering while an add is mid-write."""

import asyncio
import sys
import threading
from pathlib import Path

import pytest
from gallery_support import tiny_checkpoint, tiny_images

pytest.importorskip("starlette", reason="the serve extra (pip install dmireid[serve]) is not installed")
pytest.importorskip("uvicorn", reason="the serve extra (pip install dmireid[serve]) is not installed")
pytest.importorskip("faiss")

from dmireid.inference import GalleryIndex, gallery_store  # noqa: E402
from dmireid.serve.app import IndexWorker  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_serve import run_load  # noqa: E402


def test_load_short_form_nothing_lost(tmp_path):
    result = run_load(tmp_path, gallery=500, clients=4, seconds=6, max_requests=30, add_every=2)
    assert result["errors"] == 0 and result["search"]["count"] > 0 and result["add"]["count"] > 0
    check = result["check"]
    assert check["ids_agree"] and check["vectors_agree"] and check["missing_adds"] == []
    assert check["acknowledged_adds"] == result["add"]["count"] == check["rows_added"]


def test_searches_answer_while_an_add_is_mid_write(tmp_path, monkeypatch):
    ckpt = tiny_checkpoint(tmp_path / "last.pt")
    images = tiny_images(tmp_path / "g", 12)
    GalleryIndex.build(ckpt, images, tmp_path / "index", device="cpu")
    new = tiny_images(tmp_path / "new", 5, seed=2, start=100)
    reached, release = threading.Event(), threading.Event()
    real_kill_point = gallery_store.kill_point

    def pause(name):  # the add stops with SQLite committed and vectors.faiss not yet replaced
        if name == "before_vectors_replace":
            reached.set()
            assert release.wait(60)
        real_kill_point(name)

    monkeypatch.setattr(gallery_store, "kill_point", pause)
    worker = IndexWorker(lambda: GalleryIndex.open(tmp_path / "index", device="cpu"))

    async def scenario():
        adding = asyncio.ensure_future(worker.run(lambda index: index.add(new), write=True))
        await asyncio.get_running_loop().run_in_executor(None, reached.wait, 60)
        hits = await asyncio.wait_for(worker.run(lambda index: index.search(images[:2], topk=20)), 30)
        info = await asyncio.wait_for(worker.run(lambda index: index.info()), 30)
        release.set()
        return hits, info, await adding

    hits, info, report = asyncio.run(scenario())
    assert [len(h) for h in hits] == [12, 12] and hits[0][0].path == images[0]  # the gallery before the add
    assert info["count"] == 17  # SQLite already committed: metadata may lead, never trail
    assert report["added"] == 5
    after = asyncio.run(worker.run(lambda index: index.search(new[:1], topk=20)))[0]
    assert len(after) == 17 and after[0].path == new[0]
    worker.close()
