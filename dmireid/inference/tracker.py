"""An embedder for trackers: a frame and its boxes in, one L2-normalised row per box out.

    embedder = TrackerEmbedder("runs/demo/last.pt", device="cpu")      # or an ONNX file from dmireid export
    features = embedder(frame, boxes, box_format="ltwh", channels="bgr")   # (N, d) float32, unit rows

``frame``: H×W×3 uint8 (BGR as OpenCV decodes it, or RGB with ``channels="rgb"``); ``boxes``:
N×4 ``left, top, width, height`` (``ltwh``, what deep-sort-realtime takes) or ``x0, y0, x1, y1``
(``xyxy``). Boxes are clipped at the frame; a box with nothing left inside the frame (entirely
outside, or of zero width or height) is a one-line :class:`DmireidError` naming it, so the rows
always align with the boxes given. The crops get the checkpoint's test preprocessing (bicubic
resize to the model's H×W, ImageNet mean/std) and run batched on ``device`` (a checkpoint) or
with ONNX Runtime (an ``.onnx`` file exported by dmireid, whose metadata carries the input size,
mean/std and channel order).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..data import build_test_transform
from ..errors import DmireidError
from ..embedding.feature_extractor import FeatureExtractor

BOX_FORMATS = ("ltwh", "xyxy")
CHANNELS = ("bgr", "rgb")


def _onnx_session(path: Path, device):
    """An onnxruntime session for a dmireid ONNX file and its (height, width, mean, std, dim)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise DmireidError("an ONNX embedder needs onnxruntime: pip install 'dmireid[tracking]'") from None
    providers = ["CPUExecutionProvider"]
    if str(device or "").startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    try:
        session = ort.InferenceSession(str(path), providers=providers)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types for a bad file
        raise DmireidError(f"{path}: ONNX Runtime cannot load it ({' '.join(str(exc).split())[:160]})") from None
    meta = session.get_modelmeta().custom_metadata_map
    if "dmireid.height" not in meta:
        raise DmireidError(f"{path}: not an ONNX file exported by dmireid (no dmireid.* metadata: input size, "
                           "mean/std); export it with dmireid export CHECKPOINT --onnx FILE")
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs[0].shape) != 4 or inputs[0].shape[1] != 3 or len(outputs[0].shape) != 2:
        raise DmireidError(f"{path}: expected an N×3×H×W input and an N×d output, got {inputs[0].shape} -> "
                           f"{outputs[0].shape}")
    if meta.get("dmireid.channels", "RGB") != "RGB":
        raise DmireidError(f"{path}: input channels {meta['dmireid.channels']}, expected RGB")
    height, width = int(meta["dmireid.height"]), int(meta["dmireid.width"])
    mean, std = json.loads(meta["dmireid.mean"]), json.loads(meta["dmireid.std"])
    return session, height, width, mean, std, int(meta["dmireid.feature_dim"])


