"""DeepShield: offline, explainable deepfake detection for faces."""

from .detector import Detector, ImageResult, VideoResult, load_detector
from .model import DeepfakeCNN

__version__ = "0.1.0"
__all__ = ["DeepfakeCNN", "Detector", "ImageResult", "VideoResult", "load_detector", "__version__"]
