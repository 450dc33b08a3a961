"""Datasets on disk for ``train.py`` and ``evaluate.py``: listing a labelled split, balanced subsets, a cache of
decoded face crops so training decodes and detects each image only once, and the training set and batch sampler
over several roots.

Layout ("140k Real and Fake Faces"): ``ROOT/{train,valid,test}/{real,fake}/*``; label 0 = real, 1 = fake.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from . import __version__
from .augment import augment
from .crops import CropRecipe
from .media import DEFAULT_MAX_PIXELS, load_image
from .sbi import self_blend

CLASSES = ("real", "fake")  # folder names, in label order (ModelMeta.labels is ("Real", "Fake"))
SPLITS = ("train", "valid", "test")
IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})
VIDEO_EXTS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"})
CACHE_ENV = "DEEPSHIELD_CACHE"
CACHE_VERSION = 3  # bump when the crop or resize rule changes, so old caches are not reused


def default_cache_dir() -> Path:
    """``$DEEPSHIELD_CACHE``, else ``~/.cache/deepshield``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "deepshield")


def list_labelled(folder: str | os.PathLike, exts: frozenset[str] = IMAGE_EXTS) -> tuple[list[Path], np.ndarray]:
    """Files under ``folder/real`` and ``folder/fake`` with one of ``exts``, sorted by name. A folder may hold
    one class only (a one-class root, such as generated faces with no real counterpart).

    Returns: paths and labels (N,) int64, 0 = real, 1 = fake.
    Raises: FileNotFoundError when neither class folder exists; ValueError if a class folder has no file.
    """
    folder = Path(folder)
    present = [name for name in CLASSES if (folder / name).is_dir()]
    if not present:
        raise FileNotFoundError(f"{folder}: no class folder (expected {folder}/real/ and/or {folder}/fake/)")
    paths: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(CLASSES):
        if name not in present:
            continue
        class_dir = folder / name
        found = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in exts and p.is_file())
        if not found:
            raise ValueError(f"{class_dir}: no files with extension {sorted(exts)}")
        paths += found
        labels += [label] * len(found)
    return paths, np.array(labels, dtype=np.int64)


def list_split(root: str | os.PathLike, split: str) -> tuple[list[Path], np.ndarray]:
    """Images of ``root/split/{real,fake}`` (or one of them). Returns: paths and 0/1 labels (see ``list_labelled``)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data root {root} not found")
    if not (root / split).is_dir():
        raise FileNotFoundError(f"{root / split}: missing split folder (expected {root}/{split}/{{real,fake}}/)")
    return list_labelled(root / split)


def balanced_subset(paths: list[Path], labels: np.ndarray, max_per_class: int | None,
                    seed: int = 0) -> tuple[list[Path], np.ndarray]:
    """At most ``max_per_class`` items of each class, drawn at random (seeded), in the original order.
    ``None`` keeps everything."""
    if max_per_class is None:
        return paths, labels
    if max_per_class < 1:
        raise ValueError(f"max_per_class must be >= 1, got {max_per_class}")
    rng = np.random.default_rng(seed)
    keep = np.concatenate([
        rng.permutation(np.flatnonzero(labels == label))[:max_per_class] for label in np.unique(labels)
    ])
    keep.sort()
    return [paths[i] for i in keep], labels[keep]


def model_crop(path: Path, recipe: CropRecipe, face_crop: bool = True, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The model's input crop of one image file, as ``Detector.predict_image`` would make it
    (``CropRecipe.main_crop``). Returns: RGB uint8 (S, S, 3)."""
    return recipe.main_crop(load_image(path, max_pixels), face_crop)


@dataclass
class CachedSplit:
    """Decoded model crops of one root's split."""

    root: Path
    split: str
    paths: list[Path]
    labels: np.ndarray  # (N,) 0 real, 1 fake
    images: np.ndarray  # (N, S, S, 3) uint8 RGB, possibly memory-mapped


def load_split(root: str | os.PathLike, split: str, recipe: CropRecipe, max_per_class: int | None = None,
               seed: int = 0, face_crop: bool = True, cache_dir: str | os.PathLike | None = None,
               workers: int = 0) -> CachedSplit:
    """List ``root/split``, take a balanced subset, and return its model crops, memory-mapped from the
    cache file, which is built on first use (one decode and face detection per image).

    Args:
        recipe: the face detector, crop geometry and input size the crops must match (``Detector.recipe``).
        face_crop: False keeps whole images (for roots that are already tight face crops).
        cache_dir: default ``default_cache_dir()``.
        workers: processes that decode and detect while building the cache (0: this one). Linux only: the
            workers are forked, since the face detector cannot be pickled for a spawned process.
    """
    paths, labels = balanced_subset(*list_split(root, split), max_per_class, seed)
    cache_file = Path(cache_dir or default_cache_dir()) / f"{Path(root).name}-{split}-{_cache_key(paths, recipe, face_crop)}.npy"
    if not cache_file.is_file():
        _build_cache(cache_file, paths, recipe, face_crop, workers, desc=f"caching {Path(root).name}/{split}")
    return CachedSplit(Path(root), split, paths, labels, np.load(cache_file, mmap_mode="r"))


