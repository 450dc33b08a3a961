from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from deepshield import load_detector
from deepshield.detector import Detector, resolve_device
from deepshield.faces import Face

from .conftest import VIDEOS, FixedFaces, needs_shared, noise_image, write_video


def test_no_face_classifies_the_whole_image(detector: Detector) -> None:
    result = detector.predict_image(noise_image())
    assert result.face_found is False and result.faces == []
    assert result.prob_real + result.prob_fake == pytest.approx(1.0)
    assert result.label == ("Fake" if result.prob_fake >= detector.meta.threshold else "Real")
    assert result.confidence == pytest.approx(max(result.prob_fake, result.prob_real))
    whole = detector.score_crops([noise_image()])[0][0]
    assert result.prob_fake == pytest.approx(whole)


def test_each_face_scored_and_verdict_is_the_most_fake(detector: Detector) -> None:
    image = noise_image(200, 300)
    detector.recipe = replace(detector.recipe, faces=FixedFaces([Face(10, 10, 80, 80, 0.9), Face(150, 60, 60, 60, 0.8)]))  # type: ignore[arg-type]
    result = detector.predict_image(image)
    assert result.face_found and [f.box for f in result.faces] == [(10, 10, 80, 80), (150, 60, 60, 60)]
    probs = [f.prob_fake for f in result.faces]
    assert probs[0] != probs[1] and result.prob_fake == max(probs)
    json_ready = result.to_dict()
    assert "heatmap" not in json_ready and json_ready["faces"][1]["box"] == (150, 60, 60, 60)


def test_threshold_and_uncertain_band(detector: Detector) -> None:
    verdict = detector.verdict(0.55)
    assert (verdict.label, verdict.uncertain) == ("Fake", True)
    assert detector.verdict(0.55, threshold=0.8).label == "Real"
    assert detector.verdict(0.95).uncertain is False


def test_temperature_calibrates_probabilities(tiny_weights: Path, tmp_path: Path) -> None:
    from .conftest import make_tiny_weights

    hot = load_detector(make_tiny_weights(tmp_path / "t.safetensors", temperature=4.0), device="cpu")
    logits = torch.tensor([2.0, -4.0])
    np.testing.assert_allclose(hot.probabilities(logits), torch.sigmoid(logits / 4.0).numpy(), rtol=1e-6)


def test_explain_gives_a_full_image_heatmap(detector: Detector) -> None:
    image = noise_image(200, 300)
    detector.recipe = replace(detector.recipe, faces=FixedFaces([Face(100, 50, 60, 60, 0.9)]))  # type: ignore[arg-type]
    result = detector.predict_image(image, explain=True)
    assert result.heatmap is not None and result.heatmap.shape == (200, 300)
    assert result.heatmap.min() >= 0 and result.heatmap.max() <= 1
    # Heat only inside the face's crop window (the 60 px box itself at crop scale 1.0).
    outside = result.heatmap.copy()
    outside[50:110, 100:160] = 0
    assert outside.max() == 0
    assert result.overlay is not None and result.overlay.shape == (200, 300, 3)
    np.testing.assert_array_equal(detector.explain(image), result.heatmap)
    assert result.prob_fake == pytest.approx(detector.predict_image(image).prob_fake, abs=1e-5)


def test_bad_image_input_is_a_value_error(detector: Detector) -> None:
    with pytest.raises(ValueError, match="not a recognised image"):
        detector.predict_image(b"definitely not an image")


def test_video_without_faces_is_half_and_says_so(detector: Detector, tmp_path: Path) -> None:
    result = detector.predict_video(write_video(tmp_path / "v.avi", 40), n_frames=8, explain=True, threshold=0.3)
    assert (result.prob_fake, result.face_found, result.frames_analysed, result.frames_with_face) == (0.5, False, 8, 0)
    assert (result.label, result.uncertain, result.confidence, result.heatmap) == ("No face", True, 0.0, None)
    assert all(f.prob_real is None and f.faces == 0 for f in result.frames)


