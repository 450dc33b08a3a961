"""Detection and calibration metrics as small pure functions on numpy arrays.

Conventions: ``labels`` are 0 (real) / 1 (fake); ``scores`` are P(fake) or any score where higher means
more fake; a sample is called fake when ``score >= threshold``.
"""

from __future__ import annotations

import numpy as np

ECE_BINS = 15
# Temperature search range: wider than any useful calibration, narrow enough to stay finite on
# perfectly separable data (where the NLL keeps falling as T -> 0).
T_MIN, T_MAX = 0.05, 20.0


def _check(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    if labels.shape != scores.shape or labels.ndim != 1:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} must be 1-D and the same length")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"labels must be 0 or 1, got values {np.unique(labels)[:5]}")
    return labels.astype(np.int64), scores


def _both_classes(labels: np.ndarray, name: str) -> None:
    if labels.min(initial=1) == labels.max(initial=0):
        raise ValueError(f"{name} needs both classes in labels, got only {np.unique(labels)}")


def confusion_matrix(labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Returns: [[TN, FP], [FN, TP]] (rows: true real/fake, columns: predicted real/fake)."""
    labels, scores = _check(labels, scores)
    pred = (scores >= threshold).astype(np.int64)
    return np.array([[np.sum((labels == t) & (pred == p)) for p in (0, 1)] for t in (0, 1)])


def threshold_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Accuracy, balanced accuracy, precision, recall, F1 of the "fake" class and the false-positive rate (reals
    called fake) at ``threshold``.

    Undefined ratios (e.g. precision with no predicted fake) are 0.
    """
    (tn, fp), (fn, tp) = confusion_matrix(labels, scores, threshold)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    specificity = tn / (tn + fp) if tn + fp else 0.0
    return {
        "accuracy": float((tp + tn) / max(1, tn + fp + fn + tp)),
        "balanced_accuracy": float((recall + specificity) / 2),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(2 * precision * recall / (precision + recall)) if precision + recall else 0.0,
        "false_positive_rate": float(1.0 - specificity) if tn + fp else 0.0,
    }


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve via the Mann-Whitney U statistic; tied scores count one half."""
    labels, scores = _check(labels, scores)
    _both_classes(labels, "roc_auc")
    ranks = _average_ranks(scores)
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    return float((ranks[labels == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="mergesort")
    _, first, counts = np.unique(values[order], return_index=True, return_counts=True)
    mean_rank = first + (counts + 1) / 2.0  # first is 0-based: ranks first+1 .. first+count
    ranks = np.empty(len(values))
    ranks[order] = np.repeat(mean_rank, counts)
    return ranks


def roc_curve(labels: np.ndarray, scores: np.ndarray,
              weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False- and true-positive rates at each distinct score, highest first, starting at (0, 0); each sample
    counts ``weights`` (N,) when given.

    Returns: fpr, tpr, thresholds (thresholds[0] is +inf).
    """
    labels, scores = _check(labels, scores)
    _both_classes(labels, "roc_curve")
    tp, fp, thresholds = _cumulative_counts(labels, scores, weights)
    return fp / fp[-1], tp / tp[-1], thresholds


def _cumulative_counts(labels: np.ndarray, scores: np.ndarray,
                       weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True and false positives (summed ``weights``, default 1 each) when calling fake every score >= each
    distinct threshold (descending)."""
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores, sorted_labels = scores[order], labels[order]
    sorted_weights = np.ones(len(scores)) if weights is None else np.asarray(weights, dtype=np.float64)[order]
    # Last position of each run of equal scores: tied samples switch to "fake" together.
    ends = np.r_[np.flatnonzero(np.diff(sorted_scores)), len(scores) - 1]
    tp = np.r_[0, np.cumsum(sorted_weights * sorted_labels)[ends]].astype(np.float64)
    fp = np.r_[0, np.cumsum(sorted_weights * (1 - sorted_labels))[ends]].astype(np.float64)
    return tp, fp, np.r_[np.inf, sorted_scores[ends]]


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the precision-recall curve as a step sum: sum over thresholds of dRecall * precision."""
    labels, scores = _check(labels, scores)
    if labels.sum() == 0:
        raise ValueError("average_precision needs at least one positive (fake) label")
    tp, fp, _ = _cumulative_counts(labels, scores)
    precision = tp[1:] / (tp[1:] + fp[1:])
    recall_gain = np.diff(tp) / tp[-1]
    return float(np.sum(recall_gain * precision))


def eer(labels: np.ndarray, scores: np.ndarray) -> float:
    """Equal error rate: where the false-positive rate meets the false-negative rate on the ROC curve,
    linearly interpolated between its two nearest points."""
    fpr, tpr, _ = roc_curve(labels, scores)
    gap = fpr - (1 - tpr)  # rises from -1 at (0, 0) to +1 at (1, 1)
    i = int(np.argmax(gap >= 0))
    if i == 0 or gap[i] == 0:
        return float(fpr[i])
    w = -gap[i - 1] / (gap[i] - gap[i - 1])
    return float(fpr[i - 1] + w * (fpr[i] - fpr[i - 1]))


def calibration_bins(labels: np.ndarray, probs: np.ndarray, n_bins: int = ECE_BINS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-label reliability bins: the confidence max(p, 1 - p) of each decision at 0.5, binned on
    [0.5, 1] into ``n_bins`` equal bins.

    Returns: mean confidence, accuracy and count per bin (empty bins: confidence and accuracy NaN).
    """
    labels, probs = _check(labels, probs)
    confidence = np.maximum(probs, 1 - probs)
    correct = ((probs >= 0.5) == (labels == 1)).astype(np.float64)
    edges = np.linspace(0.5, 1.0, n_bins + 1)
    index = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, n_bins - 1)
    counts = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(index, confidence, n_bins) / counts
        accuracy = np.bincount(index, correct, n_bins) / counts
    return mean_conf, accuracy, counts


def ece(labels: np.ndarray, probs: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """Expected calibration error (Guo et al. 2017): count-weighted |accuracy - confidence| over bins."""
    mean_conf, accuracy, counts = calibration_bins(labels, probs, n_bins)
    filled = counts > 0
    return float(np.sum(counts[filled] * np.abs(accuracy[filled] - mean_conf[filled])) / max(1, counts.sum()))


def brier(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean squared error of P(fake) against the 0/1 label."""
    labels, probs = _check(labels, probs)
    return float(np.mean((probs - labels) ** 2))


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function."""
    x = np.asarray(x, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -x))


def logit(p: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """Inverse of ``sigmoid``, with p clipped to [eps, 1 - eps] so saturated probabilities stay finite."""
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1 - eps)
    return np.log(p) - np.log1p(-p)


def nll(labels: np.ndarray, logits: np.ndarray, temperature: float = 1.0, weights: np.ndarray | None = None) -> float:
    """Mean binary cross-entropy of sigmoid(logits / temperature) against ``labels``, weighted by ``weights``
    (N,) when given."""
    labels, logits = _check(labels, logits)
    z = logits / temperature
    # -log sigmoid(z) for fakes, -log sigmoid(-z) for reals, both as softplus.
    return float(np.average(np.logaddexp(0.0, np.where(labels == 1, -z, z)), weights=weights))


def group_weights(groups: np.ndarray) -> np.ndarray:
    """Per-sample weights (N,) that give every distinct value of ``groups`` (N,) the same total weight,
    e.g. every data root, however many images each has. They sum to N."""
    _, inverse, counts = np.unique(np.asarray(groups), return_inverse=True, return_counts=True)
    return len(inverse) / (len(counts) * counts[inverse])


def root_class_weights(roots: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-sample weights (N,) giving each class half the total weight, shared equally by the roots that hold
    that class (as ``data.group_shares`` fills batches), so neither the largest root nor a one-class root
    sets a fit for all. They sum to N."""
    roots, labels = np.asarray(roots), np.asarray(labels)
    weights = np.zeros(len(labels))
    classes = np.unique(labels)
    for c in classes:
        mine = labels == c
        weights[mine] = group_weights(roots[mine]) * len(labels) / (len(classes) * mine.sum())  # sums to N / classes
    return weights


def paired_with(roots: np.ndarray, labels: np.ndarray, root: int) -> tuple[np.ndarray, list[int]]:
    """The samples that measure ``root``: its own, plus, when it holds one class only, every other root's
    samples of the other class (its test fakes against their test reals, say).

    Returns: a boolean mask (N,) and the other roots taken (empty for a two-class root).
    """
    roots, labels = np.asarray(roots), np.asarray(labels)
    mine = roots == root
    held = np.unique(labels[mine])
    if len(held) != 1:
        return mine, []
    others = (roots != root) & (labels != held[0])
    return mine | others, sorted(int(r) for r in np.unique(roots[others]))


def fit_temperature(labels: np.ndarray, logits: np.ndarray, iterations: int = 80, weights: np.ndarray | None = None) -> float:
    """Temperature T minimising ``nll(labels, logits, T, weights)``, by golden-section search over log T in
    [T_MIN, T_MAX] (the NLL is convex in 1/T, so unimodal in log T)."""
    lo, hi = np.log(T_MIN), np.log(T_MAX)
    ratio = (np.sqrt(5) - 1) / 2

    def loss(log_t: float) -> float:
        return nll(labels, logits, float(np.exp(log_t)), weights)

    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = loss(a), loss(b)
    for _ in range(iterations):
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = loss(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = loss(b)
    return float(np.exp((lo + hi) / 2))


def pick_threshold(labels: np.ndarray, probs: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Threshold maximising Youden's J = TPR - FPR (equivalently, balanced accuracy), each sample counting
    ``weights`` (N,) when given.

    Among equally good thresholds the one nearest 0.5 is kept; the returned value lies halfway between
    the chosen score and the next lower one, so it does not sit on a validation sample.
    """
    fpr, tpr, thresholds = roc_curve(labels, probs, weights)
    j = tpr - fpr
    best = np.flatnonzero(j >= j.max() - 1e-12)
    below = np.r_[thresholds[1:], 0.0]  # next lower distinct score (0 under the lowest)
    candidates = np.where(np.isinf(thresholds), 1.0, (thresholds + below) / 2)[best]
    return float(candidates[np.argmin(np.abs(candidates - 0.5))])


def video_scores(video_ids: np.ndarray, labels: np.ndarray, frame_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean frame score per video, and each video's label (which must be the same on all its frames).

    Returns: (labels, scores), one entry per distinct video id, sorted by id.
    """
    labels, frame_scores = _check(labels, frame_scores)
    ids, inverse = np.unique(np.asarray(video_ids), return_inverse=True)
    counts = np.bincount(inverse)
    video_labels = np.bincount(inverse, labels) / counts
    if np.any((video_labels > 0) & (video_labels < 1)):
        raise ValueError(f"video ids {ids[(video_labels > 0) & (video_labels < 1)][:3]} have both labels")
    return video_labels.astype(np.int64), np.bincount(inverse, frame_scores) / counts


def video_auc(video_ids: np.ndarray, labels: np.ndarray, frame_scores: np.ndarray) -> float:
    """ROC-AUC over videos, each scored by the mean of its frame scores."""
    return roc_auc(*video_scores(video_ids, labels, frame_scores))


def summary(labels: np.ndarray, probs: np.ndarray, threshold: float, probs_uncalibrated: np.ndarray | None = None) -> dict[str, object]:
    """Every metric of one evaluation: threshold metrics, confusion matrix, ranking metrics (when both
    classes are present), and ECE / Brier of ``probs`` and, if given, of the uncalibrated probabilities."""
    labels, probs = _check(labels, probs)
    out: dict[str, object] = {"n": int(len(labels)), "n_real": int((labels == 0).sum()), "n_fake": int(labels.sum()),
                              "threshold": float(threshold), **threshold_metrics(labels, probs, threshold),
                              "confusion_matrix": confusion_matrix(labels, probs, threshold).tolist()}
    if 0 < labels.sum() < len(labels):
        out.update(roc_auc=roc_auc(labels, probs), average_precision=average_precision(labels, probs),
                   eer=eer(labels, probs))
    out.update(ece=ece(labels, probs), brier=brier(labels, probs))
    if probs_uncalibrated is not None:
        out.update(ece_uncalibrated=ece(labels, probs_uncalibrated), brier_uncalibrated=brier(labels, probs_uncalibrated))
    return out
