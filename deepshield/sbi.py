"""Self-blended images (Shiohara & Yamasaki, "Detecting Deepfakes with Self-Blended Images", CVPR 2022):
a training fake made from a real face crop by blending a slightly altered copy of itself back in through a
soft face-shaped mask. It carries the two traces every face swap and composite leaves, a blending boundary
and a colour / sharpness mismatch inside it, and no generator's fingerprint, so what the detector learns
from it is not tied to one fake source.

The crops are the model's square face crops (``CropRecipe``: the face box is the crop, scale 1), so the mask
is an ellipse around the crop's centre, randomly sized, shifted and deformed, then blurred; the blend ratio
is random too. Only the copy is altered, so a self-blend equals its source wherever the mask is zero.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .augment import colour_jitter, down_up

BLEND_RATIOS = (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)  # the paper's choices: full blends half the time
MASK_POINTS = 48  # vertices of the deformed ellipse
MASK_FLOOR = 1 / 512


def face_mask(size: int, rng: np.random.Generator) -> np.ndarray:
    """A soft face-region mask for a ``size`` x ``size`` face crop: an ellipse covering the inner face
    (brows to chin), its radius deformed by a few random low-frequency waves, blurred.

    Returns: (size, size) float32 in [0, 1], 1 at its core, 0 far outside.
    """
    centre = size * np.array([0.5 + rng.uniform(-0.04, 0.04), 0.55 + rng.uniform(-0.04, 0.04)])
    axes = size * np.array([rng.uniform(0.28, 0.40), rng.uniform(0.34, 0.46)])
    angles = np.linspace(0.0, 2 * np.pi, MASK_POINTS, endpoint=False)
    radius = np.ones_like(angles)
    for wave in range(2, 6):  # low-frequency dents and bulges, as a deformed landmark hull has
        radius += rng.uniform(-0.06, 0.06) * np.cos(wave * angles + rng.uniform(0, 2 * np.pi))
    points = centre + np.stack([np.cos(angles), np.sin(angles)], axis=1) * axes * radius[:, None]
    mask = np.zeros((size, size), np.float32)
    cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 1.0)
    sigma = size * rng.uniform(0.02, 0.07)
    mask = cv2.GaussianBlur(mask, (0, 0), sigmaX=sigma)
    mask /= max(float(mask.max()), 1e-6)
    mask[mask < MASK_FLOOR] = 0.0  # the blur's far tail would touch every pixel by less than half a grey level
    return mask


def alter(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The copy to blend in: a colour shift and a sharpness change (at least one of them), then a small
    scale and translation. Args/Returns: RGB uint8 (S, S, 3)."""
    size = image.shape[0]
    colour, sharpness = rng.random() < 0.7, rng.random() < 0.5
    if not (colour or sharpness):
        colour = True
    if colour:
        shifted = image.astype(np.float32) + rng.uniform(-20, 20, 3)  # a per-channel tint
        image = colour_jitter(np.clip(shifted, 0, 255).astype(np.uint8), rng, amount=0.1)
    if sharpness:
        image = down_up(image, rng) if rng.random() < 0.5 else sharpen(image, rng.uniform(0.3, 1.0))
    zoom = rng.uniform(0.95, 1.05)
    dx, dy = rng.uniform(-0.03, 0.03, 2) * size
    centre = (size - 1) / 2.0
    matrix = np.float32([[zoom, 0, centre * (1 - zoom) + dx], [0, zoom, centre * (1 - zoom) + dy]])
    return cv2.warpAffine(np.ascontiguousarray(image), matrix, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def sharpen(image: np.ndarray, amount: float) -> np.ndarray:
    """Unsharp masking: ``image + amount * (image - blurred)``."""
    blurred = cv2.GaussianBlur(image, (0, 0), sigmaX=1.0)
    return cv2.addWeighted(image, 1.0 + amount, blurred, -amount, 0)


def self_blend(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Blend an altered copy of ``image`` into it through a soft face mask at a random ratio.

    Args: a real face crop, RGB uint8 (S, S, 3).
    Returns: the self-blend (S, S, 3) uint8 and the blend weight of the copy at each pixel (S, S) float32
    (the mask times the ratio; where it is 0 the self-blend equals ``image``).
    """
    weight = face_mask(image.shape[0], rng) * float(rng.choice(BLEND_RATIOS))
    source = alter(image, rng).astype(np.float32)
    target = image.astype(np.float32)
    blended = target + weight[..., None] * (source - target)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8), weight


def example_grid(images: np.ndarray, seed: int = 0, columns: int = 6) -> np.ndarray:
    """A picture of self-blending for the model card: for each crop, the real, the mask and the self-blend,
    side by side, ``columns`` crops a row (pad the last with black).

    Args: real crops (N, S, S, 3) uint8. Returns: an RGB uint8 image.
    """
    rng = np.random.default_rng(seed)
    tiles = []
    for image in images:
        blended, weight = self_blend(image, rng)
        mask = np.repeat((weight * 255).astype(np.uint8)[..., None], 3, axis=2)
        tiles.append(np.concatenate([image, mask, blended], axis=1))
    while len(tiles) % columns:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.concatenate(tiles[i : i + columns], axis=1) for i in range(0, len(tiles), columns)]
    return np.concatenate(rows, axis=0)


def main(argv: list[str] | None = None) -> None:
    """``python -m deepshield.sbi IMAGE OUT.png [--n 12] [--size 160]``: self-blends of the face in IMAGE (the
    model card's picture is made from the public-domain examples/astronaut.jpg)."""
    import argparse

    from .crops import CropRecipe
    from .faces import FaceDetector
    from .media import load_image, write_image

    parser = argparse.ArgumentParser(description=main.__doc__.split(":")[0])
    parser.add_argument("image")
    parser.add_argument("out")
    parser.add_argument("--n", type=int, default=12, help="self-blends to draw (default 12)")
    parser.add_argument("--size", type=int, default=160, help="crop side, as the model sees it (default 160)")
    args = parser.parse_args(argv)
    crop = CropRecipe(FaceDetector(), size=args.size).main_crop(load_image(args.image))
    write_image(Path(args.out), example_grid(np.stack([crop] * args.n), columns=3), jpeg_quality=95)


if __name__ == "__main__":
    main()