class _Crops(Dataset):
    """``model_crop`` of each path, for a DataLoader that builds the cache in worker processes. A bad file
    gives its error message instead of a crop, so the parent raises it without a worker's traceback."""

    def __init__(self, paths: list[Path], recipe: CropRecipe, face_crop: bool) -> None:
        self.paths, self.recipe, self.face_crop = paths, recipe, face_crop

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray | str:
        try:
            return model_crop(self.paths[i], self.recipe, self.face_crop)
        except ValueError as err:
            return str(err)


def _as_is(item: np.ndarray | str) -> np.ndarray | str:
    return item


def _build_cache(cache_file: Path, paths: list[Path], recipe: CropRecipe, face_crop: bool, workers: int,
                 desc: str) -> None:
    # Crops go straight into a memory-mapped .npy (no second copy in RAM), written under a temporary
    # name and renamed, so an interrupted run never leaves a truncated cache behind. The loader keeps
    # the files' order, whatever the number of workers.
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    partial = cache_file.with_name(f"{cache_file.stem}.{os.getpid()}.partial.npy")  # per process: no clash
    size = recipe.size
    images = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=(len(paths), size, size, 3))
    fork = sys.platform.startswith("linux")
    loader = DataLoader(_Crops(paths, recipe, face_crop), batch_size=None, num_workers=workers if fork else 0,
                        collate_fn=_as_is, multiprocessing_context="fork" if fork and workers > 0 else None)
    try:
        for i, crop in enumerate(tqdm(loader, desc=desc, unit="img", leave=False)):
            if isinstance(crop, str):
                raise ValueError(crop)  # a bad file: the message names it
            images[i] = crop
        images.flush()
        del images
        os.replace(partial, cache_file)
    finally:
        partial.unlink(missing_ok=True)  # a failed or interrupted build leaves no multi-GB leftover


def _cache_key(paths: list[Path], recipe: CropRecipe, face_crop: bool) -> str:
    """A digest of everything the cached crops depend on: the files (by path, size and mtime), the face
    detector and its settings, the crop geometry, the input size and the package version."""
    stats = []
    for path in paths:
        stat = path.stat()
        stats.append((str(path.resolve()), stat.st_size, stat.st_mtime_ns))
    key = recipe.key()
    everything = {  # in this order: caches built before CropRecipe keep their names
        "version": CACHE_VERSION, "img_size": key["img_size"], "face_crop": face_crop, "crop_scale": key["crop_scale"],
        "package": __version__, "files": stats, "face_detector": key["face_detector"],
    }
    return hashlib.sha1(json.dumps(everything).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------------
# Training and validation sets over several roots, and batches with a set share of each (root, class) group.


class TrainSet(Dataset):
    """Crops of several cached splits; sample ``k`` of epoch ``e`` is augmented with the RNG seeded
    (seed, e, k), so a run is reproducible whatever the number of workers, and across --resume.

    Index ``len(self) + k`` is a self-blend (``deepshield.sbi``) of real crop ``k``, labelled fake: the batch
    sampler asks for those with ``sbi``.
    """

    def __init__(self, splits: list[CachedSplit], seed: int, augment: bool, strength: float = 1.0) -> None:
        self.splits, self.seed, self.augment, self.strength, self.epoch = splits, seed, augment, strength, 0
        self.items = [(s, i) for s, split in enumerate(splits) for i in range(len(split.labels))]
        # Group = (root, class): the unit the batch sampler balances.
        self.groups = np.array([2 * s + int(splits[s].labels[i]) for s, i in self.items])
        labels = np.concatenate([split.labels for split in splits])
        if len(np.unique(labels)) < 2:
            raise ValueError(f"training needs real and fake images; the roots {[str(s.root) for s in splits]} "
                             f"hold {CLASSES[int(labels[0])]} images only")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, k: int) -> tuple[np.ndarray, int]:
        blend, k = k >= len(self.items), k % len(self.items)
        s, i = self.items[k]
        image = np.array(self.splits[s].images[i])  # a copy: the cache may be a read-only memory map
        label = int(self.splits[s].labels[i])
        # Plain crops keep the seeding they always had, so earlier runs stay reproducible.
        rng = np.random.default_rng((self.seed, self.epoch, k, 1) if blend else (self.seed, self.epoch, k))
        if blend:
            if label != 0:
                raise ValueError(f"item {k} is fake: only real crops are self-blended")
            image, label = self_blend(image, rng)[0], 1
        if self.augment:
            image = augment(image, rng, self.strength)
        return image, label


