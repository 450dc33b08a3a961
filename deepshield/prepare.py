"""Face-crop datasets from labelled videos: ``python -m deepshield.prepare frames|split``.

    python -m deepshield.prepare frames VIDEOS --out OUT [--frames 30] [--size 224] [--workers N] [--face-model ONNX]
    python -m deepshield.prepare split OUT [--seed 0] [--layout folders|manifest] [--manifest FILE] [--overwrite]

``frames`` takes labels from DFDC ``metadata.json`` files under VIDEOS (``{"x.mp4": {"label": "FAKE",
"original": "y.mp4"}}``) or else from VIDEOS/{real,fake}/; samples N evenly spaced frames per video; crops
the largest face of each with the crop inference uses (``CropRecipe`` with ``DEFAULT_CROP``)
and writes them to OUT/all/{real,fake}/VIDEO_fNNNNN.jpg. Each finished video is appended to
OUT/progress.jsonl, so a stopped run picks up where it was.

``split`` assigns whole groups (a fake's group is its original video, a real's is itself) to train / valid /
test 70/15/15 with a seeded shuffle, and hard-links the crops into OUT/{train,valid,test}/{real,fake}/ (the
layout ``train.py --data OUT`` and ``evaluate.py --data OUT`` read) or only writes the manifest CSV
(path,label,group,split) with ``--layout manifest``.
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import os
import shutil
import signal
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from .data import CLASSES, SPLITS, VIDEO_EXTS
from .crops import CropRecipe, resize_crop
from .faces import DEFAULT_CROP, FaceDetector, default_face_model
from .cli import EXIT_BAD_INPUT, FACE_MODEL_HELP, usable_cores
from .media import atomic_path, write_image
from .video import probe_video, read_frames, sample_indices

EXIT_INTERRUPTED = 130
ALL = "all"  # OUT/all/{real,fake}: the crops before splitting
PROGRESS = "progress.jsonl"  # one line per finished video
SETTINGS = "prepare.json"  # what the crops were made with; a resumed run must match it
SPLIT_RATIOS = (0.70, 0.15, 0.15)  # train, valid, test (by group)
JPEG_QUALITY = 95

# ----------------------------------------------------------------------------------------------------
# Labelled videos.


@dataclass(frozen=True)
class LabelledVideo:
    path: Path
    label: str  # "real" or "fake"
    group: str  # file name of the source video: a fake's original, or a real itself


def read_metadata(path: Path) -> list[LabelledVideo]:
    """Parse a DFDC-style metadata.json; the videos are in its folder.

    Raises: ValueError naming the file and entry for bad JSON, an unknown label or a missing field.
    """
    try:
        entries = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(entries, dict):
        raise ValueError(f"{path}: expected an object of video name -> {{label, original}}")
    videos = []
    for name, entry in entries.items():
        label = str(entry.get("label", "")).lower() if isinstance(entry, dict) else ""
        if label not in CLASSES:
            raise ValueError(f"{path}: {name}: label must be REAL or FAKE, got {entry!r}")
        original = entry.get("original") if label == "fake" else None
        videos.append(LabelledVideo(path.parent / name, label, Path(original).name if original else Path(name).name))
    return videos


def list_videos(folder: Path) -> list[LabelledVideo]:
    """Every labelled video under ``folder``: from its metadata.json files (searched recursively, as in DFDC's
    part folders), else from ``folder/real`` and ``folder/fake`` (each video its own group).

    Raises: FileNotFoundError if there is neither; ValueError for duplicate video names.
    """
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    metadata = sorted(folder.rglob("metadata.json"))
    if metadata:
        videos = [video for path in metadata for video in read_metadata(path)]
    elif all((folder / name).is_dir() for name in CLASSES):
        videos = [
            LabelledVideo(path, label, path.name)
            for label in CLASSES for path in sorted((folder / label).iterdir())
            if path.suffix.lower() in VIDEO_EXTS and path.is_file()
        ]
    else:
        raise FileNotFoundError(f"{folder}: found no metadata.json and no real/ + fake/ subfolders")
    stems = Counter(video.path.stem for video in videos)
    duplicates = sorted(stem for stem, count in stems.items() if count > 1)
    if duplicates:  # crops are named after the video, so names must be unique
        raise ValueError(f"{folder}: video names occur more than once: {', '.join(duplicates[:5])}")
    return videos


# ----------------------------------------------------------------------------------------------------
# One video -> face crops (runs in worker processes).


@dataclass(frozen=True)
class VideoJob:
    video: LabelledVideo
    out: Path  # OUT
    n_frames: int
    size: int


@dataclass
class VideoReport:
    video: str  # file name
    label: str
    group: str
    status: str  # "ok", "no_face" or "failed"
    frames: int = 0  # frames decoded
    crops: list[str] = field(default_factory=list)  # paths relative to OUT
    error: str = ""


_faces: FaceDetector | None = None  # one per worker process, built by init_worker


def init_worker(face_model: str | None) -> None:
    """Build this process's face detector."""
    global _faces
    _faces = FaceDetector(face_model)


