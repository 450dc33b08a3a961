"""Self-blended images (deepshield.sbi), the batches that carry them, and the fixed corruptions of
``evaluate.py --perturb`` (deepshield.augment.Perturbation)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from deepshield.augment import Perturbation
from deepshield.data import BalancedBatchSampler, CachedSplit, TrainSet
from deepshield.sbi import example_grid, face_mask, self_blend


def face_like(size: int = 96, seed: int = 0) -> np.ndarray:
    """A textured crop (blurred noise): every altered pixel shows."""
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(30, 226, (size, size, 3), dtype=np.uint8), (0, 0), 1.5)


@pytest.mark.parametrize("seed", range(6))
def test_a_self_blend_differs_from_its_source_only_inside_the_soft_mask(seed: int) -> None:
    image = face_like()
    blended, weight = self_blend(image, np.random.default_rng(seed))
    assert blended.shape == image.shape and blended.dtype == np.uint8 and weight.shape == image.shape[:2]
    changed = np.any(blended != image, axis=2)
    assert not changed[weight == 0].any()  # outside the mask: the source, to the bit
    assert changed[weight > 0.5 * weight.max()].mean() > 0.5  # inside: the altered copy shows
    soft = (weight > 0.01) & (weight < 0.99 * weight.max())
    assert soft.sum() > 0.05 * weight.size  # a wide feathered edge, not a hard cut-out
    assert (weight == 0).mean() > 0.1 and weight.max() <= 1.0  # the background stays untouched
    assert weight[0, 0] == weight[0, -1] == weight[-1, 0] == weight[-1, -1] == 0.0


def test_the_mask_is_a_soft_face_region_and_seeded() -> None:
    first = face_mask(128, np.random.default_rng(3))
    assert first.dtype == np.float32 and first.max() == pytest.approx(1.0) and first.min() == 0.0
    assert first[64, 64] > 0.9 and first[0, 0] == 0.0  # the face's middle in, the corners out
    assert np.array_equal(first, face_mask(128, np.random.default_rng(3)))
    assert not np.array_equal(first, face_mask(128, np.random.default_rng(4)))  # shape, size and edge vary


def test_the_example_grid_shows_source_mask_and_blend() -> None:
    grid = example_grid(np.stack([face_like(32, s) for s in range(4)]), columns=3)
    assert grid.shape == (2 * 32, 3 * 3 * 32, 3) and grid.dtype == np.uint8
    assert np.array_equal(grid[:32, :32], face_like(32, 0))


def splits_with(labels: dict[str, list[int]], size: int = 32) -> list[CachedSplit]:
    rng = np.random.default_rng(0)
    return [CachedSplit(Path(name), "train", [], np.array(y), np.stack([face_like(size, int(rng.integers(1e6))) for _ in y]))
            for name, y in labels.items()]


def test_sbi_fills_its_share_of_the_fake_places_with_blends_of_reals() -> None:
    train_set = TrainSet(splits_with({"a": [0] * 6 + [1] * 6, "b": [0] * 4 + [1] * 4}), seed=0, augment=False)
    n = len(train_set)
    batches = list(BalancedBatchSampler(train_set.groups, 16, 200, seed=0, sbi=0.5))
    blends = np.array([k for b in batches for k in b if k >= n]) - n
    fakes = sum(1 for b in batches for k in b if k < n and train_set.groups[k] % 2 == 1)
    assert len(blends) / (len(blends) + fakes) == pytest.approx(0.5, abs=0.03)
    assert set(train_set.groups[blends]) == {0, 2}  # reals of both roots are blended
    image, label = train_set[n + int(blends[0])]
    source, source_label = train_set[int(blends[0])]
    assert label == 1 and source_label == 0 and not np.array_equal(image, source)
    plain = list(BalancedBatchSampler(train_set.groups, 16, 20, seed=0))
    assert all(k < n for b in plain for k in b)  # no sbi: the draw is what it always was
    with pytest.raises(ValueError, match="only real"):
        train_set[n + 6]  # item 6 is a fake


def test_a_one_class_root_fills_only_its_class() -> None:
    from deepshield.data import group_shares

    train_set = TrainSet(splits_with({"a": [0] * 8 + [1] * 8, "gen": [1] * 8}), seed=0, augment=False)
    shares = group_shares(train_set, 0.0)  # groups: a-real, a-fake, gen-fake
    assert np.allclose(shares, [0.5, 0.25, 0.25])  # reals keep half the batch
    with pytest.raises(ValueError, match="real and fake"):
        TrainSet(splits_with({"gen": [1] * 8}), seed=0, augment=False)


@pytest.mark.parametrize("spec", ["jpeg:70", "scale:0.5", "blur:1.5"])
def test_perturbations_change_the_image_and_keep_its_shape(spec: str) -> None:
    image = face_like(80)
    perturbed = Perturbation.parse(spec)(image)
    assert perturbed.shape == image.shape and perturbed.dtype == np.uint8
    assert 0 < np.abs(perturbed.astype(int) - image).mean() < 30 and str(Perturbation.parse(spec)) == spec


@pytest.mark.parametrize("spec", ["jpeg:0", "jpeg:70.5", "scale:1.5", "blur:-1", "noise:3", "jpeg"])
def test_bad_perturbations_say_what_is_accepted(spec: str) -> None:
    with pytest.raises(ValueError, match=r"jpeg: re-encode .* scale: .* blur: "):
        Perturbation.parse(spec)
