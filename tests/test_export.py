"""ONNX export and the ONNX Runtime backend: the file carries the weights' metadata, scores equal torch's within
1e-4, an exported file alone scores images and videos, and the flags fail clearly. CPU only, no network."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from deepshield import load_detector
from deepshield.detector import Detector
from deepshield.export import OnnxScorer, export_onnx, require_onnxruntime
from deepshield.weights import WEIGHTS_DIR, WEIGHTS_NAME, load_weights, read_meta

from .conftest import EXAMPLE, VIDEOS, needs_shared, noise_image, write_video

pytestmark = pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None,
                                reason="pip install onnx onnxruntime (requirements-dev.txt)")
SHIPPED = WEIGHTS_DIR / WEIGHTS_NAME
REPO = Path(__file__).resolve().parents[1]


def cli(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deepshield", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def tiny_onnx(tiny_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    model, meta = load_weights(tiny_weights)
    return export_onnx(model, meta, tmp_path_factory.mktemp("onnx") / "tiny.onnx")


def test_the_export_carries_the_weights_metadata(tiny_weights: Path, tiny_onnx: Path) -> None:
    assert OnnxScorer(tiny_onnx).meta == read_meta(tiny_weights)
    assert not list(tiny_onnx.parent.glob("*.partial*"))  # written atomically


@pytest.mark.parametrize("weights", ["tiny", "shipped"])
def test_onnx_runtime_scores_equal_torch(weights: str, tiny_weights: Path) -> None:
    path = tiny_weights if weights == "tiny" else SHIPPED
    torch_detector = load_detector(path, device="cpu")
    onnx_detector = load_detector(path, device="cpu", backend="onnx")
    assert (torch_detector.backend, onnx_detector.backend) == ("torch", "onnx")
    rng = np.random.default_rng(0)
    crops = [example_crop(torch_detector)] + [rng.integers(0, 256, (90, 90, 3), dtype=np.uint8) for _ in range(5)]
    expected = torch_detector.score_crops(crops)[0]
    got = onnx_detector.score_crops(crops)[0]
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    assert onnx_detector.info()["backend"] == "onnx" and onnx_detector.info()["explains"]
    explained = onnx_detector.predict_image(EXAMPLE, explain=True)  # Grad-CAM still runs, in torch
    assert explained.heatmap is not None


def example_crop(detector: Detector) -> np.ndarray:
    from deepshield.media import load_image

    return detector.recipe.main_crop(load_image(EXAMPLE))


def test_an_exported_file_alone_scores_images_and_videos_but_does_not_explain(tiny_weights: Path, tiny_onnx: Path,
                                                                              tmp_path: Path) -> None:
    torch_detector = load_detector(tiny_weights, device="cpu")
    onnx_detector = load_detector(tiny_onnx)
    assert onnx_detector.model is None and not onnx_detector.info()["explains"]
    image = noise_image(100, 140)
    assert onnx_detector.predict_image(image).prob_fake == pytest.approx(torch_detector.predict_image(image).prob_fake, abs=1e-4)
    video = write_video(tmp_path / "clip.avi", 12)
    a, b = torch_detector.predict_video(video, 4), onnx_detector.predict_video(video, 4)
    assert (a.label, a.frames_with_face) == (b.label, b.frames_with_face) and a.prob_fake == pytest.approx(b.prob_fake, abs=1e-4)
    with pytest.raises(ValueError, match="Grad-CAM needs the PyTorch weights"):
        onnx_detector.predict_image(image, explain=True)


def test_the_backend_comes_from_the_environment(tiny_weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPSHIELD_BACKEND", "onnx")
    assert load_detector(tiny_weights).backend == "onnx"
    monkeypatch.setenv("DEEPSHIELD_BACKEND", "tensorrt")
    with pytest.raises(ValueError, match="unknown backend 'tensorrt'; expected one of \\['torch', 'onnx'\\]"):
        load_detector(tiny_weights)


def test_without_onnxruntime_the_onnx_backend_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch, tiny_weights: Path) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    with pytest.raises(ValueError, match="pip install onnxruntime"):
        require_onnxruntime()
    with pytest.raises(ValueError, match="pip install onnxruntime"):
        load_detector(tiny_weights, backend="onnx")
    assert load_detector(tiny_weights).backend == "torch"  # the default path needs nothing more


def test_export_and_predict_from_the_command_line(tiny_weights: Path, tmp_path: Path) -> None:
    out = tmp_path / "model.onnx"
    done = cli("export", "--onnx", out, "--weights", tiny_weights)
    assert done.returncode == 0, done.stderr
    assert f"{out}: tiny @ 64 px" in done.stdout and out.stat().st_size > 0
    runs = [cli("predict", EXAMPLE, "--json", *flags) for flags in
            (["--weights", tiny_weights], ["--weights", tiny_weights, "--backend", "onnx"], ["--weights", out])]
    assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
    probs = [json.loads(r.stdout)["prob_fake"] for r in runs]
    assert probs[1] == pytest.approx(probs[0], abs=1e-4) and probs[2] == pytest.approx(probs[0], abs=1e-4)
    bad = cli("predict", EXAMPLE, "--weights", out, "--gradcam", tmp_path / "cams")
    assert bad.returncode == 2 and "cannot explain" in bad.stderr and "Traceback" not in bad.stderr
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    bad = cli("predict", EXAMPLE, "--weights", broken)
    assert bad.returncode == 2 and "not a loadable ONNX model" in bad.stderr and "Traceback" not in bad.stderr


@needs_shared(VIDEOS)
def test_the_shipped_export_round_trips_on_the_sample_clips(tmp_path: Path) -> None:
    """export -> load the file alone -> the same verdicts as the PyTorch weights on every clip."""
    model, meta = load_weights(SHIPPED)
    onnx_detector = load_detector(export_onnx(model, meta, tmp_path / "shipped.onnx"))
    torch_detector = load_detector(SHIPPED, device="cpu")
    for clip in sorted(VIDEOS.glob("*/*.mp4")):
        a, b = torch_detector.predict_video(clip, 8), onnx_detector.predict_video(clip, 8)
        assert a.label == b.label and a.prob_fake == pytest.approx(b.prob_fake, abs=1e-4), clip.name
