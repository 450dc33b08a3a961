import csv
import json
from pathlib import Path

import cv2
import pytest

from deepshield import prepare as P
from deepshield.data import list_split
from deepshield.faces import Face

from .conftest import VIDEOS, FixedFaces, needs_shared, write_video

BOX = Face(20, 10, 40, 40, 1.0)  # crop of 48 px, inside the 96x64 synthetic frames


@pytest.fixture
def fixed_faces(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every frame of the synthetic videos has one 'face' (in-process runs only, i.e. --workers 1)."""
    monkeypatch.setattr(P, "FaceDetector", lambda model=None: FixedFaces([BOX]))


def dfdc_folder(folder: Path, n_originals: int = 6, fakes_per_original: int = 2) -> Path:
    """Synthetic DFDC-style folder: originals r0.., each with fakes; one listed video is missing."""
    folder.mkdir(parents=True, exist_ok=True)
    meta: dict[str, dict[str, object]] = {}
    for i in range(n_originals):
        write_video(folder / f"r{i}.avi", 8)
        meta[f"r{i}.avi"] = {"label": "REAL", "split": "train", "original": None}
        for j in range(fakes_per_original):
            write_video(folder / f"f{i}_{j}.avi", 8)
            meta[f"f{i}_{j}.avi"] = {"label": "FAKE", "split": "train", "original": f"r{i}.avi"}
    (folder / "metadata.json").write_text(json.dumps(meta))
    return folder


def test_read_metadata_labels_and_groups(tmp_path: Path) -> None:
    path = tmp_path / "metadata.json"
    path.write_text(json.dumps({"a.mp4": {"label": "REAL", "original": None}, "b.mp4": {"label": "FAKE", "original": "a.mp4"},
                                "c.mp4": {"label": "FAKE"}}))
    videos = {v.path.name: v for v in P.read_metadata(path)}
    assert videos["a.mp4"].label == "real" and videos["a.mp4"].group == "a.mp4"
    assert videos["b.mp4"].label == "fake" and videos["b.mp4"].group == "a.mp4"
    assert videos["c.mp4"].group == "c.mp4"  # a fake without a known original is its own group
    assert videos["b.mp4"].path == tmp_path / "b.mp4"
    path.write_text(json.dumps({"x.mp4": {"label": "MAYBE"}}))
    with pytest.raises(ValueError, match=r"metadata.json: x.mp4: label must be REAL or FAKE"):
        P.read_metadata(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        P.read_metadata(path)


def test_list_videos_from_class_folders_and_errors(tmp_path: Path) -> None:
    for label in ("real", "fake"):
        (tmp_path / label).mkdir()
    write_video(tmp_path / "real" / "a.avi", 2)
    write_video(tmp_path / "fake" / "b.avi", 2)
    (tmp_path / "fake" / "notes.txt").write_text("ignored")
    videos = P.list_videos(tmp_path)
    assert [(v.path.name, v.label, v.group) for v in videos] == [("a.avi", "real", "a.avi"), ("b.avi", "fake", "b.avi")]
    write_video(tmp_path / "fake" / "a.avi", 2)  # same name as a real one: crop names would collide
    with pytest.raises(ValueError, match="more than once: a"):
        P.list_videos(tmp_path)
    with pytest.raises(FileNotFoundError, match="no metadata.json and no real/"):
        P.list_videos(tmp_path / "real")


def test_frames_writes_crops_and_reports_bad_files(tmp_path: Path, fixed_faces: None, capsys: pytest.CaptureFixture[str]) -> None:
    videos = dfdc_folder(tmp_path / "videos", n_originals=2, fakes_per_original=1)
    (videos / "junk.avi").write_text("not a video")
    meta = json.loads((videos / "metadata.json").read_text())
    meta.update({"junk.avi": {"label": "REAL"}, "gone.avi": {"label": "REAL"}})
    (videos / "metadata.json").write_text(json.dumps(meta))
    out = tmp_path / "out"
    assert P.main(["frames", str(videos), "--out", str(out), "--frames", "3", "--size", "32", "--workers", "1"]) == 0
    crops = sorted(p.relative_to(out).as_posix() for p in (out / "all").rglob("*") if p.is_file())
    assert crops == sorted(f"all/{c}/{v}_f{i:05d}.jpg" for c, v in [("real", "r0"), ("real", "r1"), ("fake", "f0_0"), ("fake", "f1_0")] for i in (0, 4, 7))
    assert cv2.imread(str(out / crops[0])).shape == (32, 32, 3)
    err = capsys.readouterr().err
    assert "junk.avi" in err and "not a decodable video" in err and "gone.avi" in err and "no such file" in err
    statuses = {r.video: r.status for r in map(lambda line: P.VideoReport(**json.loads(line)), (out / P.PROGRESS).read_text().splitlines())}
    assert statuses == {"r0.avi": "ok", "r1.avi": "ok", "f0_0.avi": "ok", "f1_0.avi": "ok", "junk.avi": "failed", "gone.avi": "failed"}


def test_frames_resumes_without_redoing_finished_videos(tmp_path: Path, fixed_faces: None, monkeypatch: pytest.MonkeyPatch) -> None:
    videos = dfdc_folder(tmp_path / "videos", n_originals=2, fakes_per_original=1)
    out = tmp_path / "out"
    args = ["frames", str(videos), "--out", str(out), "--frames", "3", "--size", "32", "--workers", "1"]
    done: list[str] = []
    real_crop = P.crop_video

    def stop_at_third(job: P.VideoJob, faces: object) -> P.VideoReport:
        if len(done) == 2:
            (out / "all" / job.video.label / f"{job.video.path.stem}_f00000.jpg.partial").write_bytes(b"half")
            raise KeyboardInterrupt  # Ctrl-C in the middle of the third video
        done.append(job.video.path.name)
        return real_crop(job, faces)  # type: ignore[arg-type]

    monkeypatch.setattr(P, "crop_video", stop_at_third)
    assert P.main(args) == P.EXIT_INTERRUPTED
    assert sorted(P.read_progress(out)) == sorted(done)
    first_mtimes = {p: p.stat().st_mtime_ns for p in (out / "all").rglob("*.jpg")}

    redone: list[str] = []
    monkeypatch.setattr(P, "crop_video", lambda job, faces: redone.append(job.video.path.name) or real_crop(job, faces))
    assert P.main(args) == 0
    assert sorted(redone) == sorted({"r0.avi", "r1.avi", "f0_0.avi", "f1_0.avi"} - set(done))
    assert not list(out.rglob("*.partial"))  # the stopped video's leftovers were cleaned up
    assert all(p.stat().st_mtime_ns == t for p, t in first_mtimes.items())  # finished videos untouched
    assert len(list((out / "all").rglob("*.jpg"))) == 4 * 3
    redone.clear()
    assert P.main(args) == 0 and redone == []  # everything done: nothing to do

    changed = [*args[:-4], "--size", "48", "--workers", "1"]
    assert P.main(changed) == 2  # resuming with other settings would mix two kinds of crops


def test_split_keeps_fakes_with_their_original_and_feeds_train(tmp_path: Path, fixed_faces: None) -> None:
    videos = dfdc_folder(tmp_path / "videos", n_originals=8, fakes_per_original=2)
    out = tmp_path / "out"
    assert P.main(["frames", str(videos), "--out", str(out), "--frames", "2", "--size", "32", "--workers", "1"]) == 0
    assert P.main(["split", str(out), "--seed", "3"]) == 0
    with (out / "manifest.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 8 * 3 * 2
    split_of_group: dict[str, set[str]] = {}
    for row in rows:
        split_of_group.setdefault(row["group"], set()).add(row["split"])
        assert row["path"].startswith(f"{row['split']}/{row['label']}/") and (out / row["path"]).is_file()
    assert all(len(s) == 1 for s in split_of_group.values())  # a fake and its original never cross splits
    assert sorted(s.pop() for s in split_of_group.values()).count("train") == 6  # 8 groups: 6 / 1 / 1
    paths, labels = list_split(out, "train")  # the layout train.py and evaluate.py read
    assert len(paths) == 6 * 3 * 2 and set(labels.tolist()) == {0, 1}

    assert P.main(["split", str(out), "--seed", "3"]) == 2  # would mix with the existing split
    assert P.main(["split", str(out), "--seed", "3", "--overwrite"]) == 0
    with (out / "manifest.csv").open() as handle:
        assert list(csv.DictReader(handle)) == rows  # deterministic for a seed
    assert sum(1 for _ in (out / "train").rglob("*.jpg")) == 6 * 3 * 2  # no files left from before


def test_split_manifest_layout(tmp_path: Path, fixed_faces: None) -> None:
    videos = dfdc_folder(tmp_path / "videos", n_originals=4, fakes_per_original=1)
    out = tmp_path / "out"
    assert P.main(["frames", str(videos), "--out", str(out), "--frames", "2", "--size", "32", "--workers", "1"]) == 0
    manifest = tmp_path / "lists" / "split.csv"
    assert P.main(["split", str(out), "--layout", "manifest", "--manifest", str(manifest)]) == 0
    with manifest.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 16 and {r["split"] for r in rows} == {"train", "valid", "test"}
    assert all((manifest.parent / r["path"]).is_file() and "/all/" in r["path"] for r in rows)
    assert not (out / "train").exists()


def test_assign_splits_ratios_and_seed() -> None:
    groups = [f"g{i}" for i in range(100)] * 3
    splits = P.assign_splits(groups, seed=0)
    counts = {name: list(splits.values()).count(name) for name in ("train", "valid", "test")}
    assert counts == {"train": 70, "valid": 15, "test": 15}
    assert P.assign_splits(groups, seed=0) == splits and P.assign_splits(groups, seed=1) != splits
    assert sorted(P.assign_splits(["a", "b", "c"], 0).values()) == ["test", "train", "valid"]
    with pytest.raises(ValueError, match="at least 3 groups"):
        P.assign_splits(["a", "b", "a"], 0)


def test_cli_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert P.main(["frames", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    assert "nowhere: no such folder" in capsys.readouterr().err
    assert P.main(["split", str(tmp_path / "o")]) == 2
    assert "progress.jsonl: not found" in capsys.readouterr().err


def test_frames_uses_the_inference_face_detector_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "fake").mkdir()
    monkeypatch.setenv("DEEPSHIELD_FACE_MODEL", str(tmp_path / "gone.onnx"))  # as load_detector reads it
    assert P.main(["frames", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "gone.onnx: YuNet face model not found" in capsys.readouterr().err


def test_worker_processes_report_videos_without_faces(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for label in ("real", "fake"):
        (tmp_path / "v" / label).mkdir(parents=True)
        write_video(tmp_path / "v" / label / f"{label}.avi", 6)
    (tmp_path / "v" / "fake" / "broken.avi").write_bytes(b"\0" * 100)
    out = tmp_path / "out"
    # Flat grey frames: the real face detector finds nothing, in two spawned worker processes.
    assert P.main(["frames", str(tmp_path / "v"), "--out", str(out), "--frames", "2", "--workers", "2"]) == 2
    err = capsys.readouterr().err
    assert "no face found in 2 video(s): fake.avi, real.avi" in err and "broken.avi" in err
    assert "no face crop could be made" in err


@needs_shared(VIDEOS)
def test_real_clips_give_face_crops(tmp_path: Path) -> None:
    out = tmp_path / "out"
    # In this process (the worker pool is covered above); frame 0 of every clip shows a face.
    assert P.main(["frames", str(VIDEOS), "--out", str(out), "--frames", "1", "--size", "64", "--workers", "1"]) == 0
    reports = P.read_progress(out)
    assert len(reports) == len(list(VIDEOS.glob("*/*.mp4")))
    assert all(r.status == "ok" and r.crops for r in reports.values())
    assert all(cv2.imread(str(out / c)).shape == (64, 64, 3) for r in reports.values() for c in r.crops)
