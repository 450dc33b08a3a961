"""Face detection (OpenCV Haar cascade by default, YuNet when its model file is configured) and the
square face crop that training and inference share."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

YUNET_ENV = "DEEPSHIELD_FACE_MODEL"
# Haar's level weight below which a box is dropped: on the five ../shared clips, floor and clothing false
# positives scored -0.5 to 1.4 while faces scored 1.6 to 9 (dataset faces: 1st percentile 1.1, median 7.8).
HAAR_MIN_SCORE = 1.0
SMALL_IMAGE_SIDE = 512  # Haar pads images up to this size (see FaceDetector._detect_haar_padded)
# Where a YuNet model dropped beside the weights is picked up without configuration.
YUNET_DEFAULT_PATH = Path(__file__).resolve().parent.parent / "weights" / "face_detection_yunet.onnx"


@dataclass(frozen=True)
class Face:
    """One detected face in full-image pixels.

    ``score``: YuNet's confidence in [0, 1]; for Haar, the cascade's level weight (higher is surer).
    """

    x: int
    y: int
    w: int
    h: int
    score: float

    @property
    def box(self) -> tuple[int, int, int, int]:
        return (self.x, self.y, self.w, self.h)


@dataclass(frozen=True)
class CropSpec:
    """Square crop centred on the face box, ``scale`` times the box's longer side.

    1.0 reproduces the tight DFDC face crops that most training data is: on 193 dfdc-faces valid crops,
    the (padded, see ``FaceDetector``) Haar box is a median 1.05x the crop's width, 0.98x at the 5th
    percentile. Loose portraits (140k) cropped this way frame the face the same way.
    """

    scale: float = 1.0


DEFAULT_CROP = CropSpec()


def crop_face(image: np.ndarray, face: Face, spec: CropSpec = DEFAULT_CROP) -> np.ndarray:
    """Cut the square crop of ``face`` from ``image`` (H, W, 3), padding by edge replication where
    it leaves the frame. Returns: (S, S, 3) with S = round(scale * max(w, h))."""
    x0, y0, side = crop_window(face, spec)
    height, width = image.shape[:2]
    top, left = max(0, -y0), max(0, -x0)
    bottom, right = max(0, y0 + side - height), max(0, x0 + side - width)
    inside = image[max(0, y0) : min(height, y0 + side), max(0, x0) : min(width, x0 + side)]
    if top or left or bottom or right:
        inside = cv2.copyMakeBorder(inside, top, bottom, left, right, cv2.BORDER_REPLICATE)
    return np.ascontiguousarray(inside)


def crop_window(face: Face, spec: CropSpec = DEFAULT_CROP) -> tuple[int, int, int]:
    """The crop's top-left corner and side in image pixels (may extend past the image)."""
    side = max(1, int(round(spec.scale * max(face.w, face.h))))
    cx, cy = face.x + face.w / 2.0, face.y + face.h / 2.0
    return int(round(cx - side / 2.0)), int(round(cy - side / 2.0)), side


def keep_main_faces(faces: list[Face], ratio: float = 0.5) -> list[Face]:
    """Drop faces whose longer side is under ``ratio`` of the largest one (background faces in video)."""
    if not faces:
        return []
    largest = max(max(f.w, f.h) for f in faces)
    return [f for f in faces if max(f.w, f.h) >= ratio * largest]