def init_pool_worker(face_model: str | None) -> None:
    """``init_worker`` for a pool process, which leaves Ctrl-C to the parent (it stops the pool)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cv2.setNumThreads(1)  # the parallelism is the worker processes
    init_worker(face_model)


def prepare_video(job: VideoJob) -> VideoReport:
    """Crop one video with this process's face detector; a video that cannot be read is reported as failed.
    Top-level, so worker processes can unpickle it."""
    assert _faces is not None, "init_worker() first"
    try:
        return crop_video(job, _faces)
    except (FileNotFoundError, ValueError, cv2.error) as err:
        return report_of(job, "failed", error=str(err))


def crop_video(job: VideoJob, faces: FaceDetector) -> VideoReport:
    """Sample ``job.n_frames`` frames, crop the largest face of each, and write the crops as JPEG.

    Raises: FileNotFoundError / ValueError for a missing or undecodable video.
    """
    folder = job.out / ALL / job.video.label
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob(f"{job.video.path.stem}_f[0-9][0-9][0-9][0-9][0-9].jpg*"):
        old.unlink()  # left by an interrupted earlier attempt at this video
    info = probe_video(job.video.path)
    recipe = CropRecipe(faces, DEFAULT_CROP, job.size)  # inference's detector and geometry, saved at job.size
    frames, crops = 0, []
    for index, frame in read_frames(job.video.path, sample_indices(info.frame_count, job.n_frames)):
        frames += 1
        found, face_crops, _ = recipe.crops(frame)
        if found:
            # Largest first: the face keep_main_faces always keeps, and the one to train on.
            name = f"{job.video.path.stem}_f{index:05d}.jpg"
            write_jpeg(folder / name, resize_crop(face_crops[0], recipe.size))
            crops.append(f"{ALL}/{job.video.label}/{name}")
    if not frames:
        raise ValueError(f"{job.video.path}: no frame could be decoded")
    return report_of(job, "ok" if crops else "no_face", frames, crops)


def report_of(job: VideoJob, status: str, frames: int = 0, crops: list[str] | None = None, error: str = "") -> VideoReport:
    video = job.video
    return VideoReport(video.path.name, video.label, video.group, status, frames, crops or [], error)


def write_jpeg(path: Path, rgb: np.ndarray) -> None:
    """Write an RGB image as JPEG (quality 95) under a temporary name, then rename: a stopped run never
    leaves a half-written crop."""
    write_image(path, rgb, JPEG_QUALITY)


def run_jobs(jobs: list[VideoJob], workers: int, face_model: str | None) -> Iterator[VideoReport]:
    """Reports of ``jobs`` as they finish, from ``workers`` processes (in this one when 1)."""
    if workers <= 1:
        init_worker(face_model)
        yield from map(prepare_video, jobs)
        return
    # spawn: OpenCV's and torch's thread pools do not survive fork(), and it is the default on macOS/Windows.
    with multiprocessing.get_context("spawn").Pool(workers, init_pool_worker, (face_model,)) as pool:
        yield from pool.imap_unordered(prepare_video, jobs)


# ----------------------------------------------------------------------------------------------------
# The frames command: settings, resume, summary.


def check_settings(out: Path, settings: dict[str, object]) -> None:
    """Record ``settings`` in OUT, or check that a resumed run uses the ones recorded there.

    Raises: ValueError naming the differences.
    """
    path = out / SETTINGS
    if path.is_file():
        before = json.loads(path.read_text())
        changed = [f"{k}={before.get(k)!r} (now {v!r})" for k, v in settings.items() if before.get(k) != v]
        if changed:
            raise ValueError(f"{out}: prepared earlier with {', '.join(changed)}; use those settings to resume, or a new --out")
        return
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=2) + "\n")


def read_progress(out: Path) -> dict[str, VideoReport]:
    """Finished videos by file name (the last line wins). A line cut short by a stop is ignored, and so
    are failed videos, which a resumed run tries again."""
    path = out / PROGRESS
    reports: dict[str, VideoReport] = {}
    if not path.is_file():
        return reports
    for line in path.read_text().splitlines():
        try:
            report = VideoReport(**json.loads(line))
        except (json.JSONDecodeError, TypeError):
            continue
        if report.status == "failed":
            reports.pop(report.video, None)
        else:
            reports[report.video] = report
    return reports


def prepare_frames(videos: list[LabelledVideo], out: Path, n_frames: int, size: int, workers: int,
                   face_model: str | None) -> list[VideoReport]:
    """Crop every video not finished in an earlier run, logging each as it finishes.

    Returns: the reports of this run's videos (failed ones included).
    """
    check_settings(out, {"frames": n_frames, "size": size, "face_model": face_model, "crop_scale": DEFAULT_CROP.scale})
    done = read_progress(out)
    jobs = [VideoJob(video, out, n_frames, size) for video in videos if video.path.name not in done]
    if done:
        print(f"resuming: {len(videos) - len(jobs)} of {len(videos)} videos already done", file=sys.stderr)
    reports = []
    with (out / PROGRESS).open("a") as log:
        bar = tqdm(run_jobs(jobs, workers, face_model), total=len(jobs), unit="video", desc="frames", disable=not jobs)
        for report in bar:
            log.write(json.dumps(asdict(report)) + "\n")
            log.flush()  # a finished video must be on disk before the next one counts as started
            reports.append(report)
            bar.set_postfix(crops=sum(len(r.crops) for r in reports))
    return reports


def print_frames_summary(out: Path, reports: list[VideoReport]) -> int:
    """Summarise the whole OUT (earlier runs included) and this run's problems. Returns: crops in OUT."""
    everything = read_progress(out)
    crops = Counter(r.label for r in everything.values() for _ in r.crops)
    print(f"{out}: {len(everything)} videos done, {crops['real']} real + {crops['fake']} fake crops in {out / ALL}")
    no_face = [r.video for r in reports if r.status == "no_face"]
    failed = [r for r in reports if r.status == "failed"]
    missed = sum(r.frames - len(r.crops) for r in reports if r.status == "ok")
    if missed:
        print(f"{missed} sampled frames had no face (skipped)")
    if no_face:
        print(f"no face found in {len(no_face)} video(s): {', '.join(sorted(no_face))}", file=sys.stderr)
    for report in failed:
        print(f"deepshield: skipped {report.video}, not decodable: {report.error}", file=sys.stderr)
    return sum(crops.values())


