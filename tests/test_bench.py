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
         "--video", str(video), "--frames", "4", "--repeats", "2", "--video-repeats", "1", "--realtime-frames", "12"],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    for stage in ("decode", "face detection (haar)", "preprocess", "forward (torch)", "forward (onnx)", "grad-cam",
                  "end to end + grad-cam", "predict_video, 4 frames"):
        assert any(line.startswith(stage) and "p50" in line and "p90" in line for line in lines), stage
    assert sum(line.startswith("realtime --every 3: 12 frames at ") for line in lines) == 2
    table = lines[lines.index(next(line for line in lines if line.startswith("median"))):]
    assert table[0].split() == ["median", "torch", "onnx"]
    assert any(row.startswith("end to end ") and len(row.split()) == 5 for row in table)  # a number per backend


def test_scan_bench_prints_files_per_second(tmp_path: Path, tiny_weights: Path) -> None:
    for label in ("real", "fake"):
        (tmp_path / "imgs" / label).mkdir(parents=True)
        for i in range(2):
            cv2.imwrite(str(tmp_path / "imgs" / label / f"{i}.jpg"), noise_image(64, 64, seed=i))
    proc = subprocess.run(
        [sys.executable, "-m", "deepshield.bench_scan", "--weights", str(tiny_weights), "--images", str(tmp_path / "imgs"),
         "--videos", str(tmp_path / "none"), "--no-ray"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].endswith(": 4 files")
    for engine in ("plain predict loop", "scan --workers 1", "scan --workers 2"):
        assert any(line.strip().startswith(engine) and line.endswith("files/s") for line in lines), engine
