"""Train the DeepShield classifier on face images laid out as ROOT/{train,valid}/{real,fake}/*.

    python train.py --data ROOT [ROOT...] [--arch efficientnet_lite0|efficientnet_b0|tiny]
                    [--init scratch|imagenet|FILE] [--epochs 50] [--max-per-class N]
                    [--out weights/deepshield_lite0.safetensors] [--resume]

Reads top to bottom: config -> schedule -> data -> model -> one epoch -> validation and checkpoint -> main
(augmentation, the training set and sampler, and the loop's machinery live in ``deepshield.augment``,
``deepshield.data`` and ``deepshield.training``). Every image is decoded and face-cropped once (the crop
``Detector.predict_image`` makes) and cached; every batch gives each root and class a set share
(``--root-balance``); augmentations are the same for both classes. Every layer trains with warm-up + cosine, from ImageNet weights, from scratch or from a DeepShield
checkpoint; ``--schedule two-phase`` fine-tunes the head first, then the last stages too. The
best epoch by validation AUC is saved with save_weights, its temperature and threshold fitted on the
validation set; OUT.state.pt holds the training state for --resume (never used at inference),
OUT.config.json the resolved config, OUT.curves.{csv,png} the curves.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from deepshield.cli import usable_cores
from deepshield.data import BalancedBatchSampler, CachedSplit, TrainSet, ValidSet, bn_sample, group_shares, load_split
from deepshield.detector import Detector, resolve_device
from deepshield.faces import FaceDetector, default_face_model
from deepshield.model import ARCHS, DEFAULT_ARCH, DeepfakeCNN
from deepshield.pretrained import imagenet_features
from deepshield.training import (Progress, autocast, ema_decay_at, ema_update, epoch_line, epoch_metrics, load_state,
                                 predict_logits, recalibrate_bn, save_state, validation_metrics, write_curves)
from deepshield.weights import WEIGHTS_NAME, ModelMeta, load_weights, read_meta, save_weights

# ----------------------------------------------------------------------------------------------------
# Config: every default in one place; each field is a --flag (underscores become dashes).


def opt(default: Any, help: str) -> Any:
    """A Config field with its --help text."""
    return field(default=default, metadata={"help": help})


@dataclass
class Config:
    data: list[str] = field(default_factory=list, metadata={"help": "dataset roots, each ROOT/{train,valid}/{real,fake}/*"})
    arch: str = opt(DEFAULT_ARCH, f"one of {sorted(ARCHS)} (tiny: tests)")
    img_size: int = opt(0, "input size; 0: the arch's native size (224 for the EfficientNets, 64 tiny)")
    use_fft: bool = opt(False, "add the FFT frequency branch")
    init: str = opt("", "scratch | imagenet | FILE.safetensors; default imagenet for the EfficientNets, scratch for tiny")
    schedule: str = opt("cosine", "cosine (every layer: warm-up, then cosine decay) | two-phase (head only, then "
                                  "the last stages too)")
    epochs: int = opt(50, "maximum epochs (early stopping may end sooner)")
    batch_size: int = opt(32, "images per batch, balanced over roots and classes")
    steps_per_epoch: int = opt(0, "batches per epoch; 0: one pass over the training images")
    root_balance: float = opt(0.0, "a root's share of each batch grows as (its training images) ** P: 0 equal "
                                   "shares, 1 in proportion to size; a root's classes always share equally")
    lr: float = opt(0.0, "0: 1e-3 from scratch, else 1e-4 (cosine: the peak; two-phase: the head's phase 1)")
    finetune_lr: float = opt(1e-5, "two-phase: phase 2")
    freeze_epochs: int = opt(5, "two-phase: epochs 1..N train the head only (phase 1)")
    unfreeze_stages: int = opt(2, "two-phase, phase 2: last EfficientNet stages trained too (with the final 1x1 conv)")
    warmup_epochs: float = opt(1.0, "cosine: linear warm-up, then cosine decay to --min-lr")
    min_lr: float = opt(1e-6, "cosine: final learning rate")
    weight_decay: float = opt(0.05, "AdamW weight decay")
    label_smoothing: float = opt(0.1, "targets become 0.05 / 0.95 at 0.1")
    ema_decay: float = opt(0.0, "> 0: validate and save an exponential moving average of the weights (e.g. 0.999)")
    ema_bn_images: int = opt(1024, "with --ema-decay: training crops (un-augmented) that re-estimate the EMA's "
                                   "batch-norm statistics before each validation")
    patience: int = opt(5, "epochs without a better validation AUC before stopping (counted afresh in phase 2)")
    max_per_class: int = opt(0, "training images per root and class, a seeded random subset; 0: all")
    val_max_per_class: int = opt(0, "the same for the validation split; 0: all")
    sbi: float = opt(0.0, "the share of fake places in each batch given to self-blends of real training crops "
                          "(any root): blending boundaries without any generator's fingerprint")
    augment: bool = opt(True, "flips, crop jitter, colour, JPEG, blur, noise, rescaling")
    augment_strength: float = opt(1.0, "scales the chance of each corruption (colour, rescaling, blur, noise, JPEG); "
                                       "from scratch, full strength hides the faint artefacts the net must first find")
    face_crop: bool = opt(True, "crop each image to its face as inference does; --no-face-crop: use images as given")
    face_model: str = opt("", "YuNet .onnx for face detection; default as load_detector ($DEEPSHIELD_FACE_MODEL, weights/, Haar)")
    out: str = opt(f"weights/{WEIGHTS_NAME}", "best weights; OUT.state.pt, OUT.config.json, OUT.curves.* beside it")
    resume: bool = opt(False, "continue from OUT.state.pt")
    seed: int = opt(0, "seeds initialisation, subsets, batches and augmentation")
    device: str = opt("", "cpu, cuda, mps; default: the best available")
    workers: int = opt(-1, "DataLoader worker processes; -1: half the CPU cores")
    cache_dir: str = opt("", "decoded-crop cache; default $DEEPSHIELD_CACHE or ~/.cache/deepshield")


def parse_args(argv: list[str] | None = None) -> Config:
    """Build the parser from ``Config``'s fields; unset flags keep the dataclass defaults."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], argument_default=argparse.SUPPRESS)
    for f in fields(Config):
        flag = "--" + f.name.replace("_", "-")
        if f.name == "data":
            parser.add_argument(flag, nargs="+", required=True, metavar="ROOT", help=f.metadata["help"])
            continue
        help = f"{f.metadata['help']} (default: {f.default!r})"
        if f.type == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, help=help)
        else:
            parser.add_argument(flag, type={"int": int, "float": float}.get(f.type, str), help=help)
    return resolve(Config(**vars(parser.parse_args(argv))))


