"""Calibration of the model's one "fake" logit: temperature, decision threshold, uncertain band and labels.
Fitted on a validation set by ``train.py``, stored in the weights' metadata, applied by the ``Detector``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .metrics import fit_temperature, logit, pick_threshold, root_class_weights, sigmoid
from .weights import ModelMeta

DEFAULT_UNCERTAIN_BAND = 0.1  # |P(fake) - threshold| below this is reported as uncertain


@dataclass
class Verdict:
    """A calibrated decision: label at the threshold, P(real) + P(fake) = 1."""

    label: str
    confidence: float  # probability of the chosen label
    prob_real: float
    prob_fake: float
    uncertain: bool


@dataclass(frozen=True)
class Calibration:
    """logit -> P(fake) = sigmoid(logit / temperature) -> label at ``threshold``, uncertain inside the band."""

    temperature: float = 1.0
    threshold: float = 0.5  # on the calibrated P(fake)
    labels: tuple[str, str] = ("Real", "Fake")
    uncertain_band: float = DEFAULT_UNCERTAIN_BAND

    @classmethod
    def from_meta(cls, meta: ModelMeta, uncertain_band: float = DEFAULT_UNCERTAIN_BAND) -> Calibration:
        return cls(meta.temperature, meta.threshold, meta.labels, uncertain_band)

    @classmethod
    def fit(cls, labels: np.ndarray, logits: np.ndarray, groups: np.ndarray | None = None) -> Calibration:
        """The temperature minimising the NLL, then the threshold on calibrated P(fake) maximising Youden's J;
        with ``groups`` (data roots) both weigh each class half and every root the same within it
        (``root_class_weights``), so neither the largest root nor a one-class root sets them for all (an easy
        fakes-only root would otherwise pull the threshold down and flag more reals)."""
        weights = None if groups is None else root_class_weights(groups, labels)
        temperature = fit_temperature(labels, logits, weights=weights)
        return cls(temperature, pick_threshold(labels, sigmoid(logits / temperature), weights))

    def prob(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated P(fake) per logit (float64, so the logits stay recoverable)."""
        return sigmoid(np.asarray(logits, dtype=np.float64) / self.temperature)

    def uncalibrated(self, probs: np.ndarray) -> np.ndarray:
        """P(fake) at temperature 1 for calibrated ``probs``."""
        return sigmoid(self.temperature * logit(probs))

    def check_threshold(self, threshold: float | None = None) -> float:
        """``threshold`` checked (strictly between 0 and 1), or the calibrated one when None."""
        if threshold is None:
            return self.threshold
        if not isinstance(threshold, (int, float)) or not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be a number strictly between 0 and 1, got {threshold!r}")
        return float(threshold)

    def verdict(self, prob_fake: float, threshold: float | None = None) -> Verdict:
        """Label at ``threshold`` (default: the calibrated one), flagged uncertain inside the band around it."""
        threshold = self.check_threshold(threshold)
        fake = prob_fake >= threshold
        return Verdict(
            label=self.labels[1] if fake else self.labels[0],
            confidence=float(prob_fake if fake else 1.0 - prob_fake),
            prob_real=float(1.0 - prob_fake),
            prob_fake=float(prob_fake),
            uncertain=bool(abs(prob_fake - threshold) < self.uncertain_band),
        )
