"""The app around the tiny model: named Gradio endpoints through gradio_client, REST and WebSocket
through HTTP clients, bad requests included."""

from __future__ import annotations

import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from gradio_client import Client, handle_file

import app as deepshield_app
from deepshield.detector import Detector, load_detector
from deepshield.server import Limits

from .conftest import EXAMPLE, make_tiny_weights, noise_image, write_video


@pytest.fixture(scope="module")
def client(live_server: str) -> Client:
    return Client(live_server, verbose=False)


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video(tmp_path_factory.mktemp("media") / "clip.avi", 30)


@pytest.mark.parametrize(("metrics", "shown", "weak"), [({}, False, False), ({"roc_auc": 0.66}, True, True),
                                                        ({"roc_auc": 0.95}, True, False)])
def test_sidebar_states_the_models_validation_auc(tmp_path: Path, metrics: dict, shown: bool, weak: bool) -> None:
    detector = load_detector(make_tiny_weights(tmp_path / "w.safetensors", trained=True, metrics=metrics),
                             device="cpu", face_model=None)
    text = deepshield_app.model_info_markdown(detector)
    assert ("Validation ROC-AUC" in text) is shown and ("weak detector" in text) is weak
    if shown:
        assert f"{metrics['roc_auc']:.3f}" in text


def test_named_endpoints_are_listed(client: Client) -> None:
    named = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert {"/predict_image", "/predict_video", "/predict_frame", "/scan_batch"} <= set(named)


def test_predict_image_endpoint(client: Client) -> None:
    result, overlay = client.predict(handle_file(str(EXAMPLE)), True, 0.5, api_name="/predict_image")
    assert result["face_found"] is True and len(result["faces"]) == 1  # the astronaut's face, found by Haar
    assert abs(result["prob_real"] + result["prob_fake"] - 1) < 1e-9 and result["label"] in ("Real", "Fake")
    assert cv2.imread(overlay).shape[:2] == (512, 512)


def test_predict_image_threshold_moves_the_label(client: Client) -> None:
    low, _ = client.predict(handle_file(str(EXAMPLE)), False, 0.05, api_name="/predict_image")
    high, _ = client.predict(handle_file(str(EXAMPLE)), False, 0.95, api_name="/predict_image")
    assert (low["label"], high["label"]) == ("Fake", "Real") and low["prob_fake"] == pytest.approx(high["prob_fake"])


def test_predict_video_endpoint(client: Client, video: Path) -> None:
    result, cam, files = client.predict(handle_file(str(video)), 6, True, 0.5, api_name="/predict_video")
    assert result["frames_analysed"] == 6 and len(result["frames"]) == 6 and result["face_found"] is False
    assert cam is None  # no face in the synthetic clip: nothing to explain
    names = sorted(Path(f).name for f in files)
    assert names == ["clip_frames.csv", "clip_result.json"]
    csv_rows = Path([f for f in files if f.endswith(".csv")][0]).read_text().splitlines()
    assert csv_rows[0] == "index,time_s,faces,prob_real,prob_fake" and len(csv_rows) == 7


def test_predict_frame_endpoint(client: Client, tmp_path: Path) -> None:
    frame = tmp_path / "frame.png"
    cv2.imwrite(str(frame), noise_image(120, 160))
    result, annotated = client.predict(handle_file(str(frame)), False, 0.5, api_name="/predict_frame")
    assert result["face_found"] is False and cv2.imread(annotated).shape == (120, 160, 3)


