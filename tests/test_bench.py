import subprocess
import sys
from pathlib import Path

import cv2

from .conftest import REPO, noise_image, write_video


def test_bench_prints_every_stage(tmp_path: Path, tiny_weights: Path) -> None:
    image = tmp_path / "frame.jpg"
    cv2.imwrite(str(image), noise_image(270, 480))
    video = write_video(tmp_path / "clip.avi", 20)
    proc = subprocess.run(
        [sys.executable, "-m", "deepshield.bench", "--weights", str(tiny_weights), "--image", str(image),
         "--video", str(video), "--frames", "4", "--repeats", "2", "--video-repeats", "1"],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    for stage in ("decode", "face detection (haar)", "preprocess", "forward", "grad-cam", "end to end + grad-cam",
                  "predict_video, 4 frames"):
        assert any(line.startswith(stage) and "p50" in line and "p90" in line for line in proc.stdout.splitlines()), stage
