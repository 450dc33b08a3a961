"""Evaluate DeepShield weights on labelled images (and optionally videos).

    python evaluate.py --data ROOT [ROOT...] --split test [--weights FILE] [--json OUT.json]
                       [--predictions OUT.csv] [--plots DIR] [--no-detect] [--videos DIR] [--limit N]

Default mode is the full inference path, exactly ``Detector.predict_image`` (load -> face detection ->
crop -> model); --no-detect scores the images as given (``Detector.score_crops`` on whole images, in
batches). Threshold metrics use the weights' threshold on the calibrated P(fake); ECE and Brier are
reported before (temperature 1) and after the weights' temperature; all per root and overall.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from deepshield.calibration import Calibration
from deepshield.cli import add_detector_args
from deepshield.data import CLASSES, VIDEO_EXTS, balanced_subset, list_labelled, list_split
from deepshield.detector import Detector, load_detector
from deepshield.media import load_image
from deepshield.metrics import calibration_bins, roc_auc, roc_curve, summary, video_auc
from deepshield.video import DEFAULT_FRAMES


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", nargs="+", default=[], metavar="ROOT", help="roots laid out as ROOT/SPLIT/{real,fake}/*")
    parser.add_argument("--split", default="test", choices=("train", "valid", "test"))
    parser.add_argument("--json", type=Path, metavar="OUT.json", help="write every metric here")
    parser.add_argument("--predictions", type=Path, metavar="OUT.csv", help="write path,label,prob_fake,face_found rows")
    parser.add_argument("--plots", type=Path, metavar="DIR", help="write roc.png and reliability.png here")
    parser.add_argument("--no-detect", action="store_true", help="score whole images as given, without face detection")
    parser.add_argument("--videos", type=Path, metavar="DIR", help="also evaluate clips in DIR/{real,fake}/")
    parser.add_argument("--frames", type=int, default=DEFAULT_FRAMES, help=f"frames sampled per video (default {DEFAULT_FRAMES})")
    parser.add_argument("--limit", type=int, metavar="N", help="at most N images per class and root (seeded random subset)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size for --no-detect (default 32)")
    add_detector_args(parser, threshold=False)
    args = parser.parse_args(argv)
    if not args.data and not args.videos:
        parser.error("nothing to evaluate: give --data ROOT... and/or --videos DIR")
    return args


@dataclass
class Scored:
    """One root's (or all roots') labelled predictions."""

    paths: list[Path]
    labels: np.ndarray  # (N,) 0 real, 1 fake
    probs: np.ndarray  # (N,) calibrated P(fake), as the detector reports it
    face_found: np.ndarray | None  # (N,) bool; None with --no-detect


def score_root(detector: Detector, root: str, args: argparse.Namespace) -> Scored:
    """Predictions for ``root/args.split`` (limited to ``args.limit`` per class)."""
    paths, labels = balanced_subset(*list_split(root, args.split), args.limit)
    desc = f"{Path(root).name}/{args.split}"
    if args.no_detect:
        return Scored(paths, labels, score_whole_images(detector, paths, args.batch_size, desc), None)
    results = [detector.predict_image(p) for p in tqdm(paths, desc=desc, unit="img", leave=False)]
    return Scored(paths, labels, np.array([r.prob_fake for r in results]), np.array([r.face_found for r in results]))


def score_whole_images(detector: Detector, paths: list[Path], batch_size: int, desc: str) -> np.ndarray:
    """P(fake) of each whole image, in batches (``Detector.score_crops``)."""
    out = []
    for i in tqdm(range(0, len(paths), batch_size), desc=desc, unit="batch", leave=False):
        out.append(detector.score_crops([load_image(p, detector.max_pixels) for p in paths[i : i + batch_size]])[0])
    return np.concatenate(out)


def merge(parts: list[Scored]) -> Scored:
    found = None if parts[0].face_found is None else np.concatenate([p.face_found for p in parts])
    return Scored([q for p in parts for q in p.paths], np.concatenate([p.labels for p in parts]),
                  np.concatenate([p.probs for p in parts]), found)


def metrics_of(scored: Scored, detector: Detector) -> dict[str, Any]:
    """Every metric of ``scored`` at the weights' threshold, with ECE/Brier before and after temperature."""
    calibration = detector.calibration
    out = summary(scored.labels, scored.probs, calibration.threshold, calibration.uncalibrated(scored.probs))
    if scored.face_found is not None:
        out["face_found_rate"] = float(scored.face_found.mean())
    return out


