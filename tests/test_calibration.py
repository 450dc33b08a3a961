"""deepshield.calibration: one object from the weights' metadata that turns logits into P(fake) and verdicts,
fitted by train.py with every data root weighing the same."""

from __future__ import annotations

import numpy as np
import pytest

from deepshield.calibration import Calibration
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
