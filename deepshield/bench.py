"""Speed benchmark: ``python -m deepshield.bench [--weights FILE] [--image PATH] [--video PATH]``.

Prints the median and p90 per stage for one image (decode, face detection, preprocess, forward,
Grad-CAM, end to end with and without Grad-CAM) and the total for ``predict_video`` on a 1080p clip
(by default the first 1080p clip in ../shared/data/videos)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

from .cli import add_detector_args
from .detector import Detector, load_detector, resolve_device
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


def report(name: str, ms: np.ndarray) -> None:
    print(f"{name:<28} p50 {np.median(ms):8.1f} ms   p90 {np.percentile(ms, 90):8.1f} ms   (n={len(ms)})")


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


def make_detector(weights: Path | None, device: str | None, face_model: Path | None = None) -> Detector:
    """The shipped detector, or an untrained EfficientNet-Lite0 at 224 px when no weights exist (timing is the same)."""
    try:
        return load_detector(weights, device=device, face_model=face_model)
    except FileNotFoundError as err:
        if weights is not None:
            raise
        print(f"note: {str(err).splitlines()[0]} -> timing an untrained {DEFAULT_ARCH} instead")
    # An untrained network's activations shrink into denormal floats, which are very slow on CPU.
    torch.set_flush_denormal(True)
    model = DeepfakeCNN(DEFAULT_ARCH)
    faces = FaceDetector(face_model if face_model is not None else default_face_model())
    return Detector(model, ModelMeta(DEFAULT_ARCH, ARCHS[DEFAULT_ARCH].img_size), faces, resolve_device(device))


def bench_image(detector: Detector, data: bytes, repeats: int) -> None:
    rgb = load_image(data)
    faces = detector.faces.detect(rgb)
    print(f"image {rgb.shape[1]}x{rgb.shape[0]}, {len(faces)} face(s) found by {detector.faces.name}")
    _, crops, windows = detector.recipe.crops(rgb, faces=faces[:1])
    batch = detector.preprocess(crops)

    def forward() -> None:
        with torch.inference_mode():
            detector.model(batch)

    def cam() -> None:
        logits, signed = grad_cam(detector.model, batch, detector.cam_layer)
        heat = paste_map(class_maps(signed, logits > 0).cpu().numpy()[0], windows[0], rgb.shape[:2])
        overlay(rgb, heat)

    report("decode", timings(lambda: load_image(data), repeats))
    report(f"face detection ({detector.faces.name})", timings(lambda: detector.faces.detect(rgb), repeats))
    report("preprocess (crop+tensor)", timings(lambda: detector.preprocess(detector.recipe.crops(rgb, faces=faces[:1])[1]), repeats))
    report("forward", timings(forward, repeats))
    report("grad-cam (fwd+bwd+overlay)", timings(cam, repeats))
    report("end to end", timings(lambda: detector.predict_image(data), repeats))
    report("end to end + grad-cam", timings(lambda: detector.predict_image(data, explain=True), repeats))


def bench_video(detector: Detector, video: Path, n_frames: int, repeats: int) -> None:
    capture = cv2.VideoCapture(str(video))
    desc = f"{int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))}x{int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))}, " \
           f"{int(capture.get(cv2.CAP_PROP_FRAME_COUNT))} frames"
    capture.release()
    result = detector.predict_video(video, n_frames)
    print(f"video {video.name} ({desc}): {result.frames_with_face}/{result.frames_analysed} frames with a face")
    report(f"predict_video, {n_frames} frames", timings(lambda: detector.predict_video(video, n_frames), repeats, warmup=0))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m deepshield.bench", description=__doc__.splitlines()[0])
    add_detector_args(parser, threshold=False)
    parser.add_argument("--image", type=Path, help="image to time (default: frame 100 of the video)")
    parser.add_argument("--video", type=Path, help="video to time (default: first 1080p clip in ../shared)")
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--video-repeats", type=int, default=3)
    args = parser.parse_args(argv)
    detector = make_detector(args.weights, args.device, args.face_model)
    video = args.video or first_1080p_clip()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {detector.device}, arch {detector.meta.arch} @ {detector.meta.img_size} px")
    if args.image is None and video is None:
        raise SystemExit("no image or video to time: pass --image / --video (../shared/data/videos is absent)")
    data = args.image.read_bytes() if args.image else frame_as_jpeg(video)
    bench_image(detector, data, args.repeats)
    if video is not None:
        bench_video(detector, video, args.frames, args.video_repeats)


if __name__ == "__main__":
    main()
