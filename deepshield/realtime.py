"""Realtime detection on a webcam or a video file: ``python -m deepshield.realtime``.

    python -m deepshield.realtime [--camera 0 | --video PATH] [--every 3] [--gradcam]
                                  [--no-display --output OUT.mp4] [--json OUT.jsonl] [--weights FILE]

The main thread reads, annotates and shows (or writes) every frame; every N-th frame goes to
``Detector.predict_image`` on one background thread, and the newest result is drawn on every frame until
the next one arrives. A camera, or a file played in a window at its own frame rate, never queues frames
for the model: a frame offered while the model is busy replaces the one waiting, so results stay fresh.
Without a window a file waits for the model instead, so exactly every N-th frame is analysed whatever the
machine's speed, and the output does not depend on it.

The drawing (bottom verdict banner, top P(real) bar, face boxes, fps) is ``deepshield.draw.annotate``,
the one the app's webcam tab uses.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np
import torch

from .detector import Detector, ImageResult, shown_label
from .draw import FpsMeter, annotate
from .cli import EXIT_BAD_INPUT, add_detector_args, check_threshold, detector_from_args, usable_cores
from .video import probe_video

WINDOW = "DeepShield (Q quits)"
DEFAULT_FPS = 30.0  # cameras and containers that do not report a frame rate

# ----------------------------------------------------------------------------------------------------
# Drawing: deepshield.draw.annotate, shared with the app's webcam tab.


def annotated(rgb: np.ndarray, result: ImageResult | None, threshold: float, fps: float | None) -> np.ndarray:
    """The frame as shown and written: the last result, its heatmap if it has one of the frame's size."""
    return annotate(rgb, result, threshold=threshold, fps=fps, use_overlay=True)


# ----------------------------------------------------------------------------------------------------
# Sources and the background model.


@dataclass(frozen=True)
class Source:
    name: str
    fps: float
    width: int
    height: int
    live: bool  # a camera: frames arrive in real time and may be dropped


def open_source(camera: int, video: Path | None) -> tuple[cv2.VideoCapture, Source]:
    """Open ``video`` if given, else webcam ``camera``.

    Raises: FileNotFoundError / ValueError for a missing or undecodable file or a camera that gives no frame.
    """
    if video is not None:
        info = probe_video(video)  # clear errors for missing, empty and undecodable files
        capture = cv2.VideoCapture(str(video))
        return capture, Source(str(video), info.fps or DEFAULT_FPS, info.width, info.height, live=False)
    capture = cv2.VideoCapture(camera)
    if not capture.isOpened() or not capture.grab():
        capture.release()
        raise ValueError(f"camera {camera}: cannot be opened or gives no frame (try another --camera index, or --video PATH)")
    width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    fps = capture.get(cv2.CAP_PROP_FPS)
    return capture, Source(f"camera {camera}", fps if 0 < fps < 1000 else DEFAULT_FPS, width, height, live=True)


@dataclass
class Prediction:
    frame: int  # index of the analysed frame
    result: ImageResult
    latency_s: float  # from the model starting on the frame to its result


