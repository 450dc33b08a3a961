"""``python -m deepshield scan``: the two tables, bad files as rows, resuming after Ctrl-C with no duplicate and no
missing row, worker processes and Ray giving the rows of the plain scan. CPU only, tiny weights, no network."""

from __future__ import annotations

import importlib.util
import math
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from deepshield.scan import FACE_COLUMNS, FILE_COLUMNS, ScanJob, faces_path, parts_dir, read_table, run_scan

from .conftest import EXAMPLE, REPO, noise_image, write_video


def scan_cli(*args: str | Path) -> subprocess.Popen:
    # SIGINT back to its default in the child, as in a terminal: a shell starts background jobs (a CI runner's,
    # say) with SIGINT ignored, and Python then installs no KeyboardInterrupt handler.
    return subprocess.Popen([sys.executable, "-m", "deepshield", "scan", *map(str, args)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def finished(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err


def rows(path: Path) -> dict[str, dict]:
    return {r["path"]: r for r in read_table(path, FILE_COLUMNS)}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Images (one with a face), a video, a text file, a 0-byte file and a truncated JPEG, in two levels."""
    root = tmp_path_factory.mktemp("archive")
    (root / "sub").mkdir()
    shutil.copy(EXAMPLE, root / "face.jpg")
    cv2.imwrite(str(root / "sub" / "noise.png"), noise_image(90, 120))
    write_video(root / "sub" / "clip.avi", 12)
    (root / "notes.txt").write_text("not media")
    (root / "empty.jpg").write_bytes(b"")
    (root / "truncated.jpg").write_bytes(EXAMPLE.read_bytes()[:2000])
    return root


@pytest.mark.parametrize("suffix, workers", [(".parquet", "0"), (".csv", "1")])
def test_a_mixed_folder_gives_a_row_per_file_and_a_row_per_face(mixed: Path, tiny_weights: Path, tmp_path: Path,
                                                                 suffix: str, workers: str) -> None:
    out = tmp_path / f"results{suffix}"
    code, stdout, stderr = finished(scan_cli(mixed, "--out", out, "--weights", tiny_weights, "--frames", "4",
                                             "--workers", workers))
    assert code == 0, stderr
    table = rows(out)
    assert set(table) == {str(p) for p in mixed.rglob("*") if p.is_file()}
    kinds = {Path(p).name: (r["kind"], bool(r["error"])) for p, r in table.items()}
    assert kinds == {"face.jpg": ("image", False), "noise.png": ("image", False), "clip.avi": ("video", False),
                     "notes.txt": ("skipped", True), "empty.jpg": ("skipped", True), "truncated.jpg": ("image", True)}
    face = table[str(mixed / "face.jpg")]
    assert face["label"] in ("Real", "Fake") and 0 <= face["prob_fake"] <= 1 and face["faces"] == 1 and face["frames"] == 1
    assert face["model"].startswith("tiny@64 sha256:")
    assert table[str(mixed / "sub" / "noise.png")]["label"] == "No face"
    assert math.isnan(table[str(mixed / "sub" / "noise.png")]["prob_fake"])
    assert table[str(mixed / "sub" / "clip.avi")]["frames"] == 4
    assert "truncated" in table[str(mixed / "truncated.jpg")]["error"]
    faces = list(read_table(faces_path(out), FACE_COLUMNS))
    assert [(Path(f["path"]).name, f["frame"]) for f in faces] == [("face.jpg", 0)]
    assert faces[0]["w"] > 100 and faces[0]["prob_fake"] == pytest.approx(face["prob_fake"])
    assert re.search(r"scanned 6 files \(0 done before\): \d real, \d fake, \d uncertain, 2 no face, 1 error, "
                     r"2 skipped -> ", stdout)
    assert "file/s" in stderr or "s/file" in stderr  # the progress bar
    again = finished(scan_cli(mixed, "--out", out, "--weights", tiny_weights, "--frames", "4", "--workers", workers))
    assert again[0] == 0 and "scanned 0 files (6 done before)" in again[1]
    assert {p: str(r) for p, r in rows(out).items()} == {p: str(r) for p, r in table.items()}  # str: NaN == NaN


def test_an_interrupted_scan_resumes_with_no_duplicate_and_no_missing_row(tiny_weights: Path, tmp_path: Path) -> None:
    archive = tmp_path / "many"
    archive.mkdir()
    for i in range(300):
        cv2.imwrite(str(archive / f"{i:03d}.jpg"), noise_image(160, 200, seed=i))
    out = tmp_path / "r.parquet"
    proc = scan_cli(archive, "--out", out, "--weights", tiny_weights, "--workers", "0", "--flush-every", "2")
    deadline = time.monotonic() + 120
    while not list(parts_dir(out).glob("*.files.parquet")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    code, _, stderr = finished(proc)
    assert code == 130 and "run the same command again" in stderr, stderr
    assert not out.exists()  # no merged table until the scan is complete
    saved = sum(len(list(read_table(p, FILE_COLUMNS))) for p in parts_dir(out).glob("*.files.parquet"))
    assert 2 <= saved < 300
    code, stdout, stderr = finished(scan_cli(archive, "--out", out, "--weights", tiny_weights, "--workers", "0"))
    assert code == 0, stderr
    assert f"scanned {300 - saved} files ({saved} done before)" in stdout
    paths = [r["path"] for r in read_table(out, FILE_COLUMNS)]
    assert len(paths) == len(set(paths)) == 300 and set(paths) == {str(p) for p in archive.iterdir()}


def test_a_bad_output_or_path_is_a_clear_error(tiny_weights: Path, tmp_path: Path) -> None:
    code, _, stderr = finished(scan_cli(tmp_path, "--out", tmp_path / "r.xlsx", "--weights", tiny_weights))
    assert code == 2 and "expected a .parquet or .csv file" in stderr and "Traceback" not in stderr
    code, _, stderr = finished(scan_cli(tmp_path / "nowhere", "--out", tmp_path / "r.csv", "--weights", tiny_weights))
    assert code == 2 and "nowhere: no such file or folder" in stderr


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="pip install 'ray[data]' (requirements-dev.txt)")
def test_ray_gives_the_rows_of_the_local_scan(mixed: Path, tiny_weights: Path, tmp_path: Path) -> None:
    import ray

    kwargs = {"weights": tiny_weights, "device": "cpu", "face_model": None, "backend": None}
    local = ScanJob([str(mixed)], tmp_path / "local.parquet", 4, 0, None, kwargs)
    on_ray = ScanJob([str(mixed)], tmp_path / "ray.parquet", 4, 0, "local", kwargs)
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        assert run_scan(on_ray) == run_scan(local)  # the same summary
    finally:
        ray.shutdown()
    a, b = rows(local.out), rows(on_ray.out)
    assert set(a) == set(b)
    for path in a:
        for name in FILE_COLUMNS:
            if name == "prob_fake":
                assert np.isclose(a[path][name], b[path][name], atol=1e-5, equal_nan=True), path
            else:
                assert a[path][name] == b[path][name], (path, name)
    assert len(list(read_table(faces_path(on_ray.out), FACE_COLUMNS))) == len(list(read_table(faces_path(local.out), FACE_COLUMNS)))
    assert not list(parts_dir(on_ray.out).glob("ray-*"))  # Ray's own copy is removed once read
