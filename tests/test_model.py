import pytest
import torch
import torchvision

from deepshield.model import ARCHS, STAGE_14X14, DeepfakeCNN, build_backbone


@pytest.mark.parametrize("use_fft", [False, True])
def test_tiny_forward_is_features_then_head(use_fft: bool) -> None:
    torch.manual_seed(0)
    model = DeepfakeCNN("tiny", use_fft=use_fft).eval()
    x = torch.randn(3, 3, 64, 64)
    feats = model.forward_features(x)
    assert feats.shape == (3, model.num_features, 2, 2)
    logits = model(x)
    assert logits.shape == (3,)
    torch.testing.assert_close(logits, model.forward_head(feats, x))


def test_fft_head_needs_the_input() -> None:
    model = DeepfakeCNN("tiny", use_fft=True).eval()
    feats = model.forward_features(torch.randn(1, 3, 64, 64))
    with pytest.raises(ValueError, match="use_fft"):
        model.forward_head(feats)


def test_fft_branch_changes_the_head_and_is_differentiable() -> None:
    model = DeepfakeCNN("tiny", use_fft=True).eval()
    assert model.head[0].in_features == model.num_features + 128
    x = torch.randn(2, 3, 64, 64, requires_grad=True)
    model.fft(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_default_head_is_dropout_then_one_logit() -> None:
    model = DeepfakeCNN("efficientnet_b0")
    assert model.num_features == 1280
    assert isinstance(model.head[0], torch.nn.Dropout) and model.head[0].p == 0.4
    assert (model.head[1].in_features, model.head[1].out_features) == (1280, 1)


def test_b0_backbone_matches_torchvision_keys_and_shapes() -> None:
    ours = build_backbone("efficientnet_b0").state_dict()
    reference = torchvision.models.efficientnet_b0(weights=None).state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in reference.items()}


def test_unknown_arch_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown arch"):
        DeepfakeCNN("resnet9000")
    assert set(ARCHS) >= {"efficientnet_lite0", "efficientnet_b0", "tiny"}


def test_lite0_has_b0s_stages_without_squeeze_excitation() -> None:
    model = DeepfakeCNN("efficientnet_lite0").eval()
    assert len(model.features) == 9 and model.num_features == 1280  # stem, 7 stages, head: as B0
    assert [len(stage) for stage in model.features[1:8]] == [1, 2, 2, 3, 3, 4, 1]
    modules = list(model.modules())
    assert not any(isinstance(m, (torch.nn.SiLU, torch.nn.Sigmoid)) for m in modules)  # ReLU6, no SE gates
    assert all(m.eps == 1e-3 for m in modules if isinstance(m, torch.nn.BatchNorm2d))
    x = torch.randn(2, 3, 160, 160)
    assert model.forward_features(x).shape == (2, 1280, 5, 5)
    assert model.features[: STAGE_14X14 + 1](x).shape[-2:] == (10, 10)
    assert model(x).shape == (2,)
    assert 3.3e6 < sum(p.numel() for p in model.parameters()) < 3.5e6  # Lite0's 4.65 M minus the 1000-way layer


def test_lite0_fft_variant_fuses_in_the_head() -> None:
    model = DeepfakeCNN("efficientnet_lite0", use_fft=True).eval()
    assert model.head[0].in_features == 1280 + 128 and model(torch.randn(1, 3, 96, 96)).shape == (1,)