def test_video_aggregates_frames_and_explains_the_most_fake(detector: Detector, tmp_path: Path) -> None:
    detector.recipe = replace(detector.recipe, faces=FixedFaces([Face(20, 10, 40, 40, 0.9)]))  # type: ignore[arg-type]
    steps: list[float] = []
    result = detector.predict_video(write_video(tmp_path / "v.avi", 30, fps=10.0), n_frames=6, explain=True,
                                    progress=lambda p, _msg: steps.append(p))
    assert [f.index for f in result.frames] == [0, 6, 12, 17, 23, 29]
    assert [f.time_s for f in result.frames] == pytest.approx([0.0, 0.6, 1.2, 1.7, 2.3, 2.9])
    probs = [f.prob_fake for f in result.frames]
    assert result.prob_fake == pytest.approx(np.mean(probs)) and result.frames_with_face == 6
    assert result.fake_frames + result.real_frames == 6
    assert result.explained_frame == result.frames[int(np.argmax(probs))].index
    assert result.heatmap is not None and result.heatmap.shape == (64, 96)
    assert steps[-1] == 1.0 and steps == sorted(steps)
    # Frame scores equal scoring that frame's crop on its own.
    assert result.to_dict()["frames"][0]["faces"] == 1


def test_video_frames_out_of_range(detector: Detector, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="4 to 32"):
        detector.predict_video(write_video(tmp_path / "v.avi", 10), n_frames=64)


def test_device_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_device("cpu").type == "cpu"
    monkeypatch.setenv("DEEPSHIELD_DEVICE", "cpu")
    assert resolve_device().type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_info_names_what_is_in_use(detector: Detector, tiny_weights: Path) -> None:
    info = detector.info()
    assert info["weights"] == str(tiny_weights) and info["face_detector"] == "haar" and info["device"] == "cpu"


@needs_shared(VIDEOS)
def test_real_clip_faces_found_in_most_frames(detector: Detector) -> None:
    result = detector.predict_video(VIDEOS / "real" / "dfdc_lynaeydofd.mp4", n_frames=8)
    assert result.frames_analysed == 8 and result.frames_with_face >= 6 and result.face_found


@pytest.mark.parametrize("threshold", [0.0, 1.0, 5, -0.2, "0.5"])
def test_threshold_out_of_range_is_refused(detector: Detector, threshold: object, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="threshold must be"):
        detector.predict_image(noise_image(), threshold=threshold)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="threshold must be"):
        detector.predict_video(write_video(tmp_path / "v.avi", 10), n_frames=4, threshold=threshold)  # type: ignore[arg-type]


def test_extreme_aspect_ratio_does_not_crash(detector: Detector) -> None:
    result = detector.predict_image(noise_image(10, 20000), explain=True)
    assert result.face_found is False and result.heatmap is not None and result.heatmap.shape == (10, 20000)


def test_no_face_heatmap_covers_the_whole_non_square_image(detector: Detector) -> None:
    image = noise_image(90, 180)
    cam = np.array([[0.0, 1.0], [1.0, 0.0]], np.float32)
    detector.score_crops = lambda crops, explain=False, threshold=None: (np.array([0.7]), [cam])  # type: ignore[method-assign]
    heatmap = detector.predict_image(image, explain=True).heatmap
    assert heatmap is not None and heatmap.shape == (90, 180)
    assert heatmap[80, 10] > 0.9 and heatmap[10, 170] > 0.9 and heatmap[10, 10] < 0.1  # the 2x2 map stretched


def test_concurrent_explain_and_predict_are_safe(detector: Detector) -> None:
    import threading

    errors: list[BaseException] = []
    expected = detector.predict_image(noise_image(), explain=True).prob_fake

    def work(explain: bool) -> None:
        try:
            for _ in range(15):
                assert detector.predict_image(noise_image(), explain=explain).prob_fake == pytest.approx(expected, abs=1e-6)
        except BaseException as err:  # collected and re-raised in the main thread
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i % 2 == 0,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[0]


def test_video_frames_over_the_pixel_limit_are_refused(tiny_weights: Path, tmp_path: Path) -> None:
    small_limit = load_detector(tiny_weights, device="cpu", max_pixels=1000)
    with pytest.raises(ValueError, match="over the 0 MP limit"):
        small_limit.predict_video(write_video(tmp_path / "v.avi", 10), n_frames=4)