def test_bad_upload_is_a_readable_error(client: Client, tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.png"
    bogus.write_bytes(b"this is not a png")
    with pytest.raises(Exception, match="not a recognised image"):
        client.predict(handle_file(str(bogus)), False, 0.5, api_name="/predict_image")
    # The server is still up and answering.
    result, _ = client.predict(handle_file(str(EXAMPLE)), False, 0.5, api_name="/predict_image")
    assert result["face_found"] is True


def test_scan_batch_endpoint_takes_files_and_zips(client: Client, video: Path, tmp_path: Path) -> None:
    archive = tmp_path / "more.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.write(EXAMPLE, "inside/face.jpg")
        handle.writestr("inside/readme.txt", "not media")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(EXAMPLE.read_bytes()[:1500])
    rows, counts, files = client.predict([handle_file(str(p)) for p in (EXAMPLE, video, broken, archive)], 4,
                                         api_name="/scan_batch")
    by_name = {r["file"]: r for r in rows}
    assert set(by_name) == {"astronaut.jpg", "clip.avi", "broken.jpg", "more.zip/inside/face.jpg", "more.zip/inside/readme.txt"}
    assert by_name["astronaut.jpg"]["faces"] == 1 and by_name["more.zip/inside/face.jpg"]["faces"] == 1
    assert by_name["clip.avi"]["frames"] == 4 and by_name["more.zip/inside/readme.txt"]["kind"] == "skipped"
    assert "broken.jpg" in by_name["broken.jpg"]["error"] and "/tmp" not in by_name["broken.jpg"]["error"]
    assert counts["error"] == 1 and counts["skipped"] == 1 and counts["no face"] == 1 and sum(counts.values()) == 5
    assert sorted(Path(f).name for f in files) == ["deepshield_scan.csv", "deepshield_scan.faces.csv",
                                                   "deepshield_scan.faces.parquet", "deepshield_scan.parquet"]
    table = deepshield_app.batch_rows(rows)
    assert [row[0] for row in table] == [r["file"] for r in rows] and all(len(row) == 7 for row in table)
    assert by_name["clip.avi"]["prob_fake"] is None and table[[r["file"] for r in rows].index("clip.avi")][2] == "No face"
    with pytest.raises(Exception, match="Upload some files first"):
        client.predict([], 4, api_name="/scan_batch")


def test_a_zip_that_escapes_its_folder_is_refused(tmp_path: Path) -> None:
    from deepshield.scan import unpack

    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("../../escaped.txt", "x")
    with pytest.raises(ValueError, match="outside the archive's folder"):
        unpack([("evil.zip", archive)], tmp_path / "out", 10, 2**20)
    assert not (tmp_path / "escaped.txt").exists()
    with pytest.raises(ValueError, match="at most 1 files"):
        unpack([("a", EXAMPLE), ("b", EXAMPLE)], tmp_path / "out", 1, 2**30)


# --- REST and WebSocket ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rest(app_detector: Detector) -> Iterator[TestClient]:
    limits = Limits(max_image_bytes=200_000, max_video_bytes=2_000_000)
    with TestClient(deepshield_app.create_app(app_detector, limits)) as http:
        yield http


def _png_bytes(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", image)[1].tobytes()


def test_sidebar_and_health_name_the_arch_and_its_init(tmp_path: Path) -> None:
    detector = load_detector(make_tiny_weights(tmp_path / "w.safetensors", trained=True, init="imagenet"),
                             device="cpu", face_model=None)
    assert "tiny @ 64 px, from ImageNet weights" in deepshield_app.model_info_markdown(detector)
    assert (detector.info()["arch"], detector.info()["init"]) == ("tiny", "imagenet")


def test_health(rest: TestClient, tiny_weights: Path) -> None:
    body = rest.get("/health").json()
    assert body["status"] == "ok" and body["model_loaded"] is True and body["weights"] == str(tiny_weights)
    assert body["arch"] == "tiny" and "init" in body
    assert body["face_detector"] == "haar" and body["device"] == "cpu" and body["version"]


def test_rest_predict_image(rest: TestClient) -> None:
    response = rest.post("/predict/image", files={"file": ("astronaut.jpg", EXAMPLE.read_bytes(), "image/jpeg")})
    assert response.status_code == 200
    body = response.json()
    assert set(body) >= {"label", "confidence", "prob_real", "prob_fake", "faces", "face_found", "uncertain"}
    assert body["face_found"] is True and len(body["faces"]) == 1


@pytest.mark.parametrize(
    ("payload", "status", "message"),
    [
        (b"", 400, "empty"),
        (b"plain text, not an image", 400, "not a recognised image"),
        (_png_bytes(noise_image(400, 400)), 413, "over the 0 MB upload limit"),  # 480 KB > 200 KB test limit
    ],
)
def test_rest_bad_images(rest: TestClient, payload: bytes, status: int, message: str) -> None:
    response = rest.post("/predict/image", files={"file": ("upload.png", payload, "image/png")})
    assert response.status_code == status and message in response.json()["error"]


def test_rest_missing_file_field(rest: TestClient) -> None:
    response = rest.post("/predict/image")
    assert response.status_code == 422 and "file" in response.json()["error"]


def test_rest_predict_video_and_upload_is_deleted(rest: TestClient, video: Path) -> None:
    before = set(Path(tempfile.gettempdir()).glob("deepshield-upload-*"))
    response = rest.post("/predict/video", files={"file": ("clip.avi", video.read_bytes())}, data={"frames": "5"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["frames_analysed"] == 5 and [f["index"] for f in body["frames"]] == [0, 7, 14, 22, 29]
    assert set(Path(tempfile.gettempdir()).glob("deepshield-upload-*")) == before


@pytest.mark.parametrize(("frames", "payload", "status", "message"), [
    ("64", None, 422, "frames must be an integer from 4 to 32"),
    ("8", b"RIFF....AVI not really", 400, "not a decodable video"),
    ("8", b"", 400, "empty"),
])
def test_rest_bad_videos(rest: TestClient, video: Path, frames: str, payload: bytes | None, status: int, message: str) -> None:
    data = video.read_bytes() if payload is None else payload
    response = rest.post("/predict/video", files={"file": ("clip.avi", data)}, data={"frames": frames})
    assert response.status_code == status and message in response.json()["error"]
    assert "deepshield-upload-" not in response.json()["error"]  # the temp path is not leaked


def test_websocket_one_answer_per_frame(rest: TestClient) -> None:
    frame = cv2.imencode(".jpg", noise_image(120, 160))[1].tobytes()
    with rest.websocket_connect("/ws/webcam") as ws:
        ws.send_bytes(frame)
        first = ws.receive_json()
        ws.send_bytes(b"garbage")
        bad = ws.receive_json()
        ws.send_text("hello")
        text = ws.receive_json()
        ws.send_bytes(frame)
        again = ws.receive_json()
    assert first["face_found"] is False and abs(first["prob_real"] + first["prob_fake"] - 1) < 1e-9
    assert "not a recognised image" in bad["error"] and "binary" in text["error"]
    assert again == first


def test_openapi_docs(rest: TestClient) -> None:
    paths = rest.get("/openapi.json").json()["paths"]
    assert {"/health", "/predict/image", "/predict/video"} <= set(paths)
    assert rest.get("/docs").status_code == 200


@pytest.mark.parametrize(("threshold", "message"), [(1.5, "threshold must be"), (0.0, "threshold must be")])
def test_api_threshold_is_checked(client: Client, threshold: object, message: str) -> None:
    with pytest.raises(Exception, match=message):
        client.predict(handle_file(str(EXAMPLE)), False, threshold, api_name="/predict_image")


def test_api_frames_are_checked(client: Client, video: Path) -> None:
    with pytest.raises(Exception, match="4 to 32"):
        client.predict(handle_file(str(video)), 64, False, 0.5, api_name="/predict_video")
