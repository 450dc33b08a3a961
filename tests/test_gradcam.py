import cv2
import numpy as np
import pytest
import torch

from deepshield.gradcam import capture_activation, class_maps, grad_cam, overlay, paste_map, target_layer
from deepshield.model import DeepfakeCNN


@pytest.fixture
def model() -> DeepfakeCNN:
    torch.manual_seed(1)
    return DeepfakeCNN("tiny", use_fft=True).eval()


@pytest.mark.parametrize("stage", ["last", "14x14"])
def test_matches_direct_autograd_on_the_feature_map(model: DeepfakeCNN, stage: str) -> None:
    x = torch.randn(3, 3, 64, 64)
    logits, signed = grad_cam(model, x, target_layer(model, stage))

    # Direct computation: run the stages by hand and differentiate the logits w.r.t. that stage's output.
    split = len(model.features) - 1 if stage == "last" else 5
    activation = model.features[: split + 1](x).detach().requires_grad_(True)
    direct_logits = model.forward_head(model.features[split + 1 :](activation), x)
    (grads,) = torch.autograd.grad(direct_logits.sum(), activation)
    expected = (grads.mean(dim=(2, 3), keepdim=True) * activation).sum(1)
    torch.testing.assert_close(logits, direct_logits.detach())
    torch.testing.assert_close(signed, expected.detach())

    fake = torch.tensor([True, False, True])
    cams = class_maps(signed, fake)
    manual = torch.stack([torch.relu(expected[i] * (1 if fake[i] else -1)) for i in range(3)]).detach()
    manual = manual / manual.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)
    torch.testing.assert_close(cams, manual)
    assert cams.min() >= 0 and cams.max() <= 1


def test_hook_is_removed_even_on_error(model: DeepfakeCNN) -> None:
    layer = target_layer(model)
    with pytest.raises(RuntimeError, match="boom"):
        with capture_activation(layer):
            assert len(layer._forward_hooks) == 1
            raise RuntimeError("boom")
    assert len(layer._forward_hooks) == 0
    grad_cam(model, torch.randn(1, 3, 64, 64), layer)
    assert len(layer._forward_hooks) == 0


def test_works_with_frozen_parameters(model: DeepfakeCNN) -> None:
    model.requires_grad_(False)
    _, signed = grad_cam(model, torch.randn(2, 3, 64, 64), target_layer(model))
    assert signed.abs().sum() > 0


def test_unknown_stage() -> None:
    with pytest.raises(ValueError, match="Grad-CAM stage"):
        target_layer(DeepfakeCNN("tiny"), "middle")


def test_paste_maps_the_crop_back_and_clips_at_borders() -> None:
    cam = np.ones((2, 2), np.float32)
    full = paste_map(cam, (-5, 10, 20, 20), (40, 30))
    assert full.shape == (40, 30)
    assert full[10:30, 0:15].min() == 1.0 and full[:10].max() == 0 and full[30:].max() == 0 and full[:, 15:].max() == 0


def test_overlay_colours_only_where_hot() -> None:
    image = np.full((10, 10, 3), 100, np.uint8)
    heat = np.zeros((10, 10), np.float32)
    heat[:5] = 1.0
    out = overlay(image, heat)
    assert out.dtype == np.uint8 and out.shape == image.shape
    assert (out[5:] == 100).all() and (out[:5] != 100).any()


def test_overlay_of_a_box_equals_blending_the_whole_frame() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    heat = np.zeros((40, 60), np.float32)
    heat[10:20, 5:30] = rng.random((10, 25))
    colour = cv2.cvtColor(cv2.applyColorMap(np.uint8(heat * 255), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    weight = (0.45 * heat)[:, :, None]
    whole = np.uint8(np.rint(image.astype(np.float32) * (1 - weight) + colour.astype(np.float32) * weight))
    np.testing.assert_array_equal(overlay(image, heat), whole)
