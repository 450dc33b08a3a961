"""Speed benchmark: ``python -m deepshield.bench [--weights FILE] [--image PATH] [--video PATH] [--backends torch,onnx]``.

For each scoring backend (PyTorch, and ONNX Runtime when it is installed), in one run: the median and p90 per
stage for one image (decode, face detection, preprocess, forward, Grad-CAM, end to end with and without
Grad-CAM), the total for ``predict_video`` on a 1080p clip (by default the first 1080p clip in
../shared/data/videos) and the realtime loop's frame rate on that clip (``--every 3``, no window); then the
medians side by side."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

from .cli import add_detector_args
from .detector import Detector, load_detector, resolve_device
from .export import BACKENDS, OnnxScorer, onnx_bytes
from .faces import FaceDetector, default_face_model
from .gradcam import class_maps, grad_cam, overlay, paste_map
from .media import load_image
from .model import ARCHS, DEFAULT_ARCH, DeepfakeCNN
from .weights import ModelMeta

SHARED_VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"


def timings(fn: Callable[[], object], repeats: int, warmup: int = 2) -> np.ndarray:
    """Wall-clock milliseconds of ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000.0)
    return np.array(out)


def report(name: str, ms: np.ndarray, medians: dict[str, float] | None = None) -> None:
    """Print one stage's line; keep its median in ``medians``."""
    print(f"{name:<28} p50 {np.median(ms):8.1f} ms   p90 {np.percentile(ms, 90):8.1f} ms   (n={len(ms)})")
    if medians is not None:
        medians[name] = float(np.median(ms))


