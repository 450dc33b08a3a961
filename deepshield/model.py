"""The DeepShield classifier: an EfficientNet backbone with an optional FFT frequency branch.

Shape follows timm's EfficientNet: ``forward_features`` gives the last feature map (Grad-CAM's target),
``forward_head`` pools it, fuses the frequency branch when enabled, and returns one logit meaning "fake".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor, nn
from torchvision.models.efficientnet import EfficientNet, MBConvConfig

# EfficientNet-B0's stages: (expand_ratio, kernel, stride, in_channels, out_channels, num_layers).
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
    """Width and depth multipliers of an EfficientNet variant, and its native input size."""

    width_mult: float
    depth_mult: float
    img_size: int


ARCHS: dict[str, ArchSpec] = {
    "efficientnet_b0": ArchSpec(width_mult=1.0, depth_mult=1.0, img_size=224),
    # Same code path, a fraction of the compute: every unit and app test uses it.
    "tiny": ArchSpec(width_mult=0.25, depth_mult=0.25, img_size=64),
}


def build_backbone(arch: str) -> EfficientNet:
    """Build torchvision's EfficientNet for ``arch`` with random weights.

    For ``efficientnet_b0`` the module and its state-dict keys are exactly torchvision's
    ``efficientnet_b0``, so its ImageNet weights load into it unchanged.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; known: {sorted(ARCHS)}")
    spec = ARCHS[arch]
    conf = partial(MBConvConfig, width_mult=spec.width_mult, depth_mult=spec.depth_mult)
    return EfficientNet([conf(*stage) for stage in _B0_STAGES], dropout=0.2)


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
        gray = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
        spectrum = torch.fft.fftshift(torch.fft.fft2(gray.float()), dim=(-2, -1))
        magnitude = torch.log1p(spectrum.abs()).unsqueeze(1).to(x.dtype)
        return self.proj(self.stem(magnitude).flatten(1))


class DeepfakeCNN(nn.Module):
    """EfficientNet features -> pooled vector (+ FFT vector) -> one "fake" logit."""

    def __init__(self, arch: str = "efficientnet_b0", use_fft: bool = False, dropout: float = 0.4) -> None:
        super().__init__()
        backbone = build_backbone(arch)
        self.arch = arch
        self.use_fft = use_fft
        self.features = backbone.features
        self.num_features: int = backbone.classifier[1].in_features
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