class BalancedBatchSampler(Sampler[list[int]]):
    """Batches holding a fixed share of every group (equal shares unless ``shares`` (one per sorted group,
    summing to 1) says otherwise; fractional places go to a random few, in proportion); each group is drawn
    in reshuffled passes, so small groups repeat within an epoch and large ones are subsampled.

    ``sbi``: the chance that a fake place is given to a self-blend of a real crop instead (drawn from every
    root's reals; yielded as ``len(groups) + index``, see ``TrainSet``). Even groups are real, odd fake.
    """

    def __init__(self, groups: np.ndarray, batch_size: int, n_batches: int, seed: int,
                 shares: np.ndarray | None = None, sbi: float = 0.0) -> None:
        self.members = [np.flatnonzero(groups == g) for g in np.unique(groups)]
        self.batch_size, self.n_batches, self.seed, self.epoch = batch_size, n_batches, seed, 0
        shares = np.full(len(self.members), 1 / len(self.members)) if shares is None else np.asarray(shares, float)
        if shares.shape != (len(self.members),) or (shares < 0).any() or not np.isclose(shares.sum(), 1.0):
            raise ValueError(f"shares must be {len(self.members)} non-negative numbers summing to 1, got {shares}")
        if not 0.0 <= sbi <= 1.0:
            raise ValueError(f"sbi must be a share from 0 to 1, got {sbi}")
        self.quota, self.sbi, self.n_items = batch_size * shares, sbi, len(groups)
        self.fake = groups % 2 == 1
        self.reals = np.flatnonzero(~self.fake)
        if sbi > 0 and not len(self.reals):
            raise ValueError("sbi needs real training images to blend")

    def __len__(self) -> int:
        return self.n_batches

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng((self.seed, self.epoch, 1))
        streams = [_reshuffled(m, rng) for m in self.members]
        blends = _reshuffled(self.reals, np.random.default_rng((self.seed, self.epoch, 3))) if self.sbi else None
        base = np.floor(self.quota + 1e-9).astype(int)
        extra, fraction = self.batch_size - base.sum(), np.clip(self.quota - base, 0, None)
        equal = np.allclose(self.quota, self.quota[0])
        for _ in range(self.n_batches):
            counts = base.copy()
            # Equal shares keep the draw this sampler has always made, so earlier runs stay reproducible.
            if equal:
                counts[rng.permutation(len(streams))[:extra]] += 1
            elif extra:
                counts[rng.choice(len(streams), extra, replace=False, p=fraction / fraction.sum())] += 1
            batch = [int(next(s)) for s, n in zip(streams, counts) for _ in range(n)]
            if blends is not None:
                batch = self._blend(batch, blends, rng)
            yield [batch[i] for i in rng.permutation(len(batch))]

    def _blend(self, batch: list[int], blends: Iterator[int], rng: np.random.Generator) -> list[int]:
        """Give each fake place, with chance ``sbi``, to a self-blend of the next real crop."""
        swap = rng.random(len(batch)) < self.sbi
        return [self.n_items + int(next(blends)) if self.fake[k] and s else k for k, s in zip(batch, swap)]


def group_shares(train_set: TrainSet, root_balance: float) -> np.ndarray:
    """Each (root, class) group's share of a batch, in sorted group order: each class has half the batch,
    split among the roots that hold it in proportion to (their training images) ** ``root_balance``. (Where
    every root holds both classes, that is a root's share growing as its size ** P, split equally between
    its classes; a one-class root fills only its class's places.)"""
    groups = np.unique(train_set.groups)
    roots, classes = groups // 2, groups % 2
    sizes = np.array([len(train_set.splits[r].labels) for r in roots], dtype=np.float64)
    weight = sizes ** root_balance
    per_class = np.array([weight[classes == c].sum() for c in classes])
    return 0.5 * weight / per_class


def _reshuffled(indices: np.ndarray, rng: np.random.Generator) -> Iterator[int]:
    while True:
        yield from rng.permutation(indices)


def bn_sample(train_set: TrainSet, n: int, seed: int) -> np.ndarray:
    """About ``n`` un-augmented training crops (N, S, S, 3) uint8, a seeded draw with an equal share of every
    (root, class) group (the mix of the training batches with equal root shares)."""
    rng = np.random.default_rng((seed, 2))
    groups = np.unique(train_set.groups)
    share = max(1, n // len(groups))
    picks = np.concatenate([rng.permutation(np.flatnonzero(train_set.groups == g))[:share] for g in groups])
    return np.stack([train_set.splits[s].images[i] for s, i in (train_set.items[k] for k in np.sort(picks))])


@dataclass
class ValidSet:
    """Every root's validation crops in one array, so only its last batch has an odd size (each new input
    shape costs seconds of kernel set-up on CPU)."""

    images: np.ndarray  # (N, S, S, 3) uint8
    labels: np.ndarray  # (N,)
    root_ids: np.ndarray  # (N,) index into roots
    roots: list[str]

    @classmethod
    def join(cls, splits: list[CachedSplit]) -> "ValidSet":
        return cls(np.concatenate([s.images for s in splits]), np.concatenate([s.labels for s in splits]),
                   np.concatenate([np.full(len(s.labels), r) for r, s in enumerate(splits)]), [str(s.root) for s in splits])
