"""Nothing lost: ``dmireid index add`` / ``index remove`` killed with SIGKILL at each point of a change.

Each kill runs in its own copy of one index, in a child process that runs the CLI and kills itself
at the point named by ``DMIREID_TEST_KILL_AT``; all children run at once. One is a real
``python -m dmireid`` subprocess (the environment variable read by a fresh interpreter); the
others are forks of this process running :func:`dmireid.cli.main`, which saves ~9 s of imports
each (torch is single-threaded here, so forking after it loaded is safe). Afterwards the files on disk must be whole (vectors.faiss readable, SQLite holding the
rows of before or of after), and opening the index must give vectors and metadata that agree,
the state before the change (killed before the SQLite commit) or after it (any later point), and
an index on which the next add and search work.
"""

import multiprocessing
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from gallery_support import faiss_rows, tiny_checkpoint, tiny_images

from dmireid.cli import main
from dmireid.inference import GalleryIndex
from dmireid.inference.gallery_store import KILL_ENV, KILL_POINTS

faiss = pytest.importorskip("faiss")

REPO = Path(__file__).resolve().parents[1]
ADDED = 300  # images one killed add brings
REMOVE_POINTS = ("after_meta_commit", "before_vectors_replace")
SUBPROCESS_POINT = "before_vectors_replace"  # the add killed in a fresh interpreter


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill")
    ckpt = tiny_checkpoint(root / "last.pt")
    base = tiny_images(root / "base" / "day1", 20, seed=1)
    new = tiny_images(root / "new", ADDED, seed=2, start=1000)
    GalleryIndex.build(ckpt, [root / "base"], root / "index0", device="cpu")
    return root, base, new


def forked_main(argv: list[str], point: str) -> None:
    os.environ[KILL_ENV] = point
    raise SystemExit(main(argv))


def run_killed(root: Path, jobs: list[tuple[str, list[str]]], source: str = "index0") -> list[Path]:
    """Run ``dmireid index ARGS`` for each (kill point, args) in its own copy of index0, all at once:
    the add killed at SUBPROCESS_POINT as ``python -m dmireid``, the others as forks."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
           KILL_ENV: SUBPROCESS_POINT}
    folders, children = [], []
    for n, (point, args) in enumerate(jobs):
        folder = root / f"{source}_{n}_{point}"
        shutil.copytree(root / source, folder)
        folders.append(folder)
        argv = ["index", args[0], str(folder), *args[1:], *(["--device", "cpu"] if args[0] == "add" else [])]
        if args[0] == "add" and point == SUBPROCESS_POINT:
            children.append(subprocess.Popen([sys.executable, "-m", "dmireid", *argv], env=env, text=True,
                                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
        else:
            children.append(multiprocessing.get_context("fork").Process(target=forked_main, args=(argv, point)))
            children[-1].start()
    for child, (point, _) in zip(children, jobs):
        if isinstance(child, subprocess.Popen):
            out, _ = child.communicate(timeout=600)
            code = child.returncode
        else:
            child.join(timeout=600)
            out, code = "", child.exitcode
        assert code == -signal.SIGKILL, f"{point}: exit {code}, not killed\n{out}"
    return folders


def sqlite_paths(folder: Path) -> set[str]:
    with sqlite3.connect(folder / "meta.sqlite") as db:  # a hot journal is rolled back here
        return {p for (p,) in db.execute("SELECT path FROM images")}


def check_consistent(folder: Path, expected: set[str]) -> GalleryIndex:
    """Whole files; after open: the expected rows, faiss ids == SQLite ids, equal vectors."""
    faiss.read_index(str(folder / "vectors.faiss"))  # never torn: the old file or the new one
    assert sqlite_paths(folder) == expected
    index = GalleryIndex.open(folder, device="cpu")
    ids, vectors = faiss_rows(index.store.vectors)
    meta_ids, meta_vectors = index.store.meta.vectors(index.manifest["dim"])
    assert ids.tolist() == meta_ids.tolist()
    np.testing.assert_array_equal(vectors, meta_vectors)
    reopened = GalleryIndex.open(folder, device="cpu")  # what open repaired is on disk
    assert reopened.manifest["vectors_generation"] == reopened.store.meta.generation()
    assert faiss_rows(reopened.store.vectors)[0].tolist() == meta_ids.tolist()
    return index


def test_killed_add_and_remove_leave_the_index_before_or_after(setup, tmp_path):
    root, base, new = setup
    jobs = [(point, ["add", str(root / "new")]) for point in KILL_POINTS]  # after_manifest: the end
    jobs += [(point, ["remove", "--paths", *base[:10]]) for point in REMOVE_POINTS]
    folders = run_killed(root, jobs)
    before, after_add, after_remove = set(base), set(base) | set(new), set(base[10:])
    for folder, (point, args) in zip(folders, jobs):
        after = after_add if args[0] == "add" else after_remove
        index = check_consistent(folder, before if point == "before_meta_commit" else after)
        # the next command works: add one more image, find it, and the others
        extra = tiny_images(tmp_path / folder.name, 1, seed=9, start=5000)
        assert index.add(extra)["added"] == 1
        hits = index.search([extra[0], base[15]], topk=3)
        assert hits[0][0].path == extra[0] and hits[0][0].distance < 1e-5
        assert hits[1][0].path == base[15] and hits[1][0].distance < 1e-5
        expected = (before if point == "before_meta_commit" else after) | set(extra)
        check_consistent(folder, expected)


def test_killed_rebuild_leaves_the_index_before_or_after(setup, tmp_path):
    """``dmireid index rebuild`` (retrain an IVF index) killed at every write point: the same rows,
    vectors.faiss agreeing with SQLite, and the manifest's nlist the one of the faiss index in use."""
    root, base, _ = setup
    if not (root / "ivf0").exists():
        shutil.copytree(root / "index0", root / "ivf0")
        GalleryIndex.open(root / "ivf0").rebuild("ivf-flat", nlist=1, nprobe=2)
    jobs = [(point, ["rebuild", "--nlist", "2"]) for point in KILL_POINTS]
    folders = run_killed(root, jobs, source="ivf0")
    for folder, (point, _) in zip(folders, jobs):
        assert sqlite_paths(folder) == set(base)
        index = GalleryIndex.open(folder, device="cpu")
        ivf = faiss.extract_index_ivf(index.store.vectors)
        assert ivf.nlist == index.manifest["nlist"] and index.store.vectors.ntotal == len(base), point
        assert index.manifest["nlist"] == (2 if point == "after_manifest" else 1), point  # before: retrained as before
        meta_ids, meta_vectors = index.store.meta.vectors(index.manifest["dim"])
        assert index.search_vectors(meta_vectors, 1)[1][:, 0].tolist() == meta_ids.tolist()  # nprobe 2 >= nlist: all
        hits = index.search([base[3]], topk=1)[0]
        assert hits[0].path == base[3] and hits[0].distance < 1e-5, point
        reopened = GalleryIndex.open(folder, device="cpu")
        assert reopened.manifest["vectors_generation"] == reopened.store.meta.generation()