def resolve(cfg: Config) -> Config:
    """Fill the "auto" defaults and check values, so the saved config says exactly what ran."""
    if cfg.arch not in ARCHS:
        raise ValueError(f"unknown --arch {cfg.arch!r}; known: {sorted(ARCHS)}")
    init = cfg.init or ("scratch" if cfg.arch == "tiny" else "imagenet")
    if init not in ("scratch", "imagenet") and not init.endswith(".safetensors"):
        raise ValueError(f"--init {init!r}: expected scratch, imagenet or a .safetensors file")
    if cfg.schedule not in ("cosine", "two-phase"):
        raise ValueError(f"--schedule {cfg.schedule!r}: expected cosine or two-phase")
    if cfg.ema_decay > 0 and cfg.ema_bn_images < 1:
        raise ValueError(f"--ema-bn-images must be >= 1 with --ema-decay, got {cfg.ema_bn_images}")
    if cfg.batch_size < 2:
        raise ValueError(f"--batch-size must be >= 2 (batch norm), got {cfg.batch_size}")
    if not 0.0 <= cfg.sbi <= 1.0:
        raise ValueError(f"--sbi must be a share of the fake places from 0 to 1, got {cfg.sbi}")
    if not 0.0 <= cfg.root_balance <= 1.0:
        raise ValueError(f"--root-balance must be from 0 (equal shares) to 1 (shares by size), got {cfg.root_balance}")
    return replace(
        cfg, init=init,
        img_size=cfg.img_size or ARCHS[cfg.arch].img_size,
        lr=cfg.lr or (1e-3 if init == "scratch" else 1e-4),
        workers=cfg.workers if cfg.workers >= 0 else max(1, usable_cores() // 2),
    )


# ----------------------------------------------------------------------------------------------------
# Schedule.


def phase_at(epoch: int, cfg: Config) -> int:
    """1 or 2 for the phases of the two-phase schedule (1-based ``epoch``); always 1 for cosine."""
    return 2 if cfg.schedule == "two-phase" and epoch > cfg.freeze_epochs else 1


def lr_at(step: int, cfg: Config, steps_per_epoch: int) -> float:
    """Learning rate at optimizer step ``step`` (0-based). Two-phase: ``lr`` for the head-only phase,
    then ``finetune_lr``. Cosine: linear warm-up to ``lr``, then cosine decay to ``min_lr``."""
    if cfg.schedule == "two-phase":
        return cfg.lr if step < cfg.freeze_epochs * steps_per_epoch else cfg.finetune_lr
    warmup = max(1, round(cfg.warmup_epochs * steps_per_epoch))
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, cfg.epochs * steps_per_epoch - warmup))
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1.0 + math.cos(math.pi * progress))


