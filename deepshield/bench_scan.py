"""Scan throughput: ``python -m deepshield.bench_scan [--images DIR] [--n 1000] [--videos DIR] [--weights FILE]``.

Files per second over N images (default: 1,000 of ../shared/data/dfdc-faces/test, the first real and fake by
name in turn) and over the labelled clips (../shared/data/videos), for a plain loop over ``Detector.predict_image`` /
``predict_video``, ``scan --workers 1``, ``--workers 2`` and ``--ray local``. Each engine writes its own
tables in a temporary folder; start-up (model loading, worker and Ray start) is counted, as a user waits for it.
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from .detector import load_detector
from .media import sniff_media
from .scan import ScanJob, run_scan

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
FRAMES = 32  # per video, for every engine


def linked(files: list[Path], folder: Path) -> Path:
    """A folder of symbolic links to ``files``, so a scan walks exactly them."""
    folder.mkdir(parents=True)
    for i, path in enumerate(files):
        (folder / f"{i:05d}_{path.name}").symlink_to(path.resolve())
    return folder


def plain_loop(files: list[Path], kwargs: dict, frames: int) -> Callable[[], None]:
    def run() -> None:
        detector = load_detector(**kwargs)
        for path in files:
            if sniff_media(path) == "image":
                detector.predict_image(path)
            else:
                detector.predict_video(path, frames)

    return run


def timed(name: str, n: int, run: Callable[[], object]) -> None:
    start = time.perf_counter()
    run()
    seconds = time.perf_counter() - start
    print(f"  {name:<22} {seconds:7.1f} s   {n / seconds:6.2f} files/s", flush=True)


def bench(title: str, files: list[Path], kwargs: dict, ray: bool) -> None:
    print(f"{title}: {len(files)} files")
    with tempfile.TemporaryDirectory() as tmp:
        folder = linked(files, Path(tmp) / "in")
        timed("plain predict loop", len(files), plain_loop(files, kwargs, FRAMES))
        for workers in (1, 2):
            job = ScanJob([str(folder)], Path(tmp) / f"w{workers}.parquet", FRAMES, workers, None, kwargs)
            timed(f"scan --workers {workers}", len(files), lambda: run_scan(job))
        if ray:
            job = ScanJob([str(folder)], Path(tmp) / "ray.parquet", FRAMES, 0, "local", kwargs)
            timed("scan --ray local", len(files), lambda: run_scan(job))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m deepshield.bench_scan", description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=SHARED / "dfdc-faces" / "test")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--videos", type=Path, default=SHARED / "videos")
    parser.add_argument("--weights", type=Path)
    parser.add_argument("--no-ray", action="store_true", help="skip --ray local")
    args = parser.parse_args(argv)
    kwargs = {"weights": args.weights, "device": "cpu", "face_model": None, "backend": None}
    ray = importlib.util.find_spec("ray") is not None and not args.no_ray
    if importlib.util.find_spec("ray") is None:
        print("note: ray is not installed: --ray local is skipped (pip install 'ray[data]')")
    real, fake = sorted(args.images.glob("real/*.jpg")), sorted(args.images.glob("fake/*.jpg"))
    images = ([p for pair in zip(real, fake) for p in pair] if real and fake else sorted(args.images.rglob("*.jpg")))[: args.n]
    videos = sorted(args.videos.rglob("*.mp4"))
    if not images and not videos:
        raise SystemExit(f"nothing to time: no .jpg under {args.images}, no .mp4 under {args.videos}")
    if images:
        bench(f"images from {args.images}", images, kwargs, ray)
    if videos:
        bench(f"videos from {args.videos} (32 frames each)", videos, kwargs, ray)


if __name__ == "__main__":
    main()