# ----------------------------------------------------------------------------------------------------
# The split command.


def assign_splits(groups: list[str], seed: int, ratios: tuple[float, float, float] = SPLIT_RATIOS) -> dict[str, str]:
    """A seeded shuffle of the distinct groups cut into train / valid / test by ``ratios`` of the group
    count (at least one group each).

    Returns: group -> split. Raises: ValueError for fewer than 3 groups.
    """
    unique = sorted(set(groups))
    if len(unique) < 3:
        raise ValueError(f"need at least 3 groups (source videos) to split into {'/'.join(SPLITS)}, got {len(unique)}")
    order = [unique[i] for i in np.random.default_rng(seed).permutation(len(unique))]
    n_valid = max(1, round(ratios[1] * len(unique)))
    n_test = max(1, round(ratios[2] * len(unique)))
    n_train = len(unique) - n_valid - n_test
    names = [SPLITS[0]] * n_train + [SPLITS[1]] * n_valid + [SPLITS[2]] * n_test
    return dict(zip(order, names))


@dataclass(frozen=True)
class Crop:
    path: Path  # relative to OUT, under all/
    label: str
    group: str


def list_crops(out: Path) -> list[Crop]:
    """Every crop of the finished videos in OUT. Raises: FileNotFoundError if ``frames`` has not run there."""
    if not (out / PROGRESS).is_file():
        raise FileNotFoundError(f"{out / PROGRESS}: not found; run `python -m deepshield.prepare frames ... --out {out}` first")
    reports = read_progress(out).values()
    return [Crop(Path(path), r.label, r.group) for r in sorted(reports, key=lambda r: r.video) for path in r.crops]


def link_or_copy(source: Path, target: Path) -> None:
    """Hard-link (no extra space, and OUT/all stays intact for another split), else copy."""
    try:
        os.link(source, target)
    except OSError:  # file systems without hard links, or OUT/all on another device
        shutil.copy2(source, target)


def write_folders(out: Path, root: Path, crops: list[Crop], splits: dict[str, str], overwrite: bool) -> list[Path]:
    """Place each crop in ROOT/{split}/{label}/. Returns: the new paths, relative to ROOT.

    Raises: ValueError if ROOT already holds split folders and not ``overwrite``.
    """
    existing = [root / name for name in SPLITS if (root / name).exists()]
    if existing and not overwrite:
        raise ValueError(f"{existing[0]}: already exists; pass --overwrite to replace {'/'.join(SPLITS)} in {root}")
    for folder in existing:
        shutil.rmtree(folder)  # a new split must not keep files of the old one (a leak across splits)
    for name in SPLITS:
        for label in CLASSES:
            (root / name / label).mkdir(parents=True, exist_ok=True)
    placed = []
    for crop in crops:
        target = Path(splits[crop.group]) / crop.label / crop.path.name
        link_or_copy(out / crop.path, root / target)
        placed.append(target)
    return placed


