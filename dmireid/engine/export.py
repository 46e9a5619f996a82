"""Re-export of :mod:`dmireid.inference.export` (its old place)."""

from ..inference.export import check_onnx, copy_to_cpu, export_onnx, onnx_opset

__all__ = ["export_onnx", "check_onnx", "onnx_opset", "copy_to_cpu"]
