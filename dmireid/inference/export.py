"""ONNX export of a checkpoint's encoder (needs the ``onnx`` extra: ``pip install dmireid[onnx]``).

    from dmireid.embedding import FeatureExtractor

    from dmireid.inference import check_onnx, export_onnx
    export_onnx("runs/demo/last.pt", "model.onnx")       # input "images" N×3×H×W, output "features" N×d
    check_onnx("model.onnx", FeatureExtractor("runs/demo/last.pt"))   # max |onnxruntime - torch|

The graph input is the preprocessed float32 batch that :class:`FeatureExtractor` takes as a
tensor (bicubic resize to H×W, ``/255``, ImageNet mean/std); the output is the same L2-normalised
features. The batch axis is dynamic, H and W are fixed (stored with the preprocessing constants
in the model's metadata). The model is exported in eval mode (BatchNorm running statistics, the
checkpoint's learnt GeM p).
"""

from __future__ import annotations

import copy
import json
import logging
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from ..data import IMAGENET_MEAN, IMAGENET_STD
from ..errors import DmireidError
from ..embedding.feature_extractor import FeatureExtractor

log = logging.getLogger(__name__)


class _Normalised(torch.nn.Module):
    """model(x) followed by an explicit L2 normalisation, exactly as FeatureExtractor computes it."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model(images).float(), dim=1)


def _require(module: str):
    try:
        return __import__(module)
    except ImportError:
        raise DmireidError(f"ONNX export needs the {module} package: pip install 'dmireid[onnx]'") from None


def export_onnx(checkpoint, path: str | Path, encoder: str | None = None, opset: int = 17,
                height: int | None = None, width: int | None = None, dynamo: bool = False) -> Path:
    """Write the checkpoint's encoder as ONNX to ``path``; returns the path.

    ``checkpoint``: what :class:`FeatureExtractor` accepts (a path, a loaded dict) or a
    FeatureExtractor. ``height``/``width``: input size (default: the checkpoint's data size).
    ``dynamo``: use torch's torch.export-based exporter instead of the TorchScript one (the
    default; it keeps the requested ``opset`` and a dynamic batch axis on every torch ≥ 2.1).
    The file is validated with ``onnx.checker``.
    """
    onnx = _require("onnx")
    extractor = checkpoint if isinstance(checkpoint, FeatureExtractor) else FeatureExtractor(
        checkpoint, device="cpu", encoder=encoder)
    height, width = int(height or extractor.height), int(width or extractor.width)
    path = Path(path)
    if not path.parent.is_dir():
        raise DmireidError(f"cannot write {path}: folder {path.parent} does not exist")
    module = _Normalised(copy_to_cpu(extractor.model)).eval()
    dummy = torch.zeros(2, 3, height, width)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
            if dynamo:
                batch = torch.export.Dim("batch", min=1)
                torch.onnx.export(module, (dummy,), str(path), input_names=["images"], output_names=["features"],
                                  dynamic_shapes={"images": {0: batch}}, opset_version=opset, dynamo=True,
                                  external_data=False)
            else:
                torch.onnx.export(module, (dummy,), str(path), input_names=["images"], output_names=["features"],
                                  dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}},
                                  opset_version=opset, do_constant_folding=True, dynamo=False)
    except OSError as exc:
        raise DmireidError(f"cannot write {path}: {exc.strerror or exc}") from None
    proto = onnx.load(str(path))
    meta = {"dmireid.height": height, "dmireid.width": width, "dmireid.feature_dim": extractor.feature_dim,
            "dmireid.encoder": extractor.encoder, "dmireid.source": extractor.source,
            "dmireid.preprocess": "RGB, bicubic resize to height x width, /255, (x - mean) / std",
            "dmireid.mean": list(IMAGENET_MEAN), "dmireid.std": list(IMAGENET_STD),
            "dmireid.channels": "RGB", "dmireid.layout": "NCHW", "dmireid.resize": "bicubic",
            "dmireid.output_normalised": True}
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value if isinstance(value, str) else json.dumps(value)
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        raise DmireidError(f"exported {path} fails onnx.checker ({str(exc).splitlines()[0][:200]})") from None
    onnx.save(proto, str(path))
    log.info("wrote %s (%s encoder, input N×3×%d×%d, output N×%d)", path, extractor.encoder, height, width,
             extractor.feature_dim)
    return path


BOXMOT_NOTE = ("boxmot ReID backend: the .onnx suffix picks ONNX Runtime; first input / first output; crops "
               "resized (OpenCV bilinear) to the graph's H x W, BGR -> RGB, /255, ImageNet mean/std, NCHW float32")


def export_for_boxmot(checkpoint, out: str | Path, encoder: str | None = None, opset: int = 17) -> Path:
    """What boxmot's ReID backend loads: an ``.onnx`` file (see :data:`BOXMOT_NOTE`; static H×W in
    the graph, which boxmot takes as its crop size, the preprocessing in the metadata), or with
    ``out`` a folder named ``*_openvino_model`` an OpenVINO IR there (needs the ``openvino`` package)."""
    out = Path(out)
    if out.name.endswith("_openvino_model"):
        try:
            import openvino
        except ImportError:
            raise DmireidError(f"{out}: an OpenVINO export needs the openvino package (pip install openvino); "
                               "boxmot also loads the .onnx file") from None
        out.mkdir(parents=True, exist_ok=True)
        onnx_path = export_onnx(checkpoint, out / (out.name[:-len("_openvino_model")] + ".onnx"), encoder, opset)
        openvino.save_model(openvino.convert_model(str(onnx_path)), str(onnx_path.with_suffix(".xml")))
        return out
    if out.suffix.lower() != ".onnx":
        raise DmireidError(f"--out {out}: boxmot picks its backend by the suffix; use a .onnx file "
                           "(or a folder named *_openvino_model)")
    path = export_onnx(checkpoint, out, encoder, opset)
    onnx = _require("onnx")
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = "dmireid.boxmot", BOXMOT_NOTE
    onnx.save(proto, str(path))
    return path


def onnx_opset(path: str | Path) -> int:
    """The default-domain opset of an ONNX file (the dynamo exporter may raise the one asked for)."""
    onnx = _require("onnx")
    return next((o.version for o in onnx.load(str(path), load_external_data=False).opset_import
                 if o.domain in ("", "ai.onnx")), -1)


def copy_to_cpu(model: torch.nn.Module) -> torch.nn.Module:
    """The model itself when already on the CPU, else a CPU copy (the extractor keeps its device)."""
    param = next(model.parameters(), None)
    if param is None or param.device.type == "cpu":
        return model
    return copy.deepcopy(model).cpu()


def check_onnx(path: str | Path, extractor: FeatureExtractor, batch_sizes=(1, 3), seed: int = 0) -> float:
    """Max |onnxruntime output - PyTorch output| over random batches of ``batch_sizes``.

    The reference is the extractor's model on the same preprocessed batch (without flip
    averaging, which the graph does not contain).
    """
    ort = _require("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    shape = session.get_inputs()[0].shape
    generator = torch.Generator().manual_seed(seed)
    worst = 0.0
    for n in batch_sizes:
        x = torch.randn(n, 3, int(shape[2]), int(shape[3]), generator=generator)
        got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
        with torch.no_grad():
            ref = F.normalize(extractor.model(x.to(extractor.device)).float(), dim=1).cpu()
        worst = max(worst, float((got - ref).abs().max()))
    return worst
