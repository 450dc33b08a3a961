import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from deepshield import realtime as R
from deepshield.detector import Detector, FaceResult, ImageResult
from deepshield.draw import annotate
from deepshield.video import probe_video

from .conftest import REPO, VIDEOS, needs_shared, noise_image, write_video


def _result(prob_fake: float, faces: list[FaceResult] | None = None, uncertain: bool = False) -> ImageResult:
    fake = prob_fake >= 0.5
    return ImageResult(label="Fake" if fake else "Real", confidence=prob_fake if fake else 1 - prob_fake,
                       prob_real=1 - prob_fake, prob_fake=prob_fake, uncertain=uncertain,
                       face_found=faces is not None, faces=faces or [])


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "deepshield.realtime", *args], capture_output=True, text=True, cwd=REPO, timeout=300)


def test_heatmap_is_drawn_only_where_it_is_hot(detector: Detector) -> None:
    frame = noise_image(120, 160)
    result = _result(0.9, [FaceResult((60, 40, 30, 30), 5.0, 0.9)])
    result.heatmap = np.zeros((120, 160), np.float32)
    result.heatmap[50:60, 70:80] = np.linspace(0.1, 1.0, 10)[None]
    plain = annotate(frame, result, threshold=0.5, fps=12.0)
    changed = np.argwhere((plain != R.annotated(frame, result, 0.5, 12.0)).any(axis=2))
    assert changed.min(axis=0).tolist() == [50, 70] and changed.max(axis=0).tolist() == [59, 79]
    assert (frame == noise_image(120, 160)).all()  # the frame the model got is not drawn on
    result.heatmap = np.ones((10, 10), np.float32)  # not this frame's size: not drawn
    assert (R.annotated(frame, result, 0.5, 12.0) == plain).all()


class SlowDetector:
    """Stands in for Detector.predict_image: takes ``delay`` seconds, remembers which frames it saw."""

    def __init__(self, delay: float) -> None:
        self.delay, self.seen, self.lock = delay, [], threading.Lock()

    def predict_image(self, frame: np.ndarray, explain: bool = False, threshold: float | None = None) -> ImageResult:
        time.sleep(self.delay)
        with self.lock:
            self.seen.append(int(frame[0, 0, 0]))
        return _result(0.5)


def test_analyser_drops_stale_frames_for_a_live_source() -> None:
    model, got = SlowDetector(0.05), []
    analyser = R.Analyser(model)  # type: ignore[arg-type]
    for index in range(40):  # frames every 5 ms, ten times faster than the model
        analyser.offer(index, np.full((4, 4, 3), index, np.uint8))
        got += [p.frame for p in [analyser.poll()] if p is not None]
        time.sleep(0.005)
    got += [p.frame for p in analyser.finish()]
    analyser.close()
    assert analyser.dropped > 20 and len(got) + analyser.dropped == 40
    assert got == sorted(got) and got[-1] == 39  # the newest frame is always the one analysed next
    assert model.seen == got


def test_analyser_waits_for_a_file_so_that_no_frame_is_skipped() -> None:
    model = SlowDetector(0.01)
    analyser = R.Analyser(model)  # type: ignore[arg-type]
    got = []
    for index in range(0, 30, 3):
        analyser.offer(index, np.full((4, 4, 3), index, np.uint8))
        got += [p.frame for p in [analyser.poll(wait=True)] if p is not None]
    got += [p.frame for p in analyser.finish()]
    analyser.close()
    assert got == list(range(0, 30, 3)) and analyser.dropped == 0


