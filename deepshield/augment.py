"""Training augmentation: numpy/cv2 on uint8 RGB crops, identical for both classes, so no corruption can become
a shortcut to the label."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .media import LUMA


def augment(image: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """Args: an RGB uint8 crop (S, S, 3); ``strength`` scales each corruption's chance.
    Returns: a randomly flipped, shifted and corrupted copy of the same shape."""
    if rng.random() < 0.5:
        image = image[:, ::-1]
    image = jitter_crop(image, rng)
    if rng.random() < 0.8 * strength:
        image = colour_jitter(image, rng)
    if rng.random() < 0.3 * strength:
        image = down_up(image, rng)
    if rng.random() < 0.2 * strength:
        image = cv2.GaussianBlur(image, (0, 0), sigmaX=rng.uniform(0.3, 1.5))
    if rng.random() < 0.2 * strength:
        image = np.clip(image + rng.normal(0.0, rng.uniform(2.0, 8.0), image.shape), 0, 255).astype(np.uint8)
    if rng.random() < 0.5 * strength:
        image = jpeg(image, int(rng.integers(30, 96)))
    return np.ascontiguousarray(image)


def jitter_crop(image: np.ndarray, rng: np.random.Generator, scale: float = 0.1, shift: float = 0.05) -> np.ndarray:
    """Zoom by 1 +- ``scale`` and shift by up to ``shift`` of the side: the spread of face-detector boxes
    around the crop. Borders are replicated, as ``crop_face`` pads."""
    size = image.shape[0]
    zoom = rng.uniform(1.0 - scale, 1.0 + scale)  # source pixels per output pixel
    dx, dy = rng.uniform(-shift, shift, 2) * size
    centre = (size - 1) / 2.0
    matrix = np.float32([[zoom, 0, centre * (1 - zoom) + dx], [0, zoom, centre * (1 - zoom) + dy]])
    return cv2.warpAffine(np.ascontiguousarray(image), matrix, (size, size),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)


def colour_jitter(image: np.ndarray, rng: np.random.Generator, amount: float = 0.2) -> np.ndarray:
    """Brightness, contrast and saturation each scaled by 1 +- ``amount``."""
    pixels = image.astype(np.float32) * rng.uniform(1 - amount, 1 + amount)
    pixels = (pixels - pixels.mean()) * rng.uniform(1 - amount, 1 + amount) + pixels.mean()
    gray = pixels @ np.float32(LUMA)
    pixels = gray[..., None] + (pixels - gray[..., None]) * rng.uniform(1 - amount, 1 + amount)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def down_up(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Downscale by 0.4-0.9 and back: the softness of low-resolution sources."""
    size = image.shape[0]
    small = max(8, int(size * rng.uniform(0.4, 0.9)))
    return cv2.resize(cv2.resize(image, (small, small), interpolation=cv2.INTER_AREA), (size, size),
                      interpolation=cv2.INTER_LINEAR)


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """Re-encode as JPEG at ``quality`` (in BGR, so chroma subsampling hits the right channels)."""
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"JPEG encoding failed at quality {quality}")
    return cv2.cvtColor(cv2.imdecode(encoded, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


PERTURBATIONS = {"jpeg": "re-encode as JPEG at quality N (1-100)", "scale": "downscale by F (0-1) and back up",
                 "blur": "Gaussian blur of sigma S pixels"}


@dataclass(frozen=True)
class Perturbation:
    """A fixed corruption of a whole image, the kind a copy picks up on its way to a user (a messaging app's
    re-compression, a thumbnail blown back up, a soft re-upload): what ``evaluate.py --perturb`` re-scores under."""

    kind: str
    amount: float

    @classmethod
    def parse(cls, spec: str) -> Perturbation:
        """``jpeg:70``, ``scale:0.5``, ``blur:1.5``. Raises: ValueError naming the spec and what is accepted."""
        kind, _, value = spec.strip().partition(":")
        error = ValueError(f"perturbation {spec!r}: expected KIND:NUMBER, one of "
                           f"{'; '.join(f'{k}: {v}' for k, v in PERTURBATIONS.items())}")
        try:
            amount = float(value)
        except ValueError:
            raise error from None
        valid = {"jpeg": 1 <= amount <= 100 and amount == int(amount), "scale": 0 < amount < 1, "blur": amount > 0}
        if not valid.get(kind, False):
            raise error
        return cls(kind, amount)

    def __str__(self) -> str:
        return f"{self.kind}:{self.amount:g}"

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Args/Returns: RGB uint8 (H, W, 3), same shape."""
        if self.kind == "jpeg":
            return jpeg(image, int(self.amount))
        if self.kind == "blur":
            return cv2.GaussianBlur(image, (0, 0), sigmaX=self.amount)
        height, width = image.shape[:2]
        small = (max(1, round(width * self.amount)), max(1, round(height * self.amount)))
        return cv2.resize(cv2.resize(image, small, interpolation=cv2.INTER_AREA), (width, height),
                          interpolation=cv2.INTER_LINEAR)