class Analyser:
    """``predict_image`` on one background thread. A frame offered while another still waits for the model
    replaces it (the stale one is dropped, never queued); a caller that must not skip any polls with
    ``wait=True`` after each offer.

    Args:
        detector: anything with ``predict_image(rgb, explain=, threshold=)`` (``Detector`` is thread-safe).
    """

    def __init__(self, detector: Detector, explain: bool = False, threshold: float | None = None) -> None:
        self.detector, self.explain, self.threshold = detector, explain, threshold
        self.dropped = 0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="deepshield-model")
        self._running: Future[Prediction] | None = None
        self._waiting: tuple[int, np.ndarray] | None = None

    def offer(self, index: int, frame: np.ndarray) -> None:
        """Queue ``frame`` for the model; a frame still waiting is dropped (counted in ``dropped``)."""
        self.dropped += self._waiting is not None
        self._waiting = (index, frame)

    def poll(self, wait: bool = False) -> Prediction | None:
        """The prediction finished since the last call, if any (``wait``: wait for the running one), and
        start the waiting frame if the model is free. Re-raises an error from the model here."""
        done = None
        if self._running is not None and (wait or self._running.done()):
            running, self._running = self._running, None
            done = running.result()
        if self._running is None and self._waiting is not None:
            self._running = self._pool.submit(self._predict, *self._waiting)
            self._waiting = None
        return done

    def finish(self) -> list[Prediction]:
        """Wait for the running and the waiting frame. Returns: their predictions."""
        done = []
        while self._running is not None or self._waiting is not None:
            prediction = self.poll(wait=True)
            if prediction is not None:
                done.append(prediction)
        return done

    def close(self) -> None:
        """Release the thread; a frame still waiting is not analysed."""
        self._waiting = None
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _predict(self, index: int, frame: np.ndarray) -> Prediction:
        start = time.perf_counter()
        result = self.detector.predict_image(frame, explain=self.explain, threshold=self.threshold)
        return Prediction(index, result, time.perf_counter() - start)


# ----------------------------------------------------------------------------------------------------
# Outputs: annotated video, JSON lines, per-second summary.


class SecondSummary:
    """One line per second of the source: frames processed, their rate, the predictions finished."""

    def __init__(self, fps: float, stream: IO[str] | None = None) -> None:
        self.fps, self.stream = fps, stream or sys.stdout  # looked up now, so a redirect of sys.stdout applies
        self.second, self.frames = 0, 0
        self.probs: list[float] = []
        self.last: ImageResult | None = None
        self.started = time.perf_counter()

    def frame(self, index: int) -> None:
        second = int(index / self.fps)
        if second != self.second and self.frames:
            self.flush()
        self.second = second
        self.frames += 1

    def prediction(self, prediction: Prediction) -> None:
        self.probs.append(prediction.result.prob_fake)
        self.last = prediction.result

    def flush(self) -> None:
        """Print the current second's line and start the next."""
        now = time.perf_counter()
        rate = self.frames / max(1e-9, now - self.started)
        line = f"{self.second:5d}s  {self.frames:3d} frames  {rate:6.1f} fps  {len(self.probs):2d} analysed"
        if self.last is not None and self.probs:
            label = shown_label(self.last.label, self.last.uncertain)
            line += f"  mean P(fake) {np.mean(self.probs):.3f}  now: {label}, {len(self.last.faces)} face(s)"
        print(line, file=self.stream, flush=True)
        self.frames, self.probs, self.started = 0, [], now


def open_writer(path: Path, fps: float, width: int, height: int) -> cv2.VideoWriter:
    """An OpenCV writer for ``path`` (MJPG for .avi, else MPEG-4 Part 2). Raises: ValueError if OpenCV cannot."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fourcc = cv2.VideoWriter_fourcc(*("MJPG" if path.suffix.lower() == ".avi" else "mp4v"))
    writer = cv2.VideoWriter(str(path), fourcc, fps, (width, height))
    if not writer.isOpened():
        raise ValueError(f"{path}: OpenCV cannot write a video here (use .mp4 or .avi)")
    return writer


def prediction_record(prediction: Prediction, fps: float) -> dict[str, Any]:
    """One JSON line: frame index, time, latency and the ImageResult's fields."""
    return {"frame": prediction.frame, "time_s": round(prediction.frame / fps, 3),
            "latency_ms": round(1000 * prediction.latency_s, 1), **prediction.result.to_dict()}


@dataclass
class Options:
    every: int = 3
    gradcam: bool = False
    threshold: float | None = None
    show: bool = True
    output: Path | None = None
    json: Path | None = None
    max_frames: int | None = None


@dataclass
class Totals:
    frames: int = 0
    analysed: int = 0
    dropped: int = 0
    seconds: float = 0.0
    latency_s: float = 0.0  # summed over the analysed frames
    stopped: bool = False  # by the user (Q, window closed, Ctrl-C)