# ----------------------------------------------------------------------------------------------------
# Data: cached crops of every root, and batches balanced over (root, class) groups.


def load_splits(cfg: Config, split: str, detector: Detector) -> list[CachedSplit]:
    """Each root's cached crops for ``split`` (the balanced subset when a max per class is set)."""
    limit = cfg.max_per_class if split == "train" else cfg.val_max_per_class
    return [
        load_split(root, split, detector.recipe, limit or None, cfg.seed, cfg.face_crop, cfg.cache_dir or None, cfg.workers)
        for root in cfg.data
    ]


def describe_data(train: list[CachedSplit], valid: list[CachedSplit], cfg: Config) -> str:
    """One line per root for the weights' ``training_data``."""
    return "; ".join(
        f"{t.root}: train {len(t.labels)} ({int((t.labels == 0).sum())} real / {int(t.labels.sum())} fake), "
        f"valid {len(v.labels)}" for t, v in zip(train, valid)
    ) + (f"; self-blends of the real crops fill {cfg.sbi:.0%} of the fake places" if cfg.sbi else "")


# ----------------------------------------------------------------------------------------------------
# Model: initialisation and frozen stages.


def build_model(cfg: Config) -> DeepfakeCNN:
    """A DeepfakeCNN initialised per ``cfg.init``: random, ImageNet features, or a DeepShield file."""
    if cfg.init.endswith(".safetensors"):
        model, meta = load_weights(cfg.init)
        if (meta.arch, meta.use_fft) != (cfg.arch, cfg.use_fft):
            raise ValueError(f"--init {cfg.init} is arch={meta.arch}, use_fft={meta.use_fft}; "
                             f"the run asks for arch={cfg.arch}, use_fft={cfg.use_fft}")
        return model
    model = DeepfakeCNN(cfg.arch, use_fft=cfg.use_fft)
    if cfg.init == "imagenet":
        model.features.load_state_dict(imagenet_features(cfg.arch), strict=True)
    return model


def frozen_stages(model: DeepfakeCNN, epoch: int, cfg: Config) -> int:
    """How many leading ``features`` blocks stay frozen: all in phase 1 of fine-tuning; all but the
    last ``unfreeze_stages`` stages and the final 1x1 conv in phase 2; none with the cosine schedule."""
    if cfg.schedule != "two-phase":
        return 0
    n_blocks = len(model.features)
    return n_blocks if phase_at(epoch, cfg) == 1 else max(0, n_blocks - 1 - cfg.unfreeze_stages)


