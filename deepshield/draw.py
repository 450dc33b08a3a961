"""Drawing results onto RGB frames: face boxes, the verdict banner, the P(Real) bar, the frame rate.
Shared by the app's Image and Webcam tabs and the realtime command."""

from __future__ import annotations

import time
from collections import deque

import cv2
import numpy as np

from .detector import ImageResult, shown_label
from .gradcam import overlay

# The one palette for Real / Fake / Uncertain: the app's card, donut and plots (hex) and every overlay (RGB).
REAL_HEX, FAKE_HEX, UNSURE_HEX = "#1a7f37", "#cf222e", "#9a6700"


def hex_rgb(colour: str) -> tuple[int, int, int]:
    """``"#rrggbb"`` -> (r, g, b)."""
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


REAL_RGB, FAKE_RGB, UNSURE_RGB = hex_rgb(REAL_HEX), hex_rgb(FAKE_HEX), hex_rgb(UNSURE_HEX)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def label_colour(result: ImageResult, threshold: float) -> tuple[str, tuple[int, int, int]]:
    """What to show for a result (its label from the weights, or Uncertain inside the band) and its colour
    (Fake when P(fake) reaches the ``threshold`` it was judged at)."""
    if result.uncertain:
        return shown_label(result.label, True), UNSURE_RGB
    return result.label, FAKE_RGB if result.prob_fake >= threshold else REAL_RGB


def draw_faces(image: np.ndarray, result: ImageResult, threshold: float) -> np.ndarray:
    """Numbered boxes on each face with its P(Real): red when its P(Fake) reaches ``threshold``."""
    out = image.copy()
    scale = max(1, round(max(image.shape[:2]) / 500))
    for number, face in enumerate(result.faces, start=1):
        x, y, w, h = face.box
        colour = FAKE_RGB if face.prob_fake >= threshold else REAL_RGB
        cv2.rectangle(out, (x, y), (x + w, y + h), colour, 2 * scale)
        cv2.putText(out, f"#{number} P(Real) {1 - face.prob_fake:.2f}", (x, max(12 * scale, y - 6)), _FONT,
                    0.5 * scale, colour, scale, cv2.LINE_AA)
    return out


def annotate(frame: np.ndarray, result: ImageResult | None, threshold: float = 0.5, fps: float | None = None,
             use_overlay: bool = False) -> np.ndarray:
    """The live view: the last ``result`` drawn on ``frame`` (RGB uint8): face boxes, a bottom banner with
    the verdict and confidence, a top bar filled to P(Real), the frame rate, optionally the heatmap."""
    if result is not None and use_overlay and result.heatmap is not None and result.heatmap.shape == frame.shape[:2]:
        frame = overlay(frame, result.heatmap)
    out = draw_faces(frame, result, threshold) if result is not None else frame.copy()
    height, width = out.shape[:2]
    scale = max(1, round(height / 480))
    bar = 10 * scale
    cv2.rectangle(out, (0, 0), (width, bar), (60, 60, 60), -1)
    if result is not None:
        text, colour = label_colour(result, threshold)
        cv2.rectangle(out, (0, 0), (int(round(width * result.prob_real)), bar), REAL_RGB, -1)
        banner = 34 * scale
        cv2.rectangle(out, (0, height - banner), (width, height), colour, -1)
        cv2.putText(out, f"{text}  {result.confidence:.0%}  P(Real) {result.prob_real:.2f}",
                    (8 * scale, height - 10 * scale), _FONT, 0.8 * scale, (255, 255, 255), 2 * scale, cv2.LINE_AA)
    else:
        cv2.putText(out, "analysing...", (8 * scale, height - 10 * scale), _FONT, 0.8 * scale, (255, 255, 255), 2 * scale, cv2.LINE_AA)
    if fps:
        cv2.putText(out, f"{fps:.1f} fps", (width - 110 * scale, bar + 22 * scale), _FONT, 0.6 * scale, (255, 255, 255), 2 * scale, cv2.LINE_AA)
    return out


class FpsMeter:
    """Frames per second over the last ``window`` frames."""

    def __init__(self, window: int = 30) -> None:
        self._times: deque[float] = deque(maxlen=window)

    def tick(self) -> float | None:
        self._times.append(time.perf_counter())
        if len(self._times) < 2:
            return None
        return (len(self._times) - 1) / max(1e-9, self._times[-1] - self._times[0])