def write_manifest(path: Path, rows: list[tuple[str, str, str, str]]) -> None:
    """path,label,group,split rows (paths relative to the manifest's folder), written atomically."""
    with atomic_path(path) as partial, partial.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(("path", "label", "group", "split"))
        writer.writerows(rows)


def split_dataset(out: Path, seed: int, layout: str, manifest: Path, root: Path, overwrite: bool) -> Counter:
    """Split OUT's crops by group; write the folders (``layout`` "folders") and the manifest.

    Returns: crop counts by (split, label).
    """
    crops = list_crops(out)
    if not crops:
        raise ValueError(f"{out}: no face crops to split")
    splits = assign_splits([c.group for c in crops], seed)
    if layout == "folders":
        files = [root / p for p in write_folders(out, root, crops, splits, overwrite)]
    else:
        files = [out / c.path for c in crops]
    where = [os.path.relpath(f, manifest.parent.resolve()) for f in (p.resolve() for p in files)]
    write_manifest(manifest, [(w, c.label, c.group, splits[c.group]) for w, c in zip(where, crops)])
    return Counter((splits[c.group], c.label) for c in crops)


def print_split_summary(counts: Counter) -> None:
    for name in SPLITS:
        real, fake = counts[(name, "real")], counts[(name, "fake")]
        warning = "  <- a class is missing: train.py / evaluate.py need both" if not real or not fake else ""
        print(f"{name:>5}: {real} real + {fake} fake crops{warning}")


# ----------------------------------------------------------------------------------------------------
# Command line.


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m deepshield.prepare", description="Face-crop datasets from labelled videos.")
    commands = parser.add_subparsers(dest="command", required=True)
    frames = commands.add_parser("frames", help="sample frames of labelled videos and crop their faces into OUT/all/")
    frames.add_argument("videos", type=Path, metavar="VIDEOS", help="folder with metadata.json file(s), or with real/ and fake/")
    frames.add_argument("--out", type=Path, required=True, help="output root")
    frames.add_argument("--frames", type=int, default=30, help="evenly spaced frames per video (default 30)")
    frames.add_argument("--size", type=int, default=224, help="side of the saved crops in pixels (default 224)")
    frames.add_argument("--workers", type=int, default=usable_cores(), help=f"processes (default {usable_cores()}: one per usable core)")
    frames.add_argument("--face-model", type=Path, metavar="ONNX", help=FACE_MODEL_HELP + ", as at inference")
    split = commands.add_parser("split", help="split OUT's crops 70/15/15 by source video")
    split.add_argument("out", type=Path, metavar="OUT", help="the --out of `frames`")
    split.add_argument("--seed", type=int, default=0, help="shuffle seed (default 0)")
    split.add_argument("--layout", choices=("folders", "manifest"), default="folders",
                       help="folders: ROOT/{train,valid,test}/{real,fake}/ (default); manifest: only the CSV")
    split.add_argument("--root", type=Path, help="where the split folders go (default: OUT)")
    split.add_argument("--manifest", type=Path, metavar="CSV", help="path,label,group,split CSV (default: ROOT/manifest.csv)")
    split.add_argument("--overwrite", action="store_true", help="replace split folders from an earlier split")
    return parser


def run_frames(args: argparse.Namespace) -> int:
    for flag, value in (("--frames", args.frames), ("--size", args.size), ("--workers", args.workers)):
        if value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}")
    # The detector inference will use, so the training crops are the crops it will see.
    face_model = args.face_model or default_face_model()
    if face_model is not None and not Path(face_model).is_file():
        raise FileNotFoundError(f"{face_model}: YuNet face model not found")
    print(f"face detector: {face_model or 'Haar cascade'}", file=sys.stderr)
    videos = list_videos(args.videos)
    reports = prepare_frames(videos, args.out, args.frames, args.size, args.workers, str(face_model) if face_model else None)
    if not print_frames_summary(args.out, reports):
        raise ValueError(f"{args.videos}: no face crop could be made")
    print(f"next: python -m deepshield.prepare split {args.out}")
    return 0


def run_split(args: argparse.Namespace) -> int:
    root = args.root or args.out
    manifest = args.manifest or root / "manifest.csv"
    counts = split_dataset(args.out, args.seed, args.layout, manifest, root, args.overwrite)
    print_split_summary(counts)
    where = f"{root}/{{{','.join(SPLITS)}}}/{{real,fake}}/ and " if args.layout == "folders" else ""
    print(f"wrote {where}{manifest}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run_frames(args) if args.command == "frames" else run_split(args)
    except (FileNotFoundError, ValueError) as err:
        print(f"deepshield: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("deepshield: stopped; run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
