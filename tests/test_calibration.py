"""deepshield.calibration: one object from the weights' metadata that turns logits into P(fake) and verdicts,
fitted by train.py with every data root weighing the same."""

from __future__ import annotations

import numpy as np
import pytest

from deepshield.calibration import Calibration
from deepshield import metrics as M
from deepshield.metrics import sigmoid
from deepshield.weights import ModelMeta


def test_from_meta_prob_and_round_trip() -> None:
    calibration = Calibration.from_meta(ModelMeta("tiny", 64, temperature=2.0, threshold=0.4, labels=("Echt", "Gefälscht")))
    logits = np.array([-3.0, 0.0, 1.5])
    np.testing.assert_allclose(calibration.prob(logits), sigmoid(logits / 2.0))
    np.testing.assert_allclose(calibration.uncalibrated(calibration.prob(logits)), sigmoid(logits), rtol=1e-9)
    assert calibration.verdict(0.45).label == "Gefälscht" and calibration.verdict(0.45).uncertain
    assert calibration.verdict(0.9, threshold=0.95).label == "Echt"


def test_verdict_adds_up() -> None:
    verdict = Calibration().verdict(0.8)
    assert (verdict.label, verdict.confidence, verdict.prob_real + verdict.prob_fake) == ("Fake", 0.8, 1.0)
    assert not verdict.uncertain


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.2, "0.5"])
def test_bad_thresholds_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        Calibration().check_threshold(bad)  # type: ignore[arg-type]


def test_fit_weighs_each_group_the_same() -> None:
    """A big group 4x over-confident, a small calibrated one: the balanced fit lands between them, and the
    threshold separates the classes."""
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0.0, 2.0, 3000)
    labels = (rng.random(3000) < sigmoid(true_logits)).astype(int)
    groups = (np.arange(3000) >= 2700).astype(int)
    logits = np.where(groups == 0, 4 * true_logits, true_logits)
    plain, balanced = Calibration.fit(labels, logits), Calibration.fit(labels, logits, groups)
    assert plain.temperature > 3.0 and 1.2 < balanced.temperature < plain.temperature - 0.5
    assert 0.3 < balanced.threshold < 0.7


def test_the_threshold_weighs_roots_so_an_easy_fakes_only_root_does_not_pull_it() -> None:
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(200), np.ones(200), np.ones(400)].astype(int)  # root 0: both classes; root 1: easy fakes
    logits = np.r_[rng.normal(-1, 1, 200), rng.normal(1, 1, 200), rng.normal(6, 0.5, 400)]
    roots = np.r_[np.zeros(400), np.ones(400)]
    probs = 1 / (1 + np.exp(-logits))
    mask = np.r_[np.ones(400), np.zeros(400)]
    assert M.pick_threshold(labels, probs, mask) == M.pick_threshold(labels[:400], probs[:400])  # weights count
    fitted = Calibration.fit(labels, logits, groups=roots)
    weights = M.root_class_weights(roots, labels)
    assert np.isclose(weights[labels == 0].sum(), weights[labels == 1].sum())  # each class half
    assert np.isclose(weights[400:].sum(), weights[200:400].sum())  # the fakes split equally between the roots
    assert fitted.threshold == M.pick_threshold(labels, fitted.prob(logits), weights)
