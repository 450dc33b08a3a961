from pathlib import Path

import numpy as np
import pytest

from deepshield import video as V

from .conftest import write_video


def _level_to_index(frame: np.ndarray) -> int:
    return int(round(frame.mean() / 4))


def test_sample_indices_even_and_unique() -> None:
    assert V.sample_indices(300, 4) == [0, 100, 199, 299]
    assert V.sample_indices(3, 16) == [0, 1, 2]
    assert V.sample_indices(0, 16) == []


@pytest.mark.parametrize("seek_gap", [10_000, 3])  # grab-only, and seeking over every gap
def test_read_frames_returns_exactly_the_sampled_frames(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seek_gap: int) -> None:
    monkeypatch.setattr(V, "SEEK_MIN_GAP", seek_gap)
    path = write_video(tmp_path / "ramp.avi", 60)
    indices = V.sample_indices(60, 8)
    got = list(V.read_frames(path, indices))
    assert [i for i, _ in got] == indices
    assert [_level_to_index(f) for _, f in got] == indices
    assert got[0][1].shape == (64, 96, 3)


def test_read_frames_stops_quietly_past_the_end(tmp_path: Path) -> None:
    path = write_video(tmp_path / "short.avi", 5)
    assert [i for i, _ in V.read_frames(path, [0, 4, 9, 20])] == [0, 4]


def test_probe(tmp_path: Path) -> None:
    info = V.probe_video(write_video(tmp_path / "v.avi", 12, fps=24.0))
    assert (info.frame_count, info.fps, info.width, info.height) == (12, 24.0, 96, 64)


def test_zero_frame_and_non_video_files_are_refused(tmp_path: Path) -> None:
    empty_video = write_video(tmp_path / "none.avi", 0)
    text = tmp_path / "text.mp4"
    text.write_text("not a video")
    zero = tmp_path / "zero.mp4"
    zero.touch()
    for path, message in ((empty_video, "no decodable frame|not a decodable video"), (text, "not a decodable video"), (zero, "empty")):
        with pytest.raises(ValueError, match=message):
            V.probe_video(path)


@pytest.mark.parametrize("n", [3, 33, 4.5, "8"])
def test_frame_count_bounds(n: object) -> None:
    with pytest.raises(ValueError, match="4 to 32"):
        V.check_n_frames(n)  # type: ignore[arg-type]


def test_aggregate_mean_over_frames_with_faces_and_vote() -> None:
    score = V.aggregate([0.9, None, 0.8, 0.2], threshold=0.5)
    assert score.prob_fake == pytest.approx((0.9 + 0.8 + 0.2) / 3)
    assert (score.frames_with_face, score.fake_frames, score.real_frames, score.majority_fake) == (3, 2, 1, True)
    nothing = V.aggregate([None, None], threshold=0.5)
    assert (nothing.prob_fake, nothing.face_found) == (0.5, False)


def test_the_other_aggregates_weigh_confident_frames() -> None:
    swap_in_a_third = [0.1] * 20 + [0.95] * 12  # a face swap visible in 12 of 32 frames
    assert V.aggregate(swap_in_a_third, 0.5).prob_fake < 0.5  # the mean averages it away
    assert V.aggregate(swap_in_a_third, 0.5, "confident").prob_fake == pytest.approx(0.95)
    assert V.aggregate(swap_in_a_third, 0.5, "p90").prob_fake == pytest.approx(0.95)
    clean = [0.05] * 30 + [0.6] * 2
    assert V.aggregate(clean, 0.5, "confident").prob_fake == pytest.approx(0.05)  # nine in ten confidently real
    mixed = [0.3, 0.4, 0.6, 0.7]
    assert V.aggregate(mixed, 0.5, "confident").prob_fake == pytest.approx(0.5)  # no confident majority: the mean
    with pytest.raises(ValueError, match="unknown video aggregate 'max'"):
        V.aggregate(mixed, 0.5, "max")