def set_train_mode(model: DeepfakeCNN, n_frozen: int) -> None:
    """Train mode with the first ``n_frozen`` blocks frozen, their batch-norm statistics included."""
    model.train()
    for i, block in enumerate(model.features):
        block.requires_grad_(i >= n_frozen)
        if i < n_frozen:
            block.eval()


# ----------------------------------------------------------------------------------------------------
# One epoch, validation, and the best checkpoint.


def train_epoch(model: DeepfakeCNN, loader: DataLoader, optimizer: torch.optim.Optimizer,
                scaler: torch.amp.GradScaler, detector: Detector, ema: DeepfakeCNN | None,
                cfg: Config, progress: Progress, desc: str) -> tuple[float, float]:
    """One pass over ``loader``. Returns: mean training loss and images per second."""
    total_loss, seen, start = 0.0, 0, time.perf_counter()
    bar = tqdm(loader, desc=desc, unit="batch", leave=False, dynamic_ncols=True)
    for images, labels in bar:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(progress.step, cfg, len(loader))
        x = detector.preprocess(list(images.numpy()))
        target = labels.to(detector.device).float() * (1 - cfg.label_smoothing) + cfg.label_smoothing / 2
        with autocast(detector.device):
            logits = model(x)
        loss = nn.functional.binary_cross_entropy_with_logits(logits.float(), target)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if ema is not None:
            ema_update(ema, model, ema_decay_at(progress.step, cfg.ema_decay))
        progress.step += 1
        total_loss += loss.item() * len(labels)
        seen += len(labels)
        bar.set_postfix(loss=f"{total_loss / seen:.4f}")
    return total_loss / max(1, seen), seen / (time.perf_counter() - start)


def command_line(argv: list[str] | None) -> str:
    """The command that started this run, for the weights' provenance."""
    return shlex.join(["python", *sys.argv] if argv is None else ["python", "train.py", *argv])


def root_init(init: str) -> str:
    """Where the weights' training began: ``init`` itself, or for a DeepShield file, that file's own start."""
    return read_meta(init).init if init.endswith(".safetensors") else init


def save_best(model: DeepfakeCNN, cfg: Config, val: dict[str, Any], epoch: int, training_data: str,
              command: str) -> dict[str, Any]:
    """Write the weights with their calibration, provenance and validation metrics. Returns: ``val``."""
    meta = ModelMeta(
        arch=cfg.arch, img_size=cfg.img_size, use_fft=cfg.use_fft, init=root_init(cfg.init),
        threshold=val["threshold"], temperature=val["temperature"], trained=True,
        training_data=training_data, training_command=command,
        metrics={"epoch": epoch, "split": "valid", **{k: v for k, v in val.items() if k not in ("temperature", "threshold")}},
    )
    save_weights(model, meta, cfg.out)
    return val


# ----------------------------------------------------------------------------------------------------
# Files beside the checkpoint: OUT.config.json, OUT.state.pt, OUT.curves.csv, OUT.curves.png.


def beside(cfg: Config, suffix: str) -> Path:
    return Path(cfg.out).with_suffix(suffix)


# ----------------------------------------------------------------------------------------------------


def record_epoch(row: dict[str, Any], progress: Progress, save: Callable[[], dict[str, Any]], cfg: Config) -> None:
    """Print and keep the epoch's row; when validation AUC improved, ``save`` the weights (it returns the
    validation metrics, with the fitted calibration)."""
    print(epoch_line(row, cfg.epochs), flush=True)
    progress.history.append(row)
    progress.epoch = row["epoch"]
    if row["val_auc"] <= progress.best_auc:
        progress.bad_epochs += 1
        return
    progress.best_auc, progress.best_epoch, progress.bad_epochs = row["val_auc"], row["epoch"], 0
    val = save()
    print(f"  saved {cfg.out} (best val_auc; temperature={val['temperature']:.3f} threshold={val['threshold']:.3f})")