def test_video_without_display_writes_every_frame_and_the_predictions(tmp_path: Path, tiny_weights: Path) -> None:
    clip = write_video(tmp_path / "clip.avi", 25, size=(160, 96), fps=10.0)
    out, preds = tmp_path / "out" / "annotated.mp4", tmp_path / "preds.jsonl"
    proc = _run("--video", str(clip), "--no-display", "--output", str(out), "--json", str(preds), "--every", "3",
                "--weights", str(tiny_weights), "--device", "cpu", "--gradcam")
    assert proc.returncode == 0, proc.stderr
    info = probe_video(out)
    assert (info.frame_count, info.width, info.height) == (25, 160, 96) and info.fps == pytest.approx(10.0)
    records = [json.loads(line) for line in preds.read_text().splitlines()]
    assert [r["frame"] for r in records] == list(range(0, 25, 3))  # a file never skips an analysis
    assert records[1]["time_s"] == pytest.approx(0.3) and abs(records[1]["prob_real"] + records[1]["prob_fake"] - 1) < 1e-9
    seconds = [line for line in proc.stdout.splitlines() if line.lstrip()[:2] in ("0s", "1s", "2s")]
    assert len(seconds) == 3 and "10 frames" in seconds[0] and "3 analysed" in seconds[0]  # 0, 3, 6; 9 finishes in second 1
    assert "clip.avi: 25 frames" in proc.stdout and "9 analysed" in proc.stdout


def test_bad_sources_and_missing_display_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_text("not a video")
    out = str(tmp_path / "o.mp4")
    cases = [
        (["--video", str(tmp_path / "missing.mp4"), "--no-display", "--output", out], "missing.mp4: no such file"),
        (["--video", str(junk), "--no-display", "--output", out], "junk.mp4: not a decodable video"),
        (["--camera", "97", "--no-display", "--output", out], "camera 97: cannot be opened"),
        (["--video", str(junk), "--no-display"], "--no-display: pass --output"),
        (["--video", str(junk), "--every", "0", "--output", out], "--every must be >= 1"),
    ]
    for argv, message in cases:
        assert R.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("deepshield: ") and message in err, err
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    assert R.main(["--video", str(junk)]) == 2
    assert "no display available ($DISPLAY and $WAYLAND_DISPLAY are unset): pass --output" in capsys.readouterr().err
    clip = write_video(tmp_path / "clip.avi", 3)
    assert R.main(["--video", str(clip), "--output", out, "--weights", str(tmp_path / "none.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "no display available: writing" in err  # without a display, --output is the way out
    assert "none.safetensors" in err


def test_window_plays_a_file_until_q(tmp_path: Path, tiny_weights: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    shown: list[tuple[int, int, int]] = []
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.setattr(R.cv2, "imshow", lambda name, image: shown.append(image.shape))
    monkeypatch.setattr(R.cv2, "waitKey", lambda ms: ord("q") if len(shown) == 5 else -1)
    monkeypatch.setattr(R.cv2, "getWindowProperty", lambda name, prop: 1.0)
    monkeypatch.setattr(R.cv2, "destroyAllWindows", lambda: None)
    clip = write_video(tmp_path / "clip.avi", 20, fps=200.0)
    assert R.main(["--video", str(clip), "--weights", str(tiny_weights), "--output", str(tmp_path / "o.mp4")]) == 0
    assert shown == [(64, 96, 3)] * 5 and probe_video(tmp_path / "o.mp4").frame_count == 5
    out = capsys.readouterr().out
    assert "5 frames" in out and "stopped by the user" in out


@needs_shared(VIDEOS)
def test_real_clip_finds_the_face(tmp_path: Path, tiny_weights: Path) -> None:
    clip = VIDEOS / "real" / "ffpp_youtube_c23_004.mp4"  # 720p
    preds = tmp_path / "preds.jsonl"
    argv = ["--video", str(clip), "--no-display", "--output", str(tmp_path / "o.mp4"), "--json", str(preds),
            "--max-frames", "10", "--weights", str(tiny_weights)]
    assert R.main(argv) == 0
    records = [json.loads(line) for line in preds.read_text().splitlines()]
    assert [r["frame"] for r in records] == [0, 3, 6, 9]
    assert all(r["face_found"] and r["faces"] for r in records)
    assert probe_video(tmp_path / "o.mp4").frame_count == 10