class FaceDetector:
    """All faces in an RGB image, largest first.

    Frames are downscaled so their longer side is at most ``max_side`` before detection (boxes are mapped
    back to full resolution). Haar runs at 720 px and ignores faces under ``min_face_frac`` of the shorter
    side (1/10: 108 px in a 1080p frame): on 60 frames of the five ../shared clips that found a face in 59
    (960 px with a 1/12 floor: 56) in 2/3 of the time. YuNet runs at 640 px (it still finds a 1080p face
    at 480) with no size floor, so it also finds small faces.
    """

    def __init__(self, yunet_model: str | os.PathLike | None = None, max_side: int | None = None,
                 min_face_frac: float = 1 / 10) -> None:
        self._lock = threading.Lock()  # OpenCV detectors keep per-call state
        self.min_face_frac = min_face_frac  # Haar only: smallest face, as a fraction of the shorter side
        if yunet_model is not None:
            path = Path(yunet_model)
            if not path.is_file():
                raise FileNotFoundError(f"YuNet face model {path} not found")
            self.name = "yunet"
            self.source = str(path)
            self.max_side = max_side or 640
            self._yunet = cv2.FaceDetectorYN.create(str(path), "", (320, 320), 0.6, 0.3, 5000)
        else:
            self.name = "haar"
            self.source = "haarcascade_frontalface_default.xml"
            self.max_side = max_side or 720
            self._haar = cv2.CascadeClassifier(os.path.join(cv2.data.haarcascades, self.source))
            if self._haar.empty():
                raise RuntimeError(f"OpenCV could not load {self.source} from {cv2.data.haarcascades}")

    def detect(self, image: np.ndarray) -> list[Face]:
        """Args: image RGB uint8 (H, W, 3). Returns: faces in full-image pixels, largest first."""
        height, width = image.shape[:2]
        factor = min(1.0, self.max_side / max(height, width))
        size = (max(1, round(width * factor)), max(1, round(height * factor)))  # >= 1 px even for a 20000x10 image
        small = image if factor == 1.0 else cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        with self._lock:
            raw = self._detect_yunet(small) if self.name == "yunet" else self._detect_haar_padded(small)
        faces = [_clip(_scale(face, 1.0 / factor), width, height) for face in raw]
        return sorted((f for f in faces if f.w > 1 and f.h > 1), key=lambda f: f.w * f.h, reverse=True)

    def _detect_haar_padded(self, image: np.ndarray) -> list[Face]:
        """Haar needs margin around a face: on tight face crops (a face filling the image) it finds one in
        20% of dfdc-faces crops, often a wrong part-face; with a 25% replicated border, in 91%, whole
        faces (on 140k portraits: 96% either way). Small images (face crops, thumbnails) get that border;
        frames do not need it and it would more than double their cost."""
        gray = cv2.equalizeHist(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))
        border = int(round(0.25 * max(gray.shape))) if max(gray.shape) <= SMALL_IMAGE_SIDE else 0
        if border:
            gray = cv2.copyMakeBorder(gray, border, border, border, border, cv2.BORDER_REPLICATE)
        return [Face(f.x - border, f.y - border, f.w, f.h, f.score) for f in self._detect_haar(gray, frame=not border)]

    def _detect_haar(self, gray: np.ndarray, frame: bool) -> list[Face]:
        """Args: an equalised grayscale image; ``frame``: a large image (a photo or video frame), not a crop.
        Returns: faces in its pixels."""
        # Haar's cost is in its smallest scales: a 27 px floor costs 3x a 54 px one on a 960x540 frame.
        min_side = max(24, int(min(gray.shape) * self.min_face_frac))
        # Frames step the scale by 1.2 with 3 neighbours: on 40 frames of the five ../shared clips that took
        # 0.62x the time of 1.1 / 5 and found a face in 37 frames (36), the largest boxes within 5% of
        # 1.1's. Small images (the training data's kind: face crops, portraits) keep 1.1 / 5, so their crops
        # stay those the model was trained on.
        scale, neighbours = (1.2, 3) if frame else (1.1, 5)
        boxes, _, weights = self._haar.detectMultiScale3(
            gray, scaleFactor=scale, minNeighbors=neighbours, minSize=(min_side, min_side), outputRejectLevels=True
        )
        return [Face(int(x), int(y), int(w), int(h), float(s)) for (x, y, w, h), s in zip(boxes, np.ravel(weights))
                if s >= HAAR_MIN_SCORE]

    def _detect_yunet(self, image: np.ndarray) -> list[Face]:
        self._yunet.setInputSize((image.shape[1], image.shape[0]))
        _, rows = self._yunet.detect(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        if rows is None:
            return []
        # YuNet's box runs forehead to chin: its longer side is ~1.12x Haar's square box (median over 286
        # dataset faces found by both), so shrink it about the same centre to keep one crop geometry.
        return [_shrink(Face(*(int(round(v)) for v in row[:4]), score=float(row[-1])), 1 / 1.12) for row in rows]


def _scale(face: Face, factor: float) -> Face:
    return Face(
        int(round(face.x * factor)), int(round(face.y * factor)), int(round(face.w * factor)),
        int(round(face.h * factor)), face.score,
    )


def _shrink(face: Face, factor: float) -> Face:
    w, h = face.w * factor, face.h * factor
    cx, cy = face.x + face.w / 2.0, face.y + face.h / 2.0
    return Face(int(round(cx - w / 2)), int(round(cy - h / 2)), int(round(w)), int(round(h)), face.score)


def _clip(face: Face, width: int, height: int) -> Face:
    x0, y0 = max(0, face.x), max(0, face.y)
    x1, y1 = min(width, face.x + face.w), min(height, face.y + face.h)
    return Face(x0, y0, max(0, x1 - x0), max(0, y1 - y0), face.score)


def default_face_model() -> Path | None:
    """The configured YuNet model: ``$DEEPSHIELD_FACE_MODEL``, else ``weights/face_detection_yunet.onnx``."""
    configured = os.environ.get(YUNET_ENV)
    if configured:
        return Path(configured)
    return YUNET_DEFAULT_PATH if YUNET_DEFAULT_PATH.is_file() else None