def evaluate_videos(detector: Detector, folder: Path, n_frames: int) -> dict[str, Any]:
    """Video-level metrics (``Detector.predict_video``'s mean over frames) and frame-level AUC."""
    paths, labels = list_labelled(folder, VIDEO_EXTS)
    rows, frame_ids, frame_labels, frame_probs = [], [], [], []
    for vid, (path, label) in enumerate(zip(tqdm(paths, desc="videos", unit="clip", leave=False), labels)):
        result = detector.predict_video(path, n_frames=n_frames)
        rows.append({"path": str(path), "label": CLASSES[label], "prob_fake": result.prob_fake,
                     "face_found": result.face_found, "frames_with_face": result.frames_with_face,
                     "frames_analysed": result.frames_analysed})
        scored = [f.prob_fake for f in result.frames if f.prob_fake is not None]
        frame_ids += [vid] * len(scored)
        frame_labels += [int(label)] * len(scored)
        frame_probs += scored
    out: dict[str, Any] = {"videos": summary(labels, np.array([r["prob_fake"] for r in rows]), detector.calibration.threshold),
                           "per_video": rows}
    if len(set(frame_labels)) == 2:
        out["frame_auc"] = roc_auc(np.array(frame_labels), np.array(frame_probs))
        out["video_auc_mean_of_frames"] = video_auc(np.array(frame_ids), np.array(frame_labels), np.array(frame_probs))
    return out


def write_predictions(scored: Scored, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    found = scored.face_found if scored.face_found is not None else [""] * len(scored.paths)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "prob_fake", "face_found"])
        for p, label, prob, face in zip(scored.paths, scored.labels, scored.probs, found):
            writer.writerow([str(p), CLASSES[label], f"{prob:.6f}", face])


def write_plots(per_root: dict[str, Scored], overall: Scored, calibration: Calibration, folder: Path) -> None:
    """roc.png (one curve per root and overall) and reliability.png (overall, before/after temperature)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, scored in {**per_root, "overall": overall}.items():
        if len(np.unique(scored.labels)) == 2:
            fpr, tpr, _ = roc_curve(scored.labels, scored.probs)
            ax.plot(fpr, tpr, label=Path(name).name)
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set(xlabel="false positive rate (real called fake)", ylabel="true positive rate (fake caught)", title="ROC")
    ax.legend(loc="lower right")
    fig.savefig(folder / "roc.png", dpi=100, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 5))
    for name, probs in (("temperature 1", calibration.uncalibrated(overall.probs)),
                        (f"temperature {calibration.temperature:.2f}", overall.probs)):
        confidence, accuracy, counts = calibration_bins(overall.labels, probs)
        ax.plot(confidence[counts > 0], accuracy[counts > 0], marker="o", label=name)
    ax.plot([0.5, 1], [0.5, 1], "k:", lw=1)
    ax.set(xlabel="confidence of the decision at 0.5", ylabel="accuracy", title="Reliability (15 bins)")
    ax.legend(loc="upper left")
    fig.savefig(folder / "reliability.png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def print_table(report: dict[str, Any]) -> None:
    print(f"{'set':<32} {'n':>6} {'acc':>6} {'auc':>6} {'ap':>6} {'eer':>6} {'ece T=1->T':>13} {'brier T=1->T':>13}")
    for name, m in {**report["roots"], "overall": report.get("overall")}.items():
        if m is None:
            continue
        print(f"{Path(name).name:<32} {m['n']:>6} {m['accuracy']:>6.4f} {m.get('roc_auc', float('nan')):>6.4f} "
              f"{m.get('average_precision', float('nan')):>6.4f} {m.get('eer', float('nan')):>6.4f} "
              f"{m['ece_uncalibrated']:>6.4f}->{m['ece']:.4f} {m['brier_uncalibrated']:>6.4f}->{m['brier']:.4f}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    detector = load_detector(args.weights, device=args.device, face_model=args.face_model)
    if not detector.meta.trained:
        print(f"warning: {detector.weights_path} is marked untrained; its scores mean nothing", file=sys.stderr)
    report: dict[str, Any] = {"weights": str(detector.weights_path), "detector": detector.info(), "split": args.split,
                              "mode": "no-detect" if args.no_detect else "detect", "roots": {}}
    per_root = {root: score_root(detector, root, args) for root in args.data}
    report["roots"] = {root: metrics_of(scored, detector) for root, scored in per_root.items()}
    if per_root:
        overall = merge(list(per_root.values()))
        report["overall"] = metrics_of(overall, detector)
        print_table(report)
        if args.predictions:
            write_predictions(overall, args.predictions)
        if args.plots:
            write_plots(per_root, overall, detector.calibration, args.plots)
    if args.videos:
        report["videos"] = evaluate_videos(detector, args.videos, args.frames)
        print(f"videos: {json.dumps(report['videos']['videos'])}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError) as err:
        sys.exit(f"evaluate.py: error: {err}")