class Recorder:
    """Where frames and predictions go: the window, the output video, the JSON lines, the summary."""

    def __init__(self, source: Source, options: Options) -> None:
        self.source, self.show = source, options.show
        # Opened now so a bad path fails before any work; reopened if frames arrive at another size than the
        # container says (OpenCV auto-rotates phone videos), which a writer would otherwise silently drop.
        self.output, self.size = options.output, (source.width, source.height)
        self.writer = open_writer(options.output, source.fps, *self.size) if options.output else None
        self.log = options.json.open("w") if options.json else None
        self.summary = None if options.show else SecondSummary(source.fps)
        self.totals = Totals()
        self.start = time.perf_counter()

    def prediction(self, prediction: Prediction) -> None:
        self.totals.analysed += 1
        self.totals.latency_s += prediction.latency_s
        if self.log:
            self.log.write(json.dumps(prediction_record(prediction, self.source.fps)) + "\n")
        if self.summary:
            self.summary.prediction(prediction)

    def frame(self, index: int, bgr: np.ndarray) -> bool:
        """Write / show one annotated frame. Returns False when the user asks to stop."""
        self.totals.frames += 1
        if self.summary:
            self.summary.frame(index)
        if self.writer:
            if (bgr.shape[1], bgr.shape[0]) != self.size and self.totals.frames == 1:
                self.writer.release()
                self.size = (bgr.shape[1], bgr.shape[0])
                self.writer = open_writer(self.output, self.source.fps, *self.size)
            self.writer.write(bgr)
        if self.show:
            return show_frame(bgr, None if self.source.live else self.start + self.totals.frames / self.source.fps)
        return True

    def close(self) -> Totals:
        self.totals.seconds = time.perf_counter() - self.start
        if self.summary and self.summary.frames:
            self.summary.flush()
        if self.writer:
            self.writer.release()
        if self.log:
            self.log.close()
        if self.show:
            cv2.destroyAllWindows()
        return self.totals


# ----------------------------------------------------------------------------------------------------
# The loop.


def run(detector: Detector, capture: cv2.VideoCapture, source: Source, options: Options) -> Totals:
    """Read every frame, analyse every N-th in the background, annotate and show / write every frame."""
    threshold = detector.meta.threshold if options.threshold is None else options.threshold
    recorder = Recorder(source, options)
    analyser = Analyser(detector, options.gradcam, options.threshold)
    meter, shown, index = FpsMeter(), None, 0
    realtime = source.live or options.show  # frames come at their own pace: never wait for the model
    try:
        while options.max_frames is None or index < options.max_frames:
            ok, bgr = capture.read()
            if not ok or bgr is None:
                break
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            due = index % options.every == 0
            if due:
                analyser.offer(index, rgb)
            # A file without a window waits here for the previous analysis, so every N-th frame is analysed.
            done = analyser.poll(wait=due and not realtime)
            if done is not None:
                shown = done
                recorder.prediction(done)
            out = annotated(rgb, shown.result if shown else None, threshold, meter.tick())
            if not recorder.frame(index, cv2.cvtColor(out, cv2.COLOR_RGB2BGR)):
                recorder.totals.stopped = True
                break
            index += 1
        elapsed = time.perf_counter() - recorder.start
        for done in analyser.finish():
            recorder.prediction(done)
    except KeyboardInterrupt:
        elapsed, recorder.totals.stopped = time.perf_counter() - recorder.start, True
    finally:
        analyser.close()
        capture.release()
        totals = recorder.close()
    totals.seconds, totals.dropped = elapsed, analyser.dropped
    return totals


def show_frame(bgr: np.ndarray, due: float | None) -> bool:
    """Show a frame, holding it until ``due`` (a file plays at its own rate). Returns False to stop (Q or
    the window closed)."""
    cv2.imshow(WINDOW, bgr)
    wait_ms = 1 if due is None else max(1, int(round(1000 * (due - time.perf_counter()))))
    key = cv2.waitKey(wait_ms) & 0xFF
    return key not in (ord("q"), ord("Q"), 27) and cv2.getWindowProperty(WINDOW, cv2.WND_PROP_VISIBLE) >= 1


