"""The DeepShield classifier: an EfficientNet backbone with an optional FFT frequency branch.

Shape follows timm's EfficientNet: ``forward_features`` gives the last feature map (Grad-CAM's target),
``forward_head`` pools it, fuses the frequency branch when enabled, and returns one logit meaning "fake".
Backbones: EfficientNet-Lite0 (the shipped one, from its ImageNet weights), EfficientNet-B0 (torchvision's,
from scratch in earlier releases) and ``tiny`` (B0's code at a fraction of the size, for tests).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor, nn
from torchvision.models.efficientnet import EfficientNet, MBConvConfig
from torchvision.ops import Conv2dNormActivation, StochasticDepth

from .media import LUMA

# EfficientNet-B0's stages, shared by Lite0: (expand_ratio, kernel, stride, in_channels, out_channels, num_layers).
_B0_STAGES = (
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
)
FFT_DIM = 128
# Index of the 14x14 stage (at 224 px) in ``features``: a finer Grad-CAM target than the last stage.
STAGE_14X14 = 5


@dataclass(frozen=True)
class ArchSpec:
    """Width and depth multipliers of an EfficientNet variant, its native input size, and whether it is a
    Lite variant (no squeeze-excitation, ReLU6, TensorFlow "SAME" padding)."""

    width_mult: float
    depth_mult: float
    img_size: int
    lite: bool = False


ARCHS: dict[str, ArchSpec] = {
    "efficientnet_lite0": ArchSpec(width_mult=1.0, depth_mult=1.0, img_size=224, lite=True),
    "efficientnet_b0": ArchSpec(width_mult=1.0, depth_mult=1.0, img_size=224),
    # Same code path as B0, a fraction of the compute: every unit and app test uses it.
    "tiny": ArchSpec(width_mult=0.25, depth_mult=0.25, img_size=64),
}
DEFAULT_ARCH = "efficientnet_lite0"


def build_backbone(arch: str) -> EfficientNet:
    """Build torchvision's EfficientNet for a B0-family ``arch`` (``efficientnet_b0``, ``tiny``) with random
    weights. For ``efficientnet_b0`` the module and its state-dict keys are exactly torchvision's."""
    spec = _spec(arch)
    if spec.lite:
        raise ValueError(f"{arch} is not built by torchvision's EfficientNet; use build_features")
    conf = partial(MBConvConfig, width_mult=spec.width_mult, depth_mult=spec.depth_mult)
    return EfficientNet([conf(*stage) for stage in _B0_STAGES], dropout=0.2)


def build_features(arch: str) -> nn.Sequential:
    """The feature extractor of ``arch``, random weights: [stem, 7 stages, 1x1 head conv] for every arch."""
    spec = _spec(arch)
    if spec.lite and (spec.width_mult, spec.depth_mult) != (1.0, 1.0):
        raise ValueError(f"{arch}: only Lite0's widths and depths are built (width_mult = depth_mult = 1.0)")
    return build_lite_features() if spec.lite else build_backbone(arch).features


def _spec(arch: str) -> ArchSpec:
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; known: {sorted(ARCHS)}")
    return ARCHS[arch]


# ----------------------------------------------------------------------------------------------------
# EfficientNet-Lite0 from torchvision's building blocks.

# TensorFlow's batch-norm epsilon, which the ImageNet Lite0 statistics were computed with.
_LITE_NORM = partial(nn.BatchNorm2d, eps=1e-3)
LITE_STEM, LITE_HEAD = 32, 1280  # Lite variants never scale the stem and head