class TrackerEmbedder:
    """``embedder(frame, boxes, box_format="ltwh", channels="bgr")`` -> (N, d) float32 unit rows.

    ``checkpoint_or_onnx``: a dmireid checkpoint (what :class:`FeatureExtractor` loads) or a
    ``.onnx`` file of ``dmireid export``. ``device``: cpu / cuda / cuda:N / None (auto) for a
    checkpoint; for ONNX, cuda uses ONNX Runtime's CUDA provider where installed. Attributes:
    ``feature_dim``, ``height``, ``width``, ``source``, ``kind`` (``"checkpoint"`` or ``"onnx"``).
    """

    def __init__(self, checkpoint_or_onnx, device: str | None = None, batch_size: int = 64,
                 encoder: str | None = None):
        if batch_size < 1:
            raise DmireidError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.source = str(checkpoint_or_onnx)
        self._extractor, self._session = None, None
        if isinstance(checkpoint_or_onnx, (str, Path)) and str(checkpoint_or_onnx).lower().endswith(".onnx"):
            path = Path(checkpoint_or_onnx)
            if not path.is_file():
                raise DmireidError(f"{path}: no such ONNX file")
            self._session, self.height, self.width, mean, std, self.feature_dim = _onnx_session(path, device)
            self.kind = "onnx"
            self.transform = build_test_transform(self.height, self.width)
            self.transform.transforms[-1].mean, self.transform.transforms[-1].std = mean, std
        else:
            self._extractor = FeatureExtractor(checkpoint_or_onnx, device=device, batch_size=batch_size,
                                               encoder=encoder)
            self.kind = "checkpoint"
            self.height, self.width = self._extractor.height, self._extractor.width
            self.feature_dim = self._extractor.feature_dim
            self.transform = self._extractor.transform

    def __repr__(self) -> str:
        return f"TrackerEmbedder({self.source!r}, {self.kind}, {self.height}x{self.width}, d={self.feature_dim})"

    def crops(self, frame, boxes, box_format: str = "ltwh", channels: str = "bgr") -> list[np.ndarray]:
        """The RGB crops (H_i×W_i×3 uint8) of ``boxes`` clipped at ``frame``; checks every input."""
        if box_format not in BOX_FORMATS:
            raise DmireidError(f"box_format must be one of {', '.join(BOX_FORMATS)}, got {box_format!r}")
        if channels not in CHANNELS:
            raise DmireidError(f"channels must be one of {', '.join(CHANNELS)}, got {channels!r}")
        if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            got = f"{frame.dtype} array of shape {frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
            raise DmireidError(f"frame must be an H×W×3 uint8 array ({channels.upper()}), got a {got}")
        boxes = np.asarray(boxes, dtype=np.float64)
        if boxes.size == 0:
            return []
        if boxes.ndim != 2 or boxes.shape[1] != 4 or not np.isfinite(boxes).all():
            raise DmireidError(f"boxes must be an N×4 array of finite {box_format} numbers, got shape {boxes.shape}")
        xyxy = boxes.copy()
        if box_format == "ltwh":
            xyxy[:, 2:] += xyxy[:, :2]
        H, W = frame.shape[:2]
        x0 = np.floor(xyxy[:, 0]).clip(0, W).astype(int)
        y0 = np.floor(xyxy[:, 1]).clip(0, H).astype(int)
        x1 = np.ceil(xyxy[:, 2]).clip(0, W).astype(int)
        y1 = np.ceil(xyxy[:, 3]).clip(0, H).astype(int)
        empty = np.flatnonzero((x1 <= x0) | (y1 <= y0))
        if len(empty):
            i = int(empty[0])
            raise DmireidError(f"box {i} ({box_format} {boxes[i].tolist()}) has nothing inside the {W}×{H} frame "
                               f"(outside it, or zero width or height); drop such boxes before embedding "
                               f"({len(empty)} of {len(boxes)})")
        rgb = frame[..., ::-1] if channels == "bgr" else frame
        return [np.ascontiguousarray(rgb[a:b, c:d]) for a, b, c, d in zip(y0, y1, x0, x1)]

    def embed_crops(self, crops: list[np.ndarray]) -> np.ndarray:
        """RGB uint8 crops -> (N, d) float32 unit rows (the model's test preprocessing, batched)."""
        if not crops:
            return np.zeros((0, self.feature_dim), np.float32)
        if self._extractor is not None:
            return self._extractor.extract(crops)[0].numpy().astype(np.float32, copy=False)
        parts = []
        name = self._session.get_inputs()[0].name
        for start in range(0, len(crops), self.batch_size):
            batch = torch.stack([self.transform(Image.fromarray(c)) for c in crops[start:start + self.batch_size]])
            parts.append(self._session.run(None, {name: batch.numpy()})[0])
        features = np.concatenate(parts).astype(np.float32, copy=False)
        return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)

    def __call__(self, frame, boxes, box_format: str = "ltwh", channels: str = "bgr") -> np.ndarray:
        """(N, d) float32 L2-normalised embeddings of the N boxes of ``frame`` ((0, d) for no box)."""
        return self.embed_crops(self.crops(frame, boxes, box_format, channels))
