"""TrackerEmbedder: frame + boxes -> unit rows, from a checkpoint and from its ONNX export; bad input;
the ONNX metadata; deep-sort-realtime taking the embeddings."""

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from dmireid.errors import DmireidError
from dmireid.embedding import FeatureExtractor
from dmireid.inference import TrackerEmbedder, export_onnx

from tracking_fixtures import checkpoint, clips  # noqa: F401  (fixtures)

MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def reference(model, rgb_crops, height=64, width=32):
    """Written here: PIL bicubic resize, /255, ImageNet mean/std, the model, L2 normalisation."""
    batch = []
    for crop in rgb_crops:
        x = np.asarray(Image.fromarray(crop).resize((width, height), Image.BICUBIC), np.float64) / 255
        batch.append(((x - MEAN) / STD).transpose(2, 0, 1))
    with torch.no_grad():
        return F.normalize(model(torch.tensor(np.stack(batch), dtype=torch.float32)), dim=1).numpy()


@pytest.fixture(scope="module")
def frame(clips):  # noqa: F811
    clip, _ = clips[1]
    return clip.frames[10], clip.gt[clip.gt[:, 0] == 11][:, 2:6]  # RGB frame, its ltwh boxes


def test_checkpoint_embeddings_match_an_independent_reference(checkpoint, frame):  # noqa: F811
    rgb, boxes = frame
    embedder = TrackerEmbedder(checkpoint, device="cpu")
    got = embedder(np.ascontiguousarray(rgb[..., ::-1]), boxes)  # BGR, ltwh: the defaults
    assert got.dtype == np.float32 and got.shape == (len(boxes), embedder.feature_dim)
    assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    crops = [rgb[int(t):int(t + h), int(l):int(l + w)] for l, t, w, h in boxes]
    model = FeatureExtractor(checkpoint, device="cpu").model
    assert np.abs(got - reference(model, crops)).max() < 1e-4
    # the same boxes as xyxy on the RGB frame give the same rows
    xyxy = np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], 1)
    assert np.abs(embedder(rgb, xyxy, box_format="xyxy", channels="rgb") - got).max() < 1e-6
    assert embedder(rgb, np.zeros((0, 4)), channels="rgb").shape == (0, embedder.feature_dim)


def test_boxes_are_clipped_at_the_frame(checkpoint, frame):  # noqa: F811
    rgb, _ = frame
    embedder = TrackerEmbedder(checkpoint, device="cpu")
    H, W = rgb.shape[:2]
    overhanging = np.array([[-15, -5, 40, 90], [W - 20, H - 60, 50, 80]], np.float64)
    inside = np.array([[0, 0, 25, 85], [W - 20, H - 60, 20, 60]], np.float64)
    assert np.abs(embedder(rgb, overhanging, channels="rgb") - embedder(rgb, inside, channels="rgb")).max() < 1e-6


def test_onnx_export_gives_the_same_embeddings_and_carries_its_preprocessing(checkpoint, frame, tmp_path):  # noqa: F811
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    rgb, boxes = frame
    path = export_onnx(checkpoint, tmp_path / "model.onnx")
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert (meta["dmireid.height"], meta["dmireid.width"], meta["dmireid.channels"]) == ("64", "32", "RGB")
    assert meta["dmireid.output_normalised"] == "true" and meta["dmireid.mean"] == "[0.485, 0.456, 0.406]"
    from_onnx = TrackerEmbedder(path)
    assert from_onnx.kind == "onnx" and from_onnx.feature_dim == 512
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    assert np.abs(from_onnx(bgr, boxes) - TrackerEmbedder(checkpoint, device="cpu")(bgr, boxes)).max() < 1e-4


def test_bad_input_is_one_line(checkpoint, frame, tmp_path):  # noqa: F811
    rgb, boxes = frame
    embedder = TrackerEmbedder(checkpoint, device="cpu")
    cases = [((rgb.astype(np.float32), boxes), "frame must be an H×W×3 uint8 array"),
             ((rgb[..., 0], boxes), "frame must be an H×W×3 uint8 array"),
             ((rgb, boxes[:, :3]), "boxes must be an N×4 array"),
             ((rgb, np.array([[400.0, 10, 20, 40]])), r"box 0 .* has nothing inside the 320×160 frame"),
             ((rgb, np.array([[10.0, 10, 0, 40]])), "zero width or height")]
    for (f, b), message in cases:
        with pytest.raises(DmireidError, match=message) as info:
            embedder(f, b)
        assert "\n" not in str(info.value)
    with pytest.raises(DmireidError, match="box_format must be one of ltwh, xyxy"):
        embedder(rgb, boxes, box_format="cxcywh")


def test_onnx_of_another_model_is_refused(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    other = tmp_path / "other.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        torch.onnx.export(torch.nn.Conv2d(3, 4, 3), (torch.zeros(1, 3, 8, 8),), str(other), dynamo=False)
    with pytest.raises(DmireidError, match="not an ONNX file exported by dmireid"):
        TrackerEmbedder(other)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(DmireidError, match="ONNX Runtime cannot load it"):
        TrackerEmbedder(broken)


def test_deep_sort_realtime_takes_the_embeddings(checkpoint, clips):  # noqa: F811
    deep_sort = pytest.importorskip("deep_sort_realtime.deepsort_tracker", reason="the tracking extra")
    clip, _ = clips[1]
    embedder = TrackerEmbedder(checkpoint, device="cpu")
    tracker = deep_sort.DeepSort(max_age=5, n_init=2, embedder=None)
    confirmed = set()
    for t in range(1, 11):
        rows = clip.gt[clip.gt[:, 0] == t]
        detections = [(r[2:6].tolist(), 1.0, "person") for r in rows]
        embeds = embedder(np.ascontiguousarray(clip.frames[t - 1][..., ::-1]), rows[:, 2:6])
        tracks = tracker.update_tracks(detections, embeds=embeds)
        confirmed |= {tr.track_id for tr in tracks if tr.is_confirmed()}
        for track in tracks:
            if track.time_since_update == 0:  # the feature a track holds is the row we gave its box
                assert track.get_feature().shape == (embedder.feature_dim,)
    assert len(confirmed) >= len(np.unique(clip.gt[clip.gt[:, 0] <= 10, 1])) - 1