def first_1080p_clip() -> Path | None:
    for path in sorted(SHARED_VIDEOS.glob("*/*.mp4")):
        capture = cv2.VideoCapture(str(path))
        size = (capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        capture.release()
        if size == (1920.0, 1080.0):
            return path
    return None


def frame_as_jpeg(video: Path, index: int = 100) -> bytes:
    capture = cv2.VideoCapture(str(video))
    capture.set(cv2.CAP_PROP_POS_FRAMES, index)
    ok, frame = capture.read()
    capture.release()
    if not ok:
        raise ValueError(f"{video}: could not read frame {index}")
    return cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes()


def make_detector(weights: Path | None, device: str | None, face_model: Path | None = None,
                  backend: str = "torch") -> Detector:
    """The shipped detector, or an untrained EfficientNet-Lite0 at 224 px when no weights exist (timing is the same)."""
    try:
        return load_detector(weights, device=device, face_model=face_model, backend=backend)
    except FileNotFoundError as err:
        if weights is not None:
            raise
        print(f"note: {str(err).splitlines()[0]} -> timing an untrained {DEFAULT_ARCH} instead")
    # An untrained network's activations shrink into denormal floats, which are very slow on CPU.
    torch.set_flush_denormal(True)
    model = DeepfakeCNN(DEFAULT_ARCH)
    faces = FaceDetector(face_model if face_model is not None else default_face_model())
    meta = ModelMeta(DEFAULT_ARCH, ARCHS[DEFAULT_ARCH].img_size)
    scorer = OnnxScorer(onnx_bytes(model, meta)) if backend == "onnx" else None
    return Detector(model, meta, faces, resolve_device("cpu" if scorer else device), scorer=scorer)


def bench_image(detector: Detector, data: bytes, repeats: int) -> dict[str, float]:
    """Time each stage on one image. Returns: the medians (ms) by stage."""
    rgb = load_image(data)
    faces = detector.faces.detect(rgb)
    print(f"image {rgb.shape[1]}x{rgb.shape[0]}, {len(faces)} face(s) found by {detector.faces.name}")
    _, crops, windows = detector.recipe.crops(rgb, faces=faces[:1])
    batch = detector.preprocess(crops)

    def forward() -> None:
        if detector.scorer is not None:
            detector.scorer(batch.cpu().numpy())
            return
        with torch.inference_mode():
            detector.model(batch)

    def cam() -> None:
        logits, signed = grad_cam(detector.model, batch, detector.cam_layer)
        heat = paste_map(class_maps(signed, logits > 0).cpu().numpy()[0], windows[0], rgb.shape[:2])
        overlay(rgb, heat)

    medians: dict[str, float] = {}
    report("decode", timings(lambda: load_image(data), repeats), medians)
    report(f"face detection ({detector.faces.name})", timings(lambda: detector.faces.detect(rgb), repeats), medians)
    report("preprocess (crop+tensor)", timings(lambda: detector.preprocess(detector.recipe.crops(rgb, faces=faces[:1])[1]), repeats), medians)
    report(f"forward ({detector.backend})", timings(forward, repeats), medians)
    report("grad-cam (fwd+bwd+overlay)", timings(cam, repeats), medians)
    report("end to end", timings(lambda: detector.predict_image(data), repeats), medians)
    report("end to end + grad-cam", timings(lambda: detector.predict_image(data, explain=True), repeats), medians)
    return medians


def bench_video(detector: Detector, video: Path, n_frames: int, repeats: int) -> dict[str, float]:
    """Time ``predict_video``. Returns: its median (ms)."""
    capture = cv2.VideoCapture(str(video))
    desc = f"{int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))}x{int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))}, " \
           f"{int(capture.get(cv2.CAP_PROP_FRAME_COUNT))} frames"
    capture.release()
    result = detector.predict_video(video, n_frames)
    print(f"video {video.name} ({desc}): {result.frames_with_face}/{result.frames_analysed} frames with a face")
    medians: dict[str, float] = {}
    report(f"predict_video, {n_frames} frames", timings(lambda: detector.predict_video(video, n_frames), repeats, warmup=0),
           medians)
    return medians


def bench_realtime(detector: Detector, video: Path, every: int, max_frames: int) -> dict[str, float]:
    """The realtime loop on ``video`` without a window or output (every frame read, converted and annotated;
    every ``every``-th analysed and waited for, as a file without a window is). Returns: its frames per second."""
    from .realtime import Options, open_source, run

    capture, source = open_source(0, video)
    with contextlib.redirect_stdout(io.StringIO()):  # its per-second lines
        totals = run(detector, capture, source, Options(every=every, show=False, max_frames=max_frames))
    fps = totals.frames / max(1e-9, totals.seconds)
    print(f"realtime --every {every}: {totals.frames} frames at {fps:.1f} fps end to end (source {source.fps:.0f} fps), "
          f"{totals.analysed} analysed, mean latency {1000 * totals.latency_s / max(1, totals.analysed):.0f} ms")
    return {f"realtime --every {every} (fps)": fps}


def side_by_side(results: dict[str, dict[str, float]]) -> None:
    """One row per stage, one column per backend (medians; fps for realtime)."""
    backends = list(results)
    stages = list(dict.fromkeys(k.replace(" (onnx)", " (torch)") for r in results.values() for k in r))
    print("\n" + f"{'median':<32}" + "".join(f"{b:>12}" for b in backends))
    for stage in stages:
        cells = [results[b].get(stage, results[b].get(stage.replace(" (torch)", f" ({b})"))) for b in backends]
        name = stage.replace(" (torch)", "")
        print(f"{name:<32}" + "".join(f"{c:>12.1f}" if c is not None else f"{'-':>12}" for c in cells))


def available_backends(requested: str) -> list[str]:
    """The backends asked for that can run here; says which are skipped."""
    backends = [b.strip() for b in requested.split(",") if b.strip()]
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise SystemExit(f"unknown backend {unknown[0]!r}; expected some of {list(BACKENDS)}")
    if "onnx" in backends and importlib.util.find_spec("onnxruntime") is None:
        print("note: onnxruntime is not installed: timing torch only (pip install onnx onnxruntime)")
        backends.remove("onnx")
    return backends


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m deepshield.bench", description=__doc__.splitlines()[0])
    add_detector_args(parser, threshold=False)
    parser.add_argument("--image", type=Path, help="image to time (default: frame 100 of the video)")
    parser.add_argument("--video", type=Path, help="video to time (default: first 1080p clip in ../shared)")
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--video-repeats", type=int, default=3)
    parser.add_argument("--backends", default="torch,onnx", help="scoring backends to time, side by side "
                        "(default torch,onnx; onnx is skipped when onnxruntime is missing)")
    parser.add_argument("--realtime-frames", type=int, default=150, help="frames of the realtime loop (0: skip it)")
    args = parser.parse_args(argv)
    video = args.video or first_1080p_clip()
    if args.image is None and video is None:
        raise SystemExit("no image or video to time: pass --image / --video (../shared/data/videos is absent)")
    data = args.image.read_bytes() if args.image else frame_as_jpeg(video)
    results = {}
    for backend in available_backends(args.backend or args.backends):
        detector = make_detector(args.weights, args.device, args.face_model, backend)
        print(f"\n== backend {backend}: torch {torch.__version__}, {torch.get_num_threads()} threads, device "
              f"{detector.device}, arch {detector.meta.arch} @ {detector.meta.img_size} px")
        results[backend] = bench_image(detector, data, args.repeats)
        if video is not None:
            results[backend].update(bench_video(detector, video, args.frames, args.video_repeats))
            if args.realtime_frames:
                results[backend].update(bench_realtime(detector, video, 3, args.realtime_frames))
    side_by_side(results)


if __name__ == "__main__":
    main()
