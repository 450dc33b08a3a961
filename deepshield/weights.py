"""Safetensors weights that carry their own configuration, and where to find them.

The file's metadata (arch, img_size, use_fft, mean/std, crop, threshold, temperature, labels, training
data and command, metrics) is the single source of those numbers: loading rebuilds the model from it.
Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from .faces import DEFAULT_CROP
from .media import atomic_path
from .model import ARCHS, DeepfakeCNN

FORMAT = "deepshield-weights-1"
WEIGHTS_NAME = "deepshield_lite0.safetensors"
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
WEIGHTS_ENV = "DEEPSHIELD_WEIGHTS"
HUB_REPO_ENV = "DEEPSHIELD_HUB_REPO"
HUB_DOWNLOAD_ENV = "DEEPSHIELD_HUB_DOWNLOAD"
DEFAULT_HUB_REPO = "deepshield/deepshield-lite0"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelMeta:
    """Everything needed to rebuild and use a model, stored in its safetensors metadata."""

    arch: str
    img_size: int
    use_fft: bool = False
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    crop_scale: float = DEFAULT_CROP.scale
    threshold: float = 0.5  # on the calibrated P(fake)
    temperature: float = 1.0  # P(fake) = sigmoid(logit / temperature)
    labels: tuple[str, str] = ("Real", "Fake")
    trained: bool = False
    init: str = ""  # where training started: "imagenet" or "scratch" (kept through continued training)
    training_data: str = ""
    training_command: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_metadata(self) -> dict[str, str]:
        """Safetensors metadata is str -> str: every field JSON-encoded."""
        return {"format": FORMAT, **{k: json.dumps(v) for k, v in asdict(self).items()}}

    @classmethod
    def from_metadata(cls, metadata: dict[str, str] | None, name: str) -> "ModelMeta":
        metadata = metadata or {}
        if metadata.get("format") != FORMAT:
            raise ValueError(f"{name}: not DeepShield weights (metadata format {metadata.get('format')!r}, expected {FORMAT!r})")
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name in metadata:
                value = json.loads(metadata[f.name])
                values[f.name] = tuple(value) if isinstance(value, list) else value
        for required in ("arch", "img_size"):
            if required not in values:
                raise ValueError(f"{name}: metadata lacks {required!r}")
        if values["arch"] not in ARCHS:
            raise ValueError(f"{name}: unknown arch {values['arch']!r}; known: {sorted(ARCHS)}")
        return cls(**values)


def save_weights(model: DeepfakeCNN, meta: ModelMeta, path: str | os.PathLike) -> Path:
    """Write ``model``'s weights and ``meta`` to ``path`` atomically (a temp file, then a rename), with the
    permissions any new file gets (safetensors' own ``save_file`` makes it owner-only, 0600)."""
    if (model.arch, model.use_fft) != (meta.arch, meta.use_fft):
        raise ValueError(f"meta says arch={meta.arch}, use_fft={meta.use_fft}; model is {model.arch}, {model.use_fft}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as partial:
        partial.write_bytes(save(tensors, metadata=meta.to_metadata()))
    return path


def read_meta(path: str | os.PathLike) -> ModelMeta:
    """Read only the metadata of a weights file."""
    with safe_open(str(path), framework="pt") as handle:
        return ModelMeta.from_metadata(handle.metadata(), str(path))


def load_weights(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[DeepfakeCNN, ModelMeta]:
    """Rebuild the model described by the file's metadata and load its tensors (strict).

    Returns: the model in eval mode on ``device``, and its metadata.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} not found")
    try:
        meta = read_meta(path)
        state = load_file(str(path), device="cpu")
    except (OSError, SafetensorError) as err:
        raise ValueError(f"{path}: unreadable safetensors file ({err})") from err
    model = DeepfakeCNN(meta.arch, use_fft=meta.use_fft)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:  # the tensors do not fit the architecture the metadata names
        raise ValueError(f"{path}: tensors do not match arch={meta.arch}, use_fft={meta.use_fft} ({err})") from err
    return model.to(device).eval(), meta


def find_weights(path: str | os.PathLike | None = None, hub_repo: str | None = None,
                 cache_dir: str | os.PathLike | None = None) -> Path:
    """Locate the weights: ``path``, then ``$DEEPSHIELD_WEIGHTS``, then ``weights/``, then the Hub cache.

    An explicit path or environment variable that does not exist is an error, not a fallback.
    The Hub is only read from the local cache unless ``$DEEPSHIELD_HUB_DOWNLOAD=1``.
    """
    for explicit, origin in ((path, "--weights"), (os.environ.get(WEIGHTS_ENV), f"${WEIGHTS_ENV}")):
        if explicit:
            if not Path(explicit).is_file():
                raise FileNotFoundError(f"weights file {explicit} (from {origin}) not found")
            return Path(explicit)
    local = WEIGHTS_DIR / WEIGHTS_NAME
    if local.is_file():
        return local
    repo = hub_repo or os.environ.get(HUB_REPO_ENV) or DEFAULT_HUB_REPO
    cached = _from_hub(repo, cache_dir)
    if cached is not None:
        return cached
    raise FileNotFoundError(
        f"no DeepShield weights found. Looked for: --weights, ${WEIGHTS_ENV}, {local}, and "
        f"{WEIGHTS_NAME} from Hub repo {repo} in the local Hugging Face cache. Train them with "
        f"`python train.py --data ...`, put a file at {local}, or set ${WEIGHTS_ENV}."
    )


def _from_hub(repo: str, cache_dir: str | os.PathLike | None) -> Path | None:
    # Imported here: huggingface_hub is only needed when the local lookups fail.
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    download = os.environ.get(HUB_DOWNLOAD_ENV) == "1"
    try:
        found = hf_hub_download(repo, WEIGHTS_NAME, cache_dir=cache_dir, local_files_only=not download)
    except LocalEntryNotFoundError:
        return None
    return Path(found)
