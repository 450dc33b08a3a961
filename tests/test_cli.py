import json
import subprocess
import sys
from pathlib import Path

import cv2

from .conftest import REPO, noise_image, write_video


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "deepshield", *args], capture_output=True, text=True, cwd=REPO, timeout=300)


def test_predict_mixed_inputs_json(tmp_path: Path, tiny_weights: Path) -> None:
    image = tmp_path / "photo.dat"  # extension says nothing: content decides
    cv2.imwrite(str(tmp_path / "p.png"), noise_image())
    (tmp_path / "p.png").rename(image)
    video = write_video(tmp_path / "clip.avi", 20)
    junk = tmp_path / "junk.jpg"
    junk.write_text("not an image")
    out = tmp_path / "cams"
    proc = _run("predict", str(image), str(junk), str(video), str(tmp_path / "missing.png"),
                "--json", "--frames", "4", "--weights", str(tiny_weights), "--gradcam", str(out), "--device", "cpu")
    assert proc.returncode == 2, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["path"] for r in records] == [str(image), str(junk), str(video), str(tmp_path / "missing.png")]
    assert records[0]["kind"] == "image" and records[0]["face_found"] is False
    assert abs(records[0]["prob_real"] + records[0]["prob_fake"] - 1) < 1e-9
    assert "neither an image" in records[1]["error"] and "junk.jpg" in proc.stderr
    assert records[2]["kind"] == "video" and records[2]["frames_analysed"] == 4 and len(records[2]["frames"]) == 4
    assert "no such file" in records[3]["error"]
    # The clip has no face, so only the image has something to explain.
    assert sorted(p.name for p in out.iterdir()) == ["photo.dat.gradcam.png"]


def test_predict_human_readable_ok(tmp_path: Path, tiny_weights: Path) -> None:
    cv2.imwrite(str(tmp_path / "a.jpg"), noise_image())
    proc = _run("predict", str(tmp_path / "a.jpg"), "--weights", str(tiny_weights))
    assert proc.returncode == 0, proc.stderr
    assert "a.jpg: " in proc.stdout and "P(fake)=" in proc.stdout and "no face found" in proc.stdout


def test_missing_weights_and_bad_frames_exit_2(tmp_path: Path, tiny_weights: Path) -> None:
    proc = _run("predict", "x.jpg", "--weights", str(tmp_path / "none.safetensors"))
    assert proc.returncode == 2 and "none.safetensors" in proc.stderr and "Traceback" not in proc.stderr
    proc = _run("predict", "x.mp4", "--frames", "64", "--weights", str(tiny_weights))
    assert proc.returncode == 2 and "--frames must be an integer from 4 to 32, got 64" in proc.stderr
