"""``dmireid export --for boxmot``: boxmot's own ReID backend loads the file and gives dmireid's embeddings.

Skipped where boxmot is not installed (it is heavy and pins other onnxruntime / opencv / pandas
versions: CI installs it without its dependencies, see docs/tracker.md). boxmot 25 installs its
pinned onnxruntime at run time when another version is present; the test turns that off (and fails
if boxmot tries to install anything), which changes nothing of how it reads the model.
"""

import hashlib
from pathlib import Path

import numpy as np
import pytest

from dmireid.cli import main
from dmireid.inference import TrackerEmbedder

from tracking_fixtures import checkpoint, clips  # noqa: F401  (fixtures)

boxmot = pytest.importorskip("boxmot", reason="boxmot is not installed (pip install --no-deps boxmot rich)")
pytest.importorskip("onnxruntime")


@pytest.fixture()
def no_installs(monkeypatch):
    from boxmot.reid.backends.onnx_backend import ONNXBackend
    from boxmot.utils.checks import RequirementsChecker

    def refuse(self, *args, **kwargs):
        raise AssertionError(f"boxmot tried to install packages: {args}")
    monkeypatch.setattr(RequirementsChecker, "_install_packages", refuse)
    monkeypatch.setattr(ONNXBackend, "_ensure_onnxruntime_installed", lambda self: None)


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("boxmot") / "dmireid_reid.onnx"
    assert main(["export", str(checkpoint), "--for", "boxmot", "--out", str(out)]) == 0
    return out


def test_boxmot_backend_gives_dmireid_embeddings(exported, checkpoint, clips, no_installs):  # noqa: F811
    from boxmot.reid.core.runtime import ReID

    runtime = ReID(weights=exported, device="cpu", half=False)
    backend = runtime.model
    assert type(backend).__name__ == "ONNXBackend" and backend.input_shape == (64, 32)  # the graph's H×W
    clip, _ = clips[1]
    bgr = np.ascontiguousarray(clip.frames[12][..., ::-1])
    # boxes exactly at the model's size: no resize on either side (boxmot: OpenCV bilinear, dmireid: bicubic)
    xyxy = np.array([[10, 20, 42, 84], [150, 60, 182, 124], [288, 96, 320, 160]], np.float32)
    theirs = backend.get_features(xyxy, bgr)
    ours = TrackerEmbedder(checkpoint, device="cpu")(bgr, xyxy, box_format="xyxy", channels="bgr")
    assert theirs.shape == ours.shape and np.abs(theirs - ours).max() < 1e-4
    # on real boxes of other sizes the two resizes differ a little
    rows = clip.gt[clip.gt[:, 0] == 13][:, 2:6]
    boxes = np.concatenate([rows[:, :2], rows[:, :2] + rows[:, 2:]], 1).astype(np.float32)
    cos = (backend.get_features(boxes, bgr) * TrackerEmbedder(exported)(bgr, boxes, box_format="xyxy")).sum(1)
    assert cos.min() > 0.95


def test_boxmot_encoder_and_tracker_with_the_exported_file(exported, checkpoint, clips, no_installs):  # noqa: F811
    import torch
    from boxmot import BotSort
    from boxmot.reid.factory import create_reid_encoder
    from boxmot.reid.specs import ReIDEncoderSpec
    from boxmot.structures import Boxes, Detections, Frame

    clip, _ = clips[1]
    rgb = clip.frames[12]
    rows = clip.gt[clip.gt[:, 0] == 13]
    xyxy = torch.tensor(np.concatenate([rows[:, 2:4], rows[:, 2:4] + rows[:, 4:6]], 1), dtype=torch.float32)
    detections = Detections(Boxes(xyxy), torch.ones(len(rows)), torch.zeros(len(rows), dtype=torch.int64), "f13")
    digest = hashlib.sha256(exported.read_bytes()).hexdigest()  # boxmot 25 wants the artifact's digest
    encoder = create_reid_encoder(ReIDEncoderSpec(backend="onnx", artifact=str(exported), artifact_sha256=digest))
    [theirs] = encoder.encode([Frame(torch.from_numpy(rgb).permute(2, 0, 1).contiguous(), "f13")], [detections])
    ours = TrackerEmbedder(exported)(rgb, xyxy.numpy(), box_format="xyxy", channels="rgb")
    assert encoder.embedding_dim == ours.shape[1] and (theirs.numpy() * ours).sum(1).min() > 0.95
    # or skip boxmot's crops altogether: dmireid's rows attached to its Detections
    detections.with_embeddings(torch.from_numpy(ours)).validate()
    tracker = BotSort(reid_weights=Path(exported), device="cpu", half=False, use_cmc=False)
    for t in range(1, 8):
        r = clip.gt[clip.gt[:, 0] == t]
        dets = np.concatenate([r[:, 2:4], r[:, 2:4] + r[:, 4:6], np.ones((len(r), 1)), np.zeros((len(r), 1))], 1)
        tracks = tracker.update(dets.astype(np.float32), np.ascontiguousarray(clip.frames[t - 1][..., ::-1]))
    assert len(tracks) >= 1 and tracks.shape[1] >= 7  # x0, y0, x1, y1, id, conf, class, ...