class SamePad2d(nn.Module):
    """TensorFlow's "SAME" padding for a strided convolution: the odd pixel goes to the bottom and right.
    The ImageNet Lite0 weights were trained with it; symmetric padding would shift every strided map by
    half a pixel."""

    def __init__(self, kernel: int, stride: int) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: Tensor) -> Tensor:
        pads: list[int] = []
        for size in (x.shape[-1], x.shape[-2]):  # F.pad wants (left, right, top, bottom)
            total = max((math.ceil(size / self.stride) - 1) * self.stride + self.kernel - size, 0)
            pads += [total // 2, total - total // 2]
        return nn.functional.pad(x, pads)


def lite_conv(c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1,
              activation: type[nn.Module] | None = nn.ReLU6) -> nn.Sequential:
    """Conv -> batch norm -> ReLU6 (or no activation), padded as TensorFlow's "SAME"."""
    block = Conv2dNormActivation(c_in, c_out, kernel, stride, padding=None if stride == 1 else 0, groups=groups,
                                 norm_layer=_LITE_NORM, activation_layer=activation)
    if stride > 1:
        block.insert(0, SamePad2d(kernel, stride))
    return block


class LiteMBConv(nn.Module):
    """EfficientNet-Lite's inverted residual: 1x1 expand -> depthwise -> 1x1 project, ReLU6, no
    squeeze-excitation; a residual with stochastic depth when the shape is kept (as torchvision's MBConv)."""

    def __init__(self, expand_ratio: int, kernel: int, stride: int, c_in: int, c_out: int, drop_prob: float) -> None:
        super().__init__()
        hidden = c_in * expand_ratio
        layers = [lite_conv(c_in, hidden, 1)] if expand_ratio != 1 else []
        layers += [lite_conv(hidden, hidden, kernel, stride, groups=hidden), lite_conv(hidden, c_out, 1, activation=None)]
        self.block = nn.Sequential(*layers)
        self.use_res_connect = stride == 1 and c_in == c_out
        self.stochastic_depth = StochasticDepth(drop_prob, "row")

    def forward(self, x: Tensor) -> Tensor:
        out = self.block(x)
        return x + self.stochastic_depth(out) if self.use_res_connect else out


def build_lite_features(drop_connect: float = 0.2) -> nn.Sequential:
    """EfficientNet-Lite0's features (random weights); the drop probability grows linearly with depth."""
    n_blocks = sum(stage[-1] for stage in _B0_STAGES)
    layers: list[nn.Module] = [lite_conv(3, LITE_STEM, 3, stride=2)]
    index = 0
    for expand_ratio, kernel, stride, c_in, c_out, n_layers in _B0_STAGES:
        stage = []
        for i in range(n_layers):
            stage.append(LiteMBConv(expand_ratio, kernel, stride if i == 0 else 1, c_in if i == 0 else c_out, c_out,
                                    drop_connect * index / n_blocks))
            index += 1
        layers.append(nn.Sequential(*stage))
    layers.append(lite_conv(_B0_STAGES[-1][4], LITE_HEAD, 1))
    return nn.Sequential(*layers)


class FrequencyBranch(nn.Module):
    """Log-magnitude spectrum of the grayscale crop -> small conv stem -> ``FFT_DIM`` vector."""

    def __init__(self, out_dim: int = FFT_DIM) -> None:
        super().__init__()

        def block(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            )

        self.stem = nn.Sequential(block(1, 16), block(16, 32), nn.AdaptiveAvgPool2d(8))
        self.proj = nn.Linear(32 * 8 * 8, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        """Args: x (B, 3, H, W) normalised crop. Returns: (B, out_dim)."""
        gray = sum(w * x[:, c] for c, w in enumerate(LUMA))
        spectrum = torch.fft.fftshift(torch.fft.fft2(gray.float()), dim=(-2, -1))
        magnitude = torch.log1p(spectrum.abs()).unsqueeze(1).to(x.dtype)
        return self.proj(self.stem(magnitude).flatten(1))


class DeepfakeCNN(nn.Module):
    """EfficientNet features -> pooled vector (+ FFT vector) -> one "fake" logit."""

    def __init__(self, arch: str = DEFAULT_ARCH, use_fft: bool = False, dropout: float = 0.4) -> None:
        super().__init__()
        self.arch = arch
        self.use_fft = use_fft
        self.features = build_features(arch)
        self.num_features: int = self.features[-1].out_channels
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fft = FrequencyBranch() if use_fft else None
        if use_fft:
            self.head = nn.Sequential(
                nn.Linear(self.num_features + FFT_DIM, 256),
                nn.ReLU(inplace=True),
                nn.Dropout(dropout),
                nn.Linear(256, 1),
            )
        else:
            self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.num_features, 1))

    def forward_features(self, x: Tensor) -> Tensor:
        """Args: x (B, 3, H, W) normalised crops. Returns: the last feature map (B, C, h, w)."""
        return self.features(x)

    def forward_head(self, feats: Tensor, x: Tensor | None = None) -> Tensor:
        """Args: feats (B, C, h, w); x the input crops, needed when ``use_fft``. Returns: logits (B,)."""
        pooled = self.pool(feats).flatten(1)
        if self.fft is not None:
            if x is None:
                raise ValueError("forward_head needs the input crops x when use_fft=True")
            pooled = torch.cat([pooled, self.fft(x)], dim=1)
        return self.head(pooled).squeeze(1)

    def forward(self, x: Tensor) -> Tensor:
        """Args: x (B, 3, H, W) normalised crops. Returns: "fake" logits (B,)."""
        return self.forward_head(self.forward_features(x), x)


@torch.no_grad()
def reestimate_batchnorm(model: DeepfakeCNN, batches: Iterable[Tensor], n_frozen: int = 0) -> DeepfakeCNN:
    """Re-measure the batch-norm running statistics as the cumulative average over ``batches`` (normalised
    crops (B, 3, H, W)), as ``torch.optim.swa_utils.update_bn`` does, leaving the first ``n_frozen``
    ``features`` blocks (frozen, pretrained) alone. Needed where the statistics do not belong to the weights:
    a freshly initialised model, or an average of weights. Returns: ``model``, in eval mode."""
    frozen = {id(m) for block in model.features[:n_frozen] for m in block.modules()}
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and id(m) not in frozen]
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the batches
    model.train()
    for block in model.features[:n_frozen]:
        block.eval()
    for batch in batches:
        model(batch)
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    return model.eval()
