"""The face-crop recipe shared by inference, training, evaluation and data preparation: which face detector,
which crop geometry around a face, and the side the crop is resized to. One object, so the crops a model is
trained on are the crops it is given."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .faces import DEFAULT_CROP, CropSpec, Face, FaceDetector, crop_face, crop_window, keep_main_faces

Window = tuple[int, int, int, int]  # x, y, width, height of a crop in image pixels (may pass the border)


def resize_crop(crop: np.ndarray, size: int) -> np.ndarray:
    """Resize a square RGB crop to ``size`` x ``size`` (area filter when shrinking)."""
    if crop.shape[:2] == (size, size):
        return crop
    interpolation = cv2.INTER_AREA if crop.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(crop, (size, size), interpolation=interpolation)


@dataclass(frozen=True)
class CropRecipe:
    """Face detector + crop geometry + output side."""

    faces: FaceDetector
    spec: CropSpec = DEFAULT_CROP
    size: int = 224

    def crops(self, image: np.ndarray, main_only: bool = False,
              faces: list[Face] | None = None) -> tuple[list[Face], list[np.ndarray], list[Window]]:
        """Faces (detected unless given; largest first), their crops (not resized) and crop windows.
        No face: the whole image (squashed to a square when resized), its full window, no faces."""
        if faces is None:
            faces = self.faces.detect(image)
        if main_only:
            faces = keep_main_faces(faces)
        if not faces:
            height, width = image.shape[:2]
            return [], [image], [(0, 0, width, height)]
        windows = [(x, y, side, side) for x, y, side in (crop_window(f, self.spec) for f in faces)]
        return faces, [crop_face(image, f, self.spec) for f in faces], windows

    def main_crop(self, image: np.ndarray, face_crop: bool = True) -> np.ndarray:
        """The largest face's crop (the whole image when none is found, or ``face_crop`` is off), resized
        to ``size``: what the model sees of a training image."""
        return resize_crop(self.crops(image)[1][0] if face_crop else image, self.size)

    def key(self) -> dict[str, object]:
        """Everything the crops depend on, for cache keys."""
        return {"img_size": self.size, "crop_scale": self.spec.scale,
                "face_detector": [self.faces.source, self.faces.max_side, self.faces.min_face_frac]}