# ----------------------------------------------------------------------------------------------------
# Command line.


def display_available() -> bool:
    """Whether a window can be opened: on Linux only with an X11 or Wayland display."""
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def default_threads() -> int:
    """Model threads: all usable cores but one, which is left to decoding, drawing and encoding. On a
    shared 2-core machine, 2 torch threads made a B0 forward pass ~31 ms at the median but 680+ ms at
    p90 (the threads wait on each other when the other core is busy); 1 thread kept it at 31-35 ms."""
    return max(1, usable_cores() - 1)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m deepshield.realtime", description="Realtime deepfake detection on a webcam or a video file.")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--camera", type=int, default=0, metavar="INDEX", help="webcam index (default 0)")
    source.add_argument("--video", type=Path, metavar="PATH", help="a video file instead of the webcam")
    parser.add_argument("--every", type=int, default=3, metavar="N", help="analyse every N-th frame (default 3)")
    parser.add_argument("--gradcam", action="store_true", help="overlay the Grad-CAM heatmap")
    parser.add_argument("--no-display", action="store_true", help="no window: write --output and print a per-second summary")
    parser.add_argument("--output", type=Path, metavar="OUT.mp4", help="write the annotated video here (.mp4 or .avi)")
    parser.add_argument("--json", type=Path, metavar="OUT.jsonl", help="write one JSON line per analysed frame")
    parser.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames")
    parser.add_argument("--threads", type=int, default=default_threads(), help=f"model threads (default {default_threads()}: all cores but one)")
    add_detector_args(parser)
    return parser


def check_args(args: argparse.Namespace) -> bool:
    """Validate the flags and decide whether to show a window. Returns: show. Raises: ValueError."""
    for flag, value in (("--every", args.every), ("--threads", args.threads), ("--max-frames", args.max_frames or 1)):
        if value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}")
    check_threshold(args.threshold)
    show = not args.no_display and display_available()
    if not show and args.output is None:
        reason = "--no-display" if args.no_display else "no display available ($DISPLAY and $WAYLAND_DISPLAY are unset)"
        raise ValueError(f"{reason}: pass --output OUT.mp4 to write the annotated video")
    if not show and not args.no_display:
        print(f"deepshield: no display available: writing {args.output} instead", file=sys.stderr)
    return show


def final_line(source: Source, totals: Totals, args: argparse.Namespace) -> str:
    fps = totals.frames / max(1e-9, totals.seconds)
    behind = fps < 0.99 * source.fps and not source.live  # 1%: timer jitter of a paced playback
    line = (f"{Path(source.name).name}: {totals.frames} frames in {totals.seconds:.1f} s = {fps:.1f} fps "
            f"(source {source.fps:.2f} fps{', NOT keeping up' if behind else ''}), "
            f"{totals.analysed} analysed ({totals.analysed / max(1e-9, totals.seconds):.1f}/s")
    if totals.analysed:
        line += f", mean latency {1000 * totals.latency_s / totals.analysed:.0f} ms"
    line += f"), {totals.dropped} dropped as stale" + (", stopped by the user" if totals.stopped else "")
    return line + (f" -> {args.output}" if args.output else "")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        show = check_args(args)
        capture, source = open_source(args.camera, args.video)
    except (FileNotFoundError, ValueError) as err:
        print(f"deepshield: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    options = Options(args.every, args.gradcam, args.threshold, show, args.output, args.json, args.max_frames)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(args.threads)  # before loading: an ONNX Runtime session takes its threads then
        detector = detector_from_args(args)
        totals = run(detector, capture, source, options)
    except (FileNotFoundError, ValueError) as err:
        capture.release()
        print(f"deepshield: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    finally:
        torch.set_num_threads(threads)
    print(final_line(source, totals, args), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
