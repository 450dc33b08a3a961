"""Golden outputs of a fixed tiny model (committed beside this file): logits, Grad-CAM maps and an end to
end prediction. Regenerate only on purpose: ``DEEPSHIELD_ACCEPT_GOLDEN=1 pytest tests/test_golden.py``."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from deepshield import load_detector
from deepshield.gradcam import grad_cam, target_layer

from .conftest import EXAMPLE, make_tiny_weights

GOLDEN = Path(__file__).parent / "golden"
WEIGHTS = GOLDEN / "tiny_fft_seed0.safetensors"
EXPECTED = GOLDEN / "expected.safetensors"
ACCEPT = os.environ.get("DEEPSHIELD_ACCEPT_GOLDEN") == "1"


def _inputs() -> tuple[torch.Tensor, np.ndarray]:
    rng = np.random.default_rng(1234)
    batch = torch.from_numpy(rng.standard_normal((2, 3, 64, 64)).astype(np.float32))
    image = np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    return batch, image


def _outputs() -> dict[str, torch.Tensor]:
    detector = load_detector(WEIGHTS, device="cpu")
    batch, image = _inputs()
    logits, signed = grad_cam(detector.model, batch.contiguous(memory_format=torch.channels_last), target_layer(detector.model))
    result = detector.predict_image(image, explain=True)
    face = detector.predict_image(EXAMPLE, explain=True)  # the face path: Haar, crop, Grad-CAM pasted back
    assert face.face_found
    return {
        "logits": logits,
        "signed_cam": signed,
        "image_prob_fake": torch.tensor([result.prob_fake]),
        "image_heatmap": torch.from_numpy(result.heatmap),
        "face_box": torch.tensor([face.faces[0].box]),
        "face_prob_fake": torch.tensor([face.prob_fake]),
        "face_heatmap": torch.from_numpy(face.heatmap[::4, ::4].copy()),
    }


def test_golden_outputs() -> None:
    if ACCEPT:
        make_tiny_weights(WEIGHTS, seed=0, use_fft=True)
        save_file({k: v.contiguous() for k, v in _outputs().items()}, str(EXPECTED))
        pytest.skip("golden files regenerated; rerun without DEEPSHIELD_ACCEPT_GOLDEN")
    expected = load_file(str(EXPECTED))
    assert expected["image_heatmap"].max() > 0 and expected["face_heatmap"].max() > 0, "zero heatmaps would check nothing"
    actual = _outputs()
    assert set(actual) == set(expected)
    for name, value in expected.items():
        torch.testing.assert_close(actual[name], value, rtol=1e-4, atol=1e-5, msg=lambda m: f"{name}: {m}")
