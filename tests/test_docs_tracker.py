"""The snippets of docs/tracker.md, run as written on a short synthetic clip (deep-sort-realtime, boxmot,
plain ONNX Runtime); each is skipped only where its third-party package is not installed."""

import re
from pathlib import Path

import numpy as np
import pytest

from dmireid.cli import main
from dmireid.data.synthetic_video import render_clip, write_clip
from dmireid.inference import TrackerEmbedder

from tracking_fixtures import checkpoint  # noqa: F401  (fixture)

DOC = Path(__file__).resolve().parents[1] / "docs" / "tracker.md"


def snippets() -> dict[str, str]:
    """The ```python blocks of the page by the section (## ...) they are in."""
    found, section = {}, None
    for part in re.split(r"(^## [^\n]*$|^```python\n.*?^```$)", DOC.read_text(), flags=re.M | re.S):
        if part.startswith("## "):
            section = part[3:].strip()
        elif part.startswith("```python"):
            found[section] = part.split("\n", 1)[1].rsplit("```", 1)[0]
    return found


@pytest.fixture(scope="module")
def folder(checkpoint, tmp_path_factory):  # noqa: F811
    here = tmp_path_factory.mktemp("docs")
    (here / "last.pt").write_bytes(Path(checkpoint).read_bytes())
    write_clip(render_clip(site_seed=0, scene_seed=2, camera=1, frames=20, people=4), here / "clip")
    pytest.importorskip("onnx")
    assert main(["export", str(here / "last.pt"), "--for", "boxmot", "--out", str(here / "dmireid_reid.onnx")]) == 0
    return here


def run(code: str, folder: Path, monkeypatch) -> dict:
    monkeypatch.chdir(folder)
    namespace: dict = {}
    exec(compile(code, str(DOC), "exec"), namespace)  # noqa: S102 - the documentation's own code
    return namespace


def test_the_page_has_the_three_snippets():
    assert set(snippets()) == {"deep-sort-realtime", "boxmot", "Plain ONNX Runtime"}


def test_deep_sort_snippet(folder, monkeypatch):
    pytest.importorskip("deep_sort_realtime", reason="the tracking extra")
    ns = run(snippets()["deep-sort-realtime"], folder, monkeypatch)
    confirmed = [t for t in ns["tracks"] if t.is_confirmed()]
    assert confirmed and all(t.get_feature().shape == (ns["embedder"].feature_dim,) for t in confirmed)


def test_boxmot_snippet(folder, monkeypatch):
    pytest.importorskip("boxmot", reason="boxmot is not installed (pip install --no-deps boxmot rich lapx)")
    from boxmot.reid.backends.onnx_backend import ONNXBackend
    from boxmot.utils.checks import RequirementsChecker

    def refuse(self, *args, **kwargs):
        raise AssertionError(f"boxmot tried to install packages: {args}")
    monkeypatch.setattr(RequirementsChecker, "_install_packages", refuse)
    monkeypatch.setattr(ONNXBackend, "_ensure_onnxruntime_installed", lambda self: None)
    ns = run(snippets()["boxmot"], folder, monkeypatch)
    assert len(ns["tracks"]) >= 1


def test_onnx_runtime_snippet_matches_the_embedder(folder, monkeypatch):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("cv2", reason="the snippet decodes with OpenCV")
    ns = run(snippets()["Plain ONNX Runtime"], folder, monkeypatch)
    features = ns["features"]
    assert features.shape == (1, 512) and abs(float(np.linalg.norm(features)) - 1) < 1e-5
    # the same box through TrackerEmbedder: only the resize differs (OpenCV bicubic vs PIL bicubic)
    ours = TrackerEmbedder(folder / "dmireid_reid.onnx")(ns["frame"], [[100, 40, 45, 100]])
    assert float((features @ ours.T)[0, 0]) > 0.99
