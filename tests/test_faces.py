from pathlib import Path

import cv2
import numpy as np
import pytest

from deepshield.faces import CropSpec, Face, FaceDetector, crop_face, crop_window, keep_main_faces
from deepshield.media import load_image

from .conftest import SHARED, VIDEOS, YUNET, needs_shared, noise_image

DFDC_VALID = SHARED / "data" / "dfdc-faces" / "valid"


def test_crop_is_square_centred_and_scaled() -> None:
    image = np.arange(200 * 300 * 3, dtype=np.uint32).reshape(200, 300, 3).astype(np.uint8)
    face = Face(100, 50, 60, 40, 1.0)
    assert crop_window(face, CropSpec(1.5)) == (85, 25, 90)
    crop = crop_face(image, face, CropSpec(1.5))
    assert crop.shape == (90, 90, 3)
    np.testing.assert_array_equal(crop, image[25:115, 85:175])


def test_crop_past_the_border_is_padded_by_replication() -> None:
    image = noise_image(50, 50)
    crop = crop_face(image, Face(0, 0, 20, 20, 1.0), CropSpec(2.0))
    assert crop.shape == (40, 40, 3)
    np.testing.assert_array_equal(crop[10:, 10:], image[:30, :30])
    np.testing.assert_array_equal(crop[0, 10:], image[0, :30])  # replicated top row


def test_keep_main_faces_drops_small_background_faces() -> None:
    faces = [Face(0, 0, 100, 100, 1.0), Face(0, 0, 60, 40, 1.0), Face(0, 0, 30, 30, 1.0)]
    assert keep_main_faces(faces) == faces[:2]
    assert keep_main_faces([]) == []


def test_downscaled_detection_maps_boxes_back(monkeypatch: pytest.MonkeyPatch) -> None:
    detector = FaceDetector(max_side=100)
    seen: list[tuple[int, ...]] = []

    def fake_haar(small: np.ndarray) -> list[Face]:
        seen.append(small.shape)
        return [Face(10, 10, 20, 20, 3.0), Face(50, 20, 40, 40, 5.0)]

    monkeypatch.setattr(detector, "_detect_haar_padded", fake_haar)
    faces = detector.detect(noise_image(200, 400))
    assert seen == [(50, 100, 3)]
    assert [f.box for f in faces] == [(200, 80, 160, 120), (40, 40, 80, 80)]  # largest first, clipped to frame


def test_small_images_get_a_border_so_tight_face_crops_are_found(monkeypatch: pytest.MonkeyPatch) -> None:
    detector = FaceDetector()
    seen: list[tuple[int, ...]] = []

    def fake_haar(gray: np.ndarray, frame: bool) -> list[Face]:
        seen.append((*gray.shape, frame))
        return [Face(30, 30, 50, 50, 1.0)]

    monkeypatch.setattr(detector, "_detect_haar", fake_haar)
    assert [f.box for f in detector.detect(noise_image(100, 100))] == [(5, 5, 50, 50)]  # border of 25 removed
    detector.detect(noise_image(600, 800))
    # Frames (downscaled to 720 px) are not padded, and are searched with the frames' coarser scale steps.
    assert seen == [(150, 150, False), (540, 720, True)]


@needs_shared(DFDC_VALID)
def test_tight_dfdc_crops_yield_whole_faces() -> None:
    detector = FaceDetector()
    paths = sorted(DFDC_VALID.glob("*/*.jpg"))[::100][:40]
    widths = [f[0].w / 224 for f in (detector.detect(load_image(p)) for p in paths) if f]
    assert len(widths) >= 0.8 * len(paths)  # found (unpadded Haar: ~20%)
    assert sum(w > 0.8 for w in widths) >= 0.9 * len(widths)  # whole faces, not part-faces


def test_haar_is_the_default_and_finds_nothing_in_noise() -> None:
    detector = FaceDetector()
    assert detector.name == "haar" and detector.max_side == 720
    assert detector.detect(noise_image(240, 320)) == []


def test_missing_yunet_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="YuNet"):
        FaceDetector(tmp_path / "absent.onnx")


def _middle_frame(path: Path) -> np.ndarray:
    capture = cv2.VideoCapture(str(path))
    capture.set(cv2.CAP_PROP_POS_FRAMES, 100)
    ok, frame = capture.read()
    capture.release()
    assert ok
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


@needs_shared(VIDEOS)
@pytest.mark.parametrize("backend", ["haar", "yunet"])
def test_real_1080p_frame_face_found_after_downscaling(backend: str) -> None:
    if backend == "yunet" and not YUNET.exists():
        pytest.skip(f"needs {YUNET}")
    frame = _middle_frame(VIDEOS / "real" / "dfdc_lynaeydofd.mp4")
    assert frame.shape[:2] == (1080, 1920)
    detector = FaceDetector(YUNET if backend == "yunet" else None)
    faces = detector.detect(frame)
    assert faces, f"{backend} found no face"
    face = faces[0]
    # The presenter sits in the centre of the frame; the box is in full-resolution pixels.
    assert 700 < face.x + face.w / 2 < 1200 and 150 < face.y + face.h / 2 < 500 and face.w > 80
