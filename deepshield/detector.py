"""The public inference API: ``load_detector()`` -> ``Detector`` with ``predict_image``, ``predict_video``
and ``explain``. The app, the CLI and the train/evaluate scripts all go through it."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .calibration import DEFAULT_UNCERTAIN_BAND, Calibration, Verdict
from .crops import CropRecipe, Window, resize_crop
from .export import OnnxScorer, onnx_bytes, require_onnxruntime, resolve_backend
from .faces import CropSpec, Face, FaceDetector, default_face_model
from .gradcam import class_maps, grad_cam, overlay, paste_map, target_layer
from .media import DEFAULT_MAX_PIXELS, ImageInput, load_image
from .model import DeepfakeCNN
from .video import DEFAULT_FRAMES, aggregate, check_n_frames, probe_video, read_frames, sample_indices
from .weights import ModelMeta, find_weights, load_weights

DEVICE_ENV = "DEEPSHIELD_DEVICE"


def resolve_device(requested: str | None = None) -> torch.device:
    """``requested``, else ``$DEEPSHIELD_DEVICE``, else CUDA, then Apple MPS, then CPU."""
    name = requested or os.environ.get(DEVICE_ENV)
    if name:
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but CUDA is not available")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise ValueError(f"device {name!r} requested but Apple MPS is not available")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@dataclass
class FaceResult:
    box: tuple[int, int, int, int]  # x, y, w, h in full-image pixels
    score: float  # the face detector's confidence
    prob_fake: float


@dataclass
class ImageResult(Verdict):
    face_found: bool = False
    faces: list[FaceResult] = field(default_factory=list)
    heatmap: np.ndarray | None = None  # (H, W) in [0, 1], when explained
    overlay: np.ndarray | None = None  # RGB (H, W, 3), when explained

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly fields (the arrays are left out)."""
        out = asdict(self)
        out.pop("heatmap"), out.pop("overlay")
        return out


@dataclass
class FrameResult:
    index: int
    time_s: float | None  # None when the container gives no frame rate
    faces: int
    prob_fake: float | None  # None when the frame has no face (else its most fake face's)
    prob_real: float | None
    detections: list[FaceResult] = field(default_factory=list)  # each main face: box, detector score, P(fake)


@dataclass
class VideoResult(Verdict):
    face_found: bool = False
    frames_analysed: int = 0
    frames_with_face: int = 0
    fake_frames: int = 0
    real_frames: int = 0
    majority_label: str = ""
    fps: float = 0.0
    frame_count: int = 0
    frames: list[FrameResult] = field(default_factory=list)
    explained_frame: int | None = None  # index of the frame the heatmap is for
    heatmap: np.ndarray | None = None
    overlay: np.ndarray | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("heatmap"), out.pop("overlay")
        return out


ProgressFn = Callable[[float, str], None]
NO_FACE = "No face"  # a video's label when no sampled frame had a face
UNCERTAIN = "Uncertain"


def shown_label(label: str, uncertain: bool) -> str:
    """What to show a person: the label, or "Uncertain" inside the band around the threshold."""
    return UNCERTAIN if uncertain else label


