"""deepshield.metrics on hand-made arrays with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from deepshield import metrics as M

LABELS = np.array([0, 0, 0, 1, 1, 1])


def test_roc_auc_perfect_inverted_and_tied() -> None:
    scores = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    assert M.roc_auc(LABELS, scores) == 1.0
    assert M.roc_auc(LABELS, -scores) == 0.0
    assert M.roc_auc(LABELS, np.full(6, 0.5)) == 0.5
    # Pairs (real, fake): (0.1,0.5) (0.1,0.9) (0.5,0.5) (0.5,0.9) -> 1 + 1 + 0.5 + 1 over 4.
    assert M.roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.5, 0.5, 0.9])) == pytest.approx(0.875)


def test_roc_auc_equals_area_under_roc_curve_with_ties() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 500)
    scores = np.round(rng.random(500) + 0.3 * labels, 1)  # heavy ties
    fpr, tpr, thresholds = M.roc_curve(labels, scores)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.isinf(thresholds[0]) and np.all(np.diff(thresholds[1:]) < 0)
    assert M.roc_auc(labels, scores) == pytest.approx(np.trapezoid(tpr, fpr))


def test_average_precision() -> None:
    # Ranked: fake (P=1, R=.5), real, fake (P=2/3, R=1), real.
    assert M.average_precision(np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.7, 0.1])) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert M.average_precision(LABELS, np.arange(6.0)) == 1.0
    assert M.average_precision(LABELS, np.full(6, 0.3)) == pytest.approx(0.5)  # all tied: the base rate


def test_eer() -> None:
    scores = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    assert M.eer(LABELS, scores) == 0.0
    assert M.eer(LABELS, -scores) == 1.0
    assert M.eer(LABELS, np.full(6, 0.5)) == 0.5
    # One real above one fake out of two each: FPR = FNR = 0.5 at threshold 0.6.
    assert M.eer(np.array([0, 0, 1, 1]), np.array([0.1, 0.6, 0.4, 0.9])) == pytest.approx(0.5)


def test_threshold_metrics_and_confusion_matrix() -> None:
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    probs = np.array([0.1, 0.2, 0.6, 0.3, 0.9, 0.4, 0.8, 0.7])
    assert M.confusion_matrix(labels, probs, 0.5).tolist() == [[3, 1], [1, 3]]
    got = M.threshold_metrics(labels, probs, 0.5)
    assert got["accuracy"] == got["precision"] == got["recall"] == got["f1"] == pytest.approx(0.75)
    assert M.threshold_metrics(labels, probs, 0.95)["precision"] == 0.0  # no fake predicted: defined as 0


def test_ece_and_brier() -> None:
    assert M.ece(np.array([1, 1, 0, 0]), np.array([1.0, 1.0, 0.0, 0.0])) == 0.0
    # Confidence 0.8 and 80% right: calibrated.
    assert M.ece(np.array([1] * 8 + [0] * 2), np.full(10, 0.8)) == pytest.approx(0.0)
    # Half at confidence 0.9 with accuracy 0.75, half at confidence 0.8 (P(fake)=0.2) with accuracy 0.5.
    labels = np.array([1, 1, 1, 0, 0, 0, 1, 1])
    probs = np.array([0.9] * 4 + [0.2] * 4)
    assert M.ece(labels, probs) == pytest.approx(0.5 * 0.15 + 0.5 * 0.3)
    assert M.brier(np.array([1, 0, 1]), np.array([1.0, 0.0, 0.5])) == pytest.approx(0.25 / 3)


def test_calibration_bins_has_15_bins() -> None:
    confidence, accuracy, counts = M.calibration_bins(np.array([1, 0]), np.array([0.97, 0.5]))
    assert len(confidence) == len(accuracy) == len(counts) == 15
    assert counts.sum() == 2 and counts[0] == 1 and counts[-1] == 1


def test_fit_temperature_recovers_a_known_temperature() -> None:
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0.0, 3.0, 20_000)
    labels = (rng.random(20_000) < M.sigmoid(true_logits)).astype(int)
    assert M.fit_temperature(labels, 2.5 * true_logits) == pytest.approx(2.5, rel=0.05)
    assert M.fit_temperature(labels, 0.5 * true_logits) == pytest.approx(0.5, rel=0.05)
    assert M.nll(labels, 2.5 * true_logits, 2.5) == pytest.approx(M.nll(labels, true_logits))


def test_pick_threshold() -> None:
    # Perfectly separated: halfway between the highest real and the lowest fake.
    assert M.pick_threshold(LABELS, np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.8])) == pytest.approx(0.45)
    # Everything above 0.5: the threshold follows the data, not 0.5.
    assert M.pick_threshold(LABELS, np.array([0.55, 0.6, 0.65, 0.8, 0.85, 0.9])) == pytest.approx(0.725)


def test_sigmoid_and_logit_are_inverse_and_finite() -> None:
    x = np.array([-30.0, -2.0, 0.0, 2.0, 30.0])
    assert np.allclose(M.logit(M.sigmoid(x[1:-1])), x[1:-1])
    assert np.all(np.isfinite(M.logit(np.array([0.0, 1.0]))))
    assert M.sigmoid(np.array([-1000.0]))[0] == 0.0 and M.sigmoid(np.array([1000.0]))[0] == 1.0


def test_video_scores_and_auc() -> None:
    ids = np.array(["a", "a", "b", "b", "c", "c"])
    labels = np.array([0, 0, 1, 1, 0, 0])
    frames = np.array([0.1, 0.5, 0.6, 0.8, 0.2, 0.2])
    video_labels, video_scores = M.video_scores(ids, labels, frames)
    assert video_labels.tolist() == [0, 1, 0]
    assert np.allclose(video_scores, [0.3, 0.7, 0.2])
    assert M.video_auc(ids, labels, frames) == 1.0
    with pytest.raises(ValueError, match="both labels"):
        M.video_scores(ids, np.array([0, 1, 1, 1, 0, 0]), frames)


def test_summary_keys() -> None:
    out = M.summary(LABELS, np.array([0.1, 0.2, 0.6, 0.7, 0.8, 0.9]), 0.5, np.full(6, 0.5))
    for key in ("accuracy", "precision", "recall", "f1", "confusion_matrix", "roc_auc", "average_precision",
                "eer", "ece", "brier", "ece_uncalibrated", "brier_uncalibrated"):
        assert key in out
    assert "roc_auc" not in M.summary(np.ones(3, int), np.full(3, 0.9), 0.5)  # one class: no ranking metrics


@pytest.mark.parametrize("labels, scores", [
    (np.array([0, 1]), np.array([0.5])),  # length mismatch
    (np.array([0, 2]), np.array([0.1, 0.2])),  # not 0/1
    (np.array([1, 1]), np.array([0.1, 0.2])),  # one class
])
def test_bad_inputs_raise_value_error(labels: np.ndarray, scores: np.ndarray) -> None:
    with pytest.raises(ValueError):
        M.roc_auc(labels, scores)


def test_group_weights_give_each_group_the_same_total() -> None:
    weights = M.group_weights(np.array([0] * 9 + [1] * 3))
    assert weights.sum() == pytest.approx(12) and weights[:9].sum() == pytest.approx(weights[9:].sum())

