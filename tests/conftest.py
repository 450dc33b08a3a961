"""Shared fixtures: a seeded tiny model (same code path as EfficientNet-B0), synthetic media, and the
location of the research data in ../shared (tests that need it skip when it is absent)."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from deepshield.detector import Detector, load_detector
from deepshield.faces import Face
from deepshield.model import DeepfakeCNN, reestimate_batchnorm
from deepshield.weights import ModelMeta, save_weights

# Tests never touch the network, even through huggingface_hub.
os.environ["HF_HUB_OFFLINE"] = "1"

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
VIDEOS = SHARED / "data" / "videos"
YUNET = SHARED / "models" / "face_detection_yunet.onnx"
EXAMPLE = REPO / "examples" / "astronaut.jpg"  # public domain, see examples/README.md


def needs_shared(path: Path) -> pytest.MarkDecorator:
    """Skip unless ``path`` from ../shared (research data, never in the repo) is present."""
    return pytest.mark.skipif(not path.exists(), reason=f"needs {path} (research data in ../shared, absent here)")


def make_tiny_model(seed: int = 0, use_fft: bool = False) -> DeepfakeCNN:
    """A seeded random tiny model whose outputs depend on the input.

    At init, eval-mode BatchNorm (running var 1) shrinks activations to ~1e-11 by the last stage, so every
    input would get the same logit: estimate the BatchNorm statistics from a few noise batches first.
    """
    torch.manual_seed(seed)
    model = DeepfakeCNN("tiny", use_fft=use_fft)
    return reestimate_batchnorm(model, (torch.rand(8, 3, 64, 64) * 4 - 2 for _ in range(4)))


def make_tiny_weights(path: Path, seed: int = 0, use_fft: bool = False, **meta: object) -> Path:
    model = make_tiny_model(seed, use_fft)
    return save_weights(model, ModelMeta(arch="tiny", img_size=64, use_fft=use_fft, **meta), path)


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_weights(tmp_path_factory.mktemp("weights") / "tiny.safetensors")


@pytest.fixture
def detector(tiny_weights: Path) -> Detector:
    return load_detector(tiny_weights, device="cpu", face_model=None)


def noise_image(height: int = 120, width: int = 160, seed: int = 0) -> np.ndarray:
    """A face-free RGB uint8 image."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def write_video(path: Path, n_frames: int, size: tuple[int, int] = (96, 64), fps: float = 10.0) -> Path:
    """An MJPG AVI whose frame i is a flat grey of level 4 * i (so a frame's index can be read back)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    assert writer.isOpened()
    for i in range(n_frames):
        writer.write(np.full((size[1], size[0], 3), 4 * i, np.uint8))
    writer.release()
    return path


class FixedFaces:
    """Stands in for the face detector where no real face exists: returns the given boxes."""

    name = "fixed"
    source = "test"

    def __init__(self, faces: list[Face]) -> None:
        self.faces = faces

    def detect(self, image: np.ndarray) -> list[Face]:
        return list(self.faces)


@pytest.fixture(scope="session")
def app_detector(tiny_weights: Path) -> Detector:
    return load_detector(tiny_weights, device="cpu")


@pytest.fixture(scope="session")
def live_server(app_detector: Detector, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The full app (REST + Gradio UI) served by uvicorn in a thread, as ``python app.py`` serves it."""
    import uvicorn

    import app as deepshield_app

    os.environ["GRADIO_TEMP_DIR"] = str(tmp_path_factory.mktemp("gradio"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(deepshield_app.create_app(app_detector), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the app server did not start"
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(timeout=10)