class Detector:
    """A loaded model with its face detector and calibration. Thread-safe for inference."""

    def __init__(self, model: DeepfakeCNN | None, meta: ModelMeta, faces: FaceDetector, device: torch.device,
                 weights_path: Path | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
                 uncertain_band: float = DEFAULT_UNCERTAIN_BAND, cam_stage: str = "last",
                 scorer: OnnxScorer | None = None) -> None:
        """``scorer``: score with ONNX Runtime instead of ``model`` (Grad-CAM still uses ``model``, which is
        None for a detector loaded from an ONNX file alone: it scores but cannot explain)."""
        if model is None and scorer is None:
            raise ValueError("a Detector needs a model, an ONNX scorer, or both")
        self.model = model.to(device).eval() if model is not None else None
        if self.model is not None and device.type == "cpu":  # ~2x faster convolutions on CPU; inputs arrive channels-last
            self.model = self.model.to(memory_format=torch.channels_last)
        self.scorer = scorer
        self.meta = meta
        self.device = device
        self.weights_path = weights_path
        self.max_pixels = max_pixels
        self.calibration = Calibration.from_meta(meta, uncertain_band)
        self.recipe = CropRecipe(faces, CropSpec(meta.crop_scale), meta.img_size)
        self.cam_layer = target_layer(self.model, cam_stage) if self.model is not None else None
        # One model call at a time: Grad-CAM hooks the shared model, so a forward from another thread must
        # not run while they are in place. Decoding and face detection stay concurrent.
        self._model_lock = threading.Lock()
        self._mean = torch.tensor(meta.mean, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(meta.std, device=device).view(1, 3, 1, 1)

    @property
    def uncertain_band(self) -> float:
        """|P(fake) - threshold| below this is reported as uncertain (part of ``calibration``)."""
        return self.calibration.uncertain_band

    @property
    def backend(self) -> str:
        """What scores: "onnx" (ONNX Runtime) or "torch". Grad-CAM always runs in torch."""
        return "onnx" if self.scorer is not None else "torch"

    @property
    def faces(self) -> FaceDetector:
        """The face detector (part of ``recipe``)."""
        return self.recipe.faces

    def info(self) -> dict[str, Any]:
        """What is in use, for the app's sidebar and ``/health``."""
        return {
            "weights": str(self.weights_path) if self.weights_path else None,
            "trained": self.meta.trained,
            "arch": self.meta.arch,
            "init": self.meta.init or None,  # "imagenet" or "scratch"; None for files that predate the field
            "img_size": self.meta.img_size,
            "use_fft": self.meta.use_fft,
            "threshold": self.meta.threshold,
            "temperature": self.meta.temperature,
            "valid_roc_auc": self.meta.metrics.get("roc_auc"),  # from training's validation split, if recorded
            "face_detector": self.faces.name,
            "face_detector_source": self.faces.source,
            "device": str(self.device),
            "backend": self.backend,
            "explains": self.model is not None,
        }

    # --- building blocks -------------------------------------------------------------------------

    def preprocess(self, crops: list[np.ndarray]) -> torch.Tensor:
        """Args: RGB uint8 crops of any size. Returns: (B, 3, S, S) normalised, channels-last, on device."""
        resized = [resize_crop(c, self.recipe.size) for c in crops]
        batch = torch.from_numpy(np.stack(resized)).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
        return (batch - self._mean) / self._std

    def probabilities(self, logits: torch.Tensor) -> np.ndarray:
        """Temperature-calibrated P(fake) per logit (float64)."""
        return self.calibration.prob(logits.double().cpu().numpy())

    def threshold(self, threshold: float | None = None) -> float:
        """``threshold`` checked (strictly between 0 and 1), or the weights' own when None."""
        return self.calibration.check_threshold(threshold)

    def verdict(self, prob_fake: float, threshold: float | None = None) -> Verdict:
        """Label at ``threshold`` (default: the weights'), flagged uncertain inside the band around it."""
        return self.calibration.verdict(prob_fake, threshold)

    def score_crops(self, crops: list[np.ndarray], explain: bool = False,
                    threshold: float | None = None) -> tuple[np.ndarray, list[np.ndarray] | None]:
        """P(fake) per crop and, when ``explain``, each crop's Grad-CAM map for its own verdict."""
        batch = self.preprocess(crops)
        threshold = self.threshold(threshold)
        if explain and self.model is None:
            raise ValueError(f"Grad-CAM needs the PyTorch weights (.safetensors): {self.weights_path} is an ONNX "
                             "file, which scores but cannot explain")
        if not explain and self.scorer is not None:
            return self.calibration.prob(self.scorer(batch.cpu().numpy())), None  # ONNX Runtime is thread-safe
        if not explain:
            with self._model_lock, torch.inference_mode():
                return self.probabilities(self.model(batch)), None
        with self._model_lock:
            logits, signed = grad_cam(self.model, batch, self.cam_layer)
        probs = self.probabilities(logits)
        fake = torch.from_numpy(probs >= threshold).to(signed.device)
        return probs, list(class_maps(signed, fake).cpu().numpy())

    # --- public API ------------------------------------------------------------------------------

    def predict_image(self, image: ImageInput, explain: bool = False, threshold: float | None = None) -> ImageResult:
        """Classify every face in ``image`` (path, bytes, PIL image or RGB array); the verdict is the most
        fake face's. With ``explain``, also a Grad-CAM heatmap over the full image and its overlay.

        Raises: ValueError for unreadable or oversized images (see ``media.load_image``).
        """
        return self._predict_rgb(load_image(image, self.max_pixels), explain, threshold)

    def _predict_rgb(self, rgb: np.ndarray, explain: bool, threshold: float | None,
                     faces: list[Face] | None = None) -> ImageResult:
        faces, crops, windows = self.recipe.crops(rgb, faces=faces)
        probs, cams = self.score_crops(crops, explain, threshold)
        worst = int(np.argmax(probs))
        result = ImageResult(
            **asdict(self.verdict(float(probs[worst]), threshold)),
            face_found=bool(faces),
            faces=[FaceResult(f.box, f.score, float(p)) for f, p in zip(faces, probs)],
        )
        if cams is not None:
            result.heatmap = self._paste(cams, windows, rgb.shape[:2])
            result.overlay = overlay(rgb, result.heatmap)
        return result

    def explain(self, image: ImageInput, threshold: float | None = None) -> np.ndarray:
        """Grad-CAM heatmap (H, W) in [0, 1] over the full image, for each face's verdict class."""
        heatmap = self.predict_image(image, explain=True, threshold=threshold).heatmap
        assert heatmap is not None
        return heatmap

    def predict_video(self, path: str | os.PathLike, n_frames: int = DEFAULT_FRAMES, explain: bool = False,
                      threshold: float | None = None, progress: ProgressFn | None = None) -> VideoResult:
        """Sample ``n_frames`` (4..32) evenly spaced frames, score the main faces of each (all crops in
        one batch), and aggregate: per frame the most fake face, per video the mean over frames with a
        face. With ``explain``, Grad-CAM of the most fake frame.

        Raises: ValueError for an out-of-range ``n_frames`` or an unreadable / frameless video.
        """
        n_frames = check_n_frames(n_frames)
        self.threshold(threshold)
        info = probe_video(path, self.max_pixels)
        indices = sample_indices(info.frame_count, n_frames)
        owners: list[int] = []  # frame row of each crop
        crops: list[np.ndarray] = []
        frames: list[FrameResult] = []
        kept: dict[int, list[Face]] = {}  # each frame's faces, to explain the chosen frame with the same crops
        for row, (index, frame) in enumerate(read_frames(path, indices)):
            faces, frame_crops, _ = self.recipe.crops(frame, main_only=True)
            crops += frame_crops if faces else []
            owners += [row] * len(faces)
            frames.append(FrameResult(index, index / info.fps if info.fps else None, len(faces), None, None))
            kept[row] = faces
            if progress:
                progress(0.9 * len(frames) / len(indices), f"frame {len(frames)}/{len(indices)}")
        if not frames:
            raise ValueError(f"{path}: no frame could be decoded")
        probs = self._score_in_batches(crops)
        for row, frame_result in enumerate(frames):
            mine = [p for p, owner in zip(probs, owners) if owner == row]
            frame_result.detections = [FaceResult(f.box, f.score, float(p)) for f, p in zip(kept[row], mine)]
            if mine:
                frame_result.prob_fake = float(max(mine))
                frame_result.prob_real = 1.0 - frame_result.prob_fake
        result = self._video_result(frames, info, threshold)
        if explain and result.face_found:
            self._explain_frame(result, path, kept, threshold)
        if progress:
            progress(1.0, "done")
        return result

    # --- helpers ---------------------------------------------------------------------------------

    def _score_in_batches(self, crops: list[np.ndarray], batch_size: int = 16) -> np.ndarray:
        chunks = [self.score_crops(crops[i : i + batch_size])[0] for i in range(0, len(crops), batch_size)]
        return np.concatenate(chunks) if chunks else np.zeros(0)

    def _paste(self, cams: list[np.ndarray], windows: list[Window], shape: tuple[int, int]) -> np.ndarray:
        heatmap = np.zeros(shape, np.float32)
        for cam, window in zip(cams, windows):
            paste_map(cam, window, shape, out=heatmap)
        return heatmap

    def _video_result(self, frames: list[FrameResult], info: Any, threshold: float | None) -> VideoResult:
        threshold = self.threshold(threshold)
        score = aggregate([f.prob_fake for f in frames], threshold)
        real_label, fake_label = self.calibration.labels
        verdict = self.verdict(score.prob_fake, threshold)
        if not score.face_found:  # nothing was judged: no label, not a coin-flip "Fake"
            verdict = Verdict(NO_FACE, 0.0, 0.5, 0.5, uncertain=True)
        return VideoResult(
            **asdict(verdict),
            face_found=score.face_found,
            frames_analysed=len(frames),
            frames_with_face=score.frames_with_face,
            fake_frames=score.fake_frames,
            real_frames=score.real_frames,
            majority_label=(fake_label if score.majority_fake else real_label) if score.face_found else "",
            fps=info.fps,
            frame_count=info.frame_count,
            frames=frames,
        )

    def _explain_frame(self, result: VideoResult, path: str | os.PathLike, kept: dict[int, list[Face]],
                       threshold: float | None) -> None:
        """Grad-CAM of the most fake frame, read again (frames are not kept: 32 of them at 4K would be
        800 MB) and explained with the faces it was scored with."""
        row = max(range(len(result.frames)), key=lambda r: result.frames[r].prob_fake or -1.0)
        index = result.frames[row].index
        for _, frame in read_frames(path, [index]):
            explained = self._predict_rgb(frame, True, threshold, faces=kept[row])
            result.explained_frame = index
            result.heatmap, result.overlay = explained.heatmap, explained.overlay


def load_detector(weights: str | os.PathLike | None = None, *, device: str | None = None,
                  face_model: str | os.PathLike | None = None, hub_repo: str | None = None,
                  cache_dir: str | os.PathLike | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
                  cam_stage: str = "last", backend: str | None = None) -> Detector:
    """Find and load the weights (see ``find_weights``), pick the device, the scoring backend and the face detector.

    Args:
        weights: a .safetensors file, or an .onnx file from ``python -m deepshield export`` (ONNX Runtime
            scores; no Grad-CAM); default: ``$DEEPSHIELD_WEIGHTS``, ``weights/``, the Hub cache.
        device: "cpu", "cuda", "mps"...; default ``$DEEPSHIELD_DEVICE`` or the best available.
        face_model: a YuNet .onnx file; default ``$DEEPSHIELD_FACE_MODEL`` or
            ``weights/face_detection_yunet.onnx`` if present, else OpenCV's Haar cascade.
        backend: "torch" or "onnx" (ONNX Runtime scores, on CPU; torch still explains); default
            ``$DEEPSHIELD_BACKEND`` or "torch".
    Raises: FileNotFoundError, or ValueError for unreadable weights or the onnx backend without onnxruntime.
    """
    path = find_weights(weights, hub_repo, cache_dir)
    faces = FaceDetector(face_model or default_face_model())
    if path.suffix.lower() == ".onnx":
        scorer = OnnxScorer(path)
        return Detector(None, scorer.meta, faces, torch.device("cpu"), weights_path=path, max_pixels=max_pixels,
                        scorer=scorer)
    backend = resolve_backend(backend)
    if backend == "onnx":
        require_onnxruntime()  # before the export, which needs the onnx package as well
    torch_device = resolve_device("cpu" if backend == "onnx" else device)
    model, meta = load_weights(path, torch_device)
    scorer = OnnxScorer(onnx_bytes(model, meta)) if backend == "onnx" else None
    return Detector(model, meta, faces, torch_device, weights_path=path, max_pixels=max_pixels, cam_stage=cam_stage,
                    scorer=scorer)