def main(argv: list[str] | None = None) -> None:
    cfg = parse_args(argv)
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device or None)
    torch.backends.cudnn.benchmark = True  # one input size throughout: let cuDNN pick its fastest kernels
    model = build_model(cfg).to(device).to(memory_format=torch.channels_last)
    meta = ModelMeta(arch=cfg.arch, img_size=cfg.img_size, use_fft=cfg.use_fft)
    # The training model's Detector: its face detector and crop build the cache, its preprocess feeds the model.
    detector = Detector(model, meta, FaceDetector(cfg.face_model or default_face_model()), device)
    ema = copy.deepcopy(model).requires_grad_(False) if cfg.ema_decay > 0 else None
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda" and not torch.cuda.is_bf16_supported())
    state_path = beside(cfg, ".state.pt")
    progress = load_state(state_path, model, optimizer, scaler, ema, cfg) if cfg.resume else Progress()

    train, valid_splits = load_splits(cfg, "train", detector), load_splits(cfg, "valid", detector)
    train_set = TrainSet(train, cfg.seed, cfg.augment, cfg.augment_strength)
    n_batches = cfg.steps_per_epoch or max(1, len(train_set) // cfg.batch_size)
    sampler = BalancedBatchSampler(train_set.groups, cfg.batch_size, n_batches, cfg.seed,
                                   group_shares(train_set, cfg.root_balance), cfg.sbi)
    valid = ValidSet.join(valid_splits)
    bn_images = bn_sample(train_set, cfg.ema_bn_images, cfg.seed) if ema is not None else None
    training_data = describe_data(train, valid_splits, cfg)
    Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
    beside(cfg, ".config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    print(f"device={device} arch={cfg.arch} img_size={cfg.img_size} init={cfg.init} steps/epoch={n_batches} | {training_data}")

    for epoch in range(progress.epoch + 1, cfg.epochs + 1):
        phase = phase_at(epoch, cfg)
        if phase != phase_at(epoch - 1, cfg):
            progress.bad_epochs = 0  # the unfrozen stages deserve their own patience
        if progress.bad_epochs >= cfg.patience:
            print(f"early stop: no better val_auc for {cfg.patience} epochs (best {progress.best_auc:.4f} at epoch {progress.best_epoch})")
            break
        set_train_mode(model, frozen_stages(model, epoch, cfg))
        train_set.epoch = sampler.epoch = epoch
        # No cv2.setNumThreads in the workers: after the parent has used OpenCV's thread pool (face
        # detection while caching), calling it in a forked worker deadlocks.
        loader = DataLoader(train_set, batch_sampler=sampler, num_workers=cfg.workers, pin_memory=device.type == "cuda")
        train_loss, img_s = train_epoch(model, loader, optimizer, scaler, detector, ema, cfg, progress,
                                        desc=f"Epoch {epoch}/{cfg.epochs}")
        evaluated = ema if ema is not None else model
        if ema is not None:
            recalibrate_bn(ema, detector, bn_images, cfg.batch_size, frozen_stages(ema, epoch, cfg))
        logits = predict_logits(evaluated, detector, valid.images, cfg.batch_size)
        row = {"epoch": epoch, "phase": phase, "lr": lr_at(progress.step - 1, cfg, n_batches),
               "train_loss": train_loss, **epoch_metrics(valid.labels, logits), "img_s": img_s}
        record_epoch(row, progress, lambda: save_best(evaluated, cfg, validation_metrics(valid, logits), epoch,
                                                      training_data, command_line(argv)), cfg)
        save_state(state_path, model, optimizer, scaler, ema, cfg, progress)
        write_curves(progress.history, Path(cfg.out))
    print(f"best val_auc={progress.best_auc:.4f} at epoch {progress.best_epoch}; weights: {cfg.out}")


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError) as err:
        sys.exit(f"train.py: error: {err}")
