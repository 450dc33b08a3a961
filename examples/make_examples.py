"""Rebuild the example files from the public-domain source photo: ``python examples/make_examples.py``.

``astronaut.jpg``: Eileen Collins, NASA (public domain), as shipped in scikit-image's ``skimage/data``.
``astronaut_zoom.webm``: made here from that photo (a slow 3 s zoom), so it is public domain too.
"""

from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent


def zoom_clip(image: np.ndarray, path: Path, seconds: float = 3.0, fps: int = 15, size: int = 360) -> None:
    """A centred zoom from the whole image to 70% of it, as a VP8 WebM (plays in every browser)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"VP80"), fps, (size, size))
    height, width = image.shape[:2]
    for i in range(int(seconds * fps)):
        side = int(min(height, width) * (1.0 - 0.3 * i / (seconds * fps)))
        y0, x0 = (height - side) // 3, (width - side) // 2
        writer.write(cv2.resize(image[y0 : y0 + side, x0 : x0 + side], (size, size), interpolation=cv2.INTER_AREA))
    writer.release()


if __name__ == "__main__":
    photo = cv2.imread(str(HERE / "astronaut.jpg"))
    zoom_clip(photo, HERE / "astronaut_zoom.webm")
