"""Re-export of :class:`~dmireid.inference.FeatureExtractor` and its helpers (their old place)."""

from ..inference.extractor import FeatureExtractor
from ..inference.inputs import IMAGE_EXTENSIONS, collect_image_paths
from ..inference.loading import DEFAULT_SIZE, ENCODERS, infer_resnet_arch

__all__ = ["FeatureExtractor", "collect_image_paths", "infer_resnet_arch", "IMAGE_EXTENSIONS", "ENCODERS",
           "DEFAULT_SIZE"]
