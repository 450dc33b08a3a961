"""The training loop's machinery, kept out of ``train.py`` so the script reads as the recipe: mixed precision,
the weights' moving average and its batch-norm statistics, logits of a crop array, validation metrics and
calibration, the resumable state, and the curves written beside the checkpoint."""

from __future__ import annotations

import contextlib
import csv
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .calibration import Calibration
from .data import ValidSet
from .detector import Detector
from .media import atomic_path
from .metrics import ece, nll, paired_with, roc_auc, root_class_weights, sigmoid, summary
from .model import DeepfakeCNN, reestimate_batchnorm


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """Mixed precision on CUDA (bfloat16 where supported, else float16 with loss scaling); none elsewhere."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)


def ema_decay_at(step: int, decay: float) -> float:
    """The EMA's decay at optimizer step ``step`` (0-based), ramped up by TensorFlow's
    ExponentialMovingAverage ``num_updates`` rule, so the average is not dominated by the random
    initialisation for its first thousands of steps."""
    return min(decay, (1.0 + step) / (10.0 + step))


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, for weights and batch-norm statistics (the latter are
    re-estimated by ``recalibrate_bn`` before the EMA is used)."""
    for e, m in zip(ema.state_dict().values(), model.state_dict().values()):
        if e.dtype.is_floating_point:
            e.lerp_(m, 1.0 - decay)
        else:
            e.copy_(m)


def recalibrate_bn(model: DeepfakeCNN, detector: Detector, images: np.ndarray, batch_size: int, n_frozen: int) -> None:
    """Re-estimate an averaged model's batch-norm statistics on ``images`` (uint8 crops), sparing the first
    ``n_frozen`` (pretrained, frozen) blocks. Averaging weights shrinks the activations while the averaged
    running statistics keep the live model's scale; left alone, the EMA of a from-scratch B0 gave the same
    output for every validation image (val_auc 0.49-0.50 for 13 epochs while the live model's training loss
    fell). Leaves ``model`` in eval mode."""
    batches = (detector.preprocess(list(images[i : i + batch_size])) for i in range(0, len(images), batch_size))
    with autocast(detector.device):
        reestimate_batchnorm(model, batches, n_frozen)


@torch.inference_mode()
def predict_logits(model: DeepfakeCNN, detector: Detector, images: np.ndarray, batch_size: int) -> np.ndarray:
    """Args: crops (N, S, S, 3) uint8. Returns: their uncalibrated "fake" logits (N,) float64."""
    model.eval()
    out = []
    for i in range(0, len(images), batch_size):
        with autocast(detector.device):
            out.append(model(detector.preprocess(list(images[i : i + batch_size]))).float().cpu().numpy())
    return np.concatenate(out).astype(np.float64)


@dataclass
class Progress:
    """What --resume restores besides the tensors."""

    epoch: int = 0  # last completed epoch
    step: int = 0
    best_auc: float = -1.0
    best_epoch: int = 0
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


def save_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
               ema: nn.Module | None, cfg: Any, progress: Progress) -> None:
    """The resumable training state (tensors and plain Python values only; ``cfg``: the run's config
    dataclass), written atomically."""
    state = {
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
        "ema": ema.state_dict() if ema is not None else None, "config": asdict(cfg),
        "progress": asdict(progress), "torch_rng": torch.get_rng_state(),
    }
    with atomic_path(path) as partial:
        torch.save(state, partial)


def load_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
               ema: nn.Module | None, cfg: Any) -> Progress:
    """Restore ``save_state``'s file into the given objects. Raises: FileNotFoundError, or ValueError
    when the run's model settings differ from the saved ones."""
    if not path.is_file():
        raise FileNotFoundError(f"--resume: training state {path} not found (is --out the same as before?)")
    state = torch.load(path, map_location="cpu", weights_only=True)  # plain values only: no unpickling
    # States saved before a setting existed ran with its then default.
    before = {"schedule": "two-phase" if state["config"]["init"] == "imagenet" else "cosine", "root_balance": 0.0,
              "sbi": 0.0}
    for key in ("arch", "img_size", "use_fft", "init", "ema_decay", "schedule", "root_balance", "sbi"):
        saved = state["config"].get(key, before.get(key))
        if saved != getattr(cfg, key):
            raise ValueError(f"--resume: {key}={getattr(cfg, key)!r} but {path} was trained with {saved!r}")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scaler.load_state_dict(state["scaler"])
    if ema is not None:
        ema.load_state_dict(state["ema"])
    torch.set_rng_state(state["torch_rng"])
    return Progress(**state["progress"])


def write_curves(history: list[dict[str, Any]], out: Path) -> None:
    """The per-epoch history as ``out``.curves.csv and as ``out``.curves.png (losses, validation AUC / accuracy)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    with open(out.with_suffix(".curves.csv"), "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    epochs = [row["epoch"] for row in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for key in ("train_loss", "val_loss"):
        left.plot(epochs, [row[key] for row in history], marker="o", label=key)
    for key in ("val_auc", "val_acc"):
        right.plot(epochs, [row[key] for row in history], marker="o", label=key)
    for ax, title in ((left, "loss"), (right, "validation")):
        ax.set(xlabel="epoch", title=title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out.with_suffix(".curves.png"), dpi=100)
    plt.close(fig)


def epoch_metrics(labels: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    """The epoch line's validation numbers: loss, AUC and accuracy at P(fake) = 0.5, before calibration."""
    return {"val_loss": nll(labels, logits), "val_auc": roc_auc(labels, logits),
            "val_acc": float(np.mean((logits >= 0) == (labels == 1)))}


def epoch_line(row: dict[str, Any], epochs: int) -> str:
    return (f"Epoch {row['epoch']}/{epochs} [Ph{row['phase']}] train_loss={row['train_loss']:.4f} "
            f"val_loss={row['val_loss']:.4f} val_auc={row['val_auc']:.4f} val_acc={row['val_acc']:.4f} img/s={row['img_s']:.1f}")


def validation_metrics(valid: ValidSet, logits: np.ndarray) -> dict[str, Any]:
    """Calibrate on the validation set (temperature by root-balanced NLL, then the threshold on calibrated P(fake))
    and measure it. Returns: a JSON-able dict with "temperature", "threshold" and the metrics."""
    labels = valid.labels
    calibration = Calibration.fit(labels, logits, groups=valid.root_ids)
    temperature, threshold = calibration.temperature, calibration.threshold
    probs = calibration.prob(logits)
    per_root = {}
    for r, root in enumerate(valid.roots):
        mine, others = paired_with(valid.root_ids, labels, r)
        if len(np.unique(labels[mine])) == 2:
            per_root[root] = {"n": int(mine.sum()), "roc_auc": roc_auc(labels[mine], probs[mine]),
                              "ece": ece(labels[mine], probs[mine]), "paired_with": [valid.roots[o] for o in others]}
    weights = root_class_weights(valid.root_ids, labels)
    return {"temperature": temperature, "threshold": threshold, "nll_uncalibrated": nll(labels, logits),
            "nll_root_balanced_uncalibrated": nll(labels, logits, 1.0, weights),
            "nll_root_balanced": nll(labels, logits, temperature, weights),
            "nll": nll(labels, logits, temperature), **summary(labels, probs, threshold, sigmoid(logits)),
            "per_root": per_root}
