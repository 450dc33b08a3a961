"""Evaluate DeepShield weights on labelled images (and optionally videos).

    python evaluate.py --data ROOT [ROOT...] --split test [--weights FILE] [--json OUT.json]
                       [--predictions OUT.csv] [--plots DIR] [--no-detect] [--videos DIR] [--limit N]
                       [--perturb jpeg:50,jpeg:70,scale:0.5,blur:1.5] [--subset LIST.txt]

Default mode is the full inference path, exactly ``Detector.predict_image`` (load -> face detection ->
crop -> model); --no-detect scores the images as given (``Detector.score_crops`` on whole images, in
batches). Threshold metrics use the weights' threshold on the calibrated P(fake); ECE and Brier are
reported before (temperature 1) and after the weights' temperature; all per root and overall. A root that holds
one class only (generated faces, say) is measured against the other roots' images of the other class (the
report names them). --perturb re-scores every image under each corruption (applied to the whole image before
face detection) and reports ROC-AUC beside the clean one. --videos compares the frame aggregates of
``deepshield.video.AGGREGATES`` and the frames' majority vote. --subset reports the metrics of listed images
(paths relative to a root, one a line, # comments), e.g. the real portraits of a group a model might be biased
against.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from tqdm import tqdm

from deepshield.augment import Perturbation
from deepshield.calibration import Calibration
from deepshield.cli import add_detector_args, detector_from_args
from deepshield.data import CLASSES, VIDEO_EXTS, balanced_subset, list_labelled, list_split
from deepshield.detector import Detector
from deepshield.media import load_image
from deepshield.metrics import calibration_bins, paired_with, roc_auc, roc_curve, summary, video_auc
from deepshield.video import AGGREGATES, DEFAULT_FRAMES, aggregate


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
    parser.add_argument("--perturb", type=perturbations, default=[], metavar="KIND:N,...",
                        help="also re-score under each corruption: jpeg:QUALITY, scale:FACTOR (down and back up), "
                             "blur:SIGMA, e.g. jpeg:50,jpeg:70,scale:0.5,blur:1.5")
    parser.add_argument("--subset", type=Path, action="append", default=[], metavar="LIST.txt",
                        help="also report the metrics of the images listed (ROOT-relative paths, one a line); repeatable")
    add_detector_args(parser, threshold=False)
    args = parser.parse_args(argv)
    if not args.data and not args.videos:
        parser.error("nothing to evaluate: give --data ROOT... and/or --videos DIR")
    return args


def perturbations(text: str) -> list[Perturbation]:
    try:
        return [Perturbation.parse(spec) for spec in text.split(",") if spec.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


@dataclass
class Scored:
    """One root's (or all roots') labelled predictions."""

    paths: list[Path]
    labels: np.ndarray  # (N,) 0 real, 1 fake
    probs: np.ndarray  # (N,) calibrated P(fake), as the detector reports it
    face_found: np.ndarray | None  # (N,) bool; None with --no-detect


def score_root(detector: Detector, root: str, args: argparse.Namespace, perturb: Perturbation | None = None) -> Scored:
    """Predictions for ``root/args.split`` (limited to ``args.limit`` per class), each image corrupted by
    ``perturb`` first when given."""
    paths, labels = balanced_subset(*list_split(root, args.split), args.limit)
    desc = f"{Path(root).name}/{args.split}" + (f" {perturb}" if perturb else "")

    def load(path: Path) -> np.ndarray:
        image = load_image(path, detector.max_pixels)
        return perturb(image) if perturb else image

    if args.no_detect:
        return Scored(paths, labels, score_whole_images(detector, paths, load, args.batch_size, desc), None)
    results = [detector.predict_image(load(p)) for p in tqdm(paths, desc=desc, unit="img", leave=False)]
    return Scored(paths, labels, np.array([r.prob_fake for r in results]), np.array([r.face_found for r in results]))


def score_whole_images(detector: Detector, paths: list[Path], load: Callable[[Path], np.ndarray], batch_size: int,
                       desc: str) -> np.ndarray:
    """P(fake) of each whole image (as ``load`` gives it), in batches (``Detector.score_crops``)."""
    out = []
    for i in tqdm(range(0, len(paths), batch_size), desc=desc, unit="batch", leave=False):
        out.append(detector.score_crops([load(p) for p in paths[i : i + batch_size]])[0])
    return np.concatenate(out)


def merge(parts: list[Scored]) -> Scored:
    found = None if parts[0].face_found is None else np.concatenate([p.face_found for p in parts])
    return Scored([q for p in parts for q in p.paths], np.concatenate([p.labels for p in parts]),
                  np.concatenate([p.probs for p in parts]), found)


def subset(scored: Scored, mask: np.ndarray) -> Scored:
    found = None if scored.face_found is None else scored.face_found[mask]
    return Scored([p for p, keep in zip(scored.paths, mask) if keep], scored.labels[mask], scored.probs[mask], found)


def metrics_of(scored: Scored, detector: Detector) -> dict[str, Any]:
    """Every metric of ``scored`` at the weights' threshold, with ECE/Brier before and after temperature."""
    calibration = detector.calibration
    out = summary(scored.labels, scored.probs, calibration.threshold, calibration.uncalibrated(scored.probs))
    if scored.face_found is not None:
        out["face_found_rate"] = float(scored.face_found.mean())
    return out


def per_root_metrics(per_root: dict[str, Scored], detector: Detector) -> dict[str, dict[str, Any]]:
    """Each root's metrics; a one-class root's are over its images and the other roots' images of the other
    class, named in "paired_with"."""
    names = list(per_root)
    overall = merge(list(per_root.values()))
    root_ids = np.concatenate([np.full(len(per_root[name].labels), r) for r, name in enumerate(names)])
    out = {}
    for r, name in enumerate(names):
        mask, others = paired_with(root_ids, overall.labels, r)
        out[name] = {**metrics_of(subset(overall, mask), detector), "paired_with": [names[o] for o in others]}
    return out


def read_list(path: Path) -> list[str]:
    """The entries of a list file: one path a line; blank lines and # comments skipped."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def subset_metrics(per_root: dict[str, Scored], lists: list[Path], detector: Detector) -> dict[str, dict[str, Any]]:
    """Metrics (and mean P(fake)) of the scored images named in each list. Raises: ValueError naming a listed
    image that was not scored (a typo, another split, or left out by --limit)."""
    overall = merge(list(per_root.values()))
    index = {p.resolve(): i for i, p in enumerate(overall.paths)}
    out = {}
    for path in lists:
        wanted = read_list(path)
        found = {name: next((index[f] for f in (Path(root, name).resolve() for root in per_root) if f in index), None)
                 for name in wanted}
        missing = [name for name, i in found.items() if i is None]
        if missing or not wanted:
            raise ValueError(f"--subset {path}: {len(missing)} of {len(wanted)} listed images were not scored "
                             f"(e.g. {missing[:3]}); paths are relative to a --data root and must be in --split")
        mask = np.zeros(len(overall.labels), bool)
        mask[list(found.values())] = True
        chosen = subset(overall, mask)
        out[str(path)] = {**metrics_of(chosen, detector), "mean_prob_fake": float(chosen.probs.mean())}
    return out


def perturbed_aucs(detector: Detector, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """For each ``args.perturb``: ROC-AUC (and accuracy) per root and overall on the corrupted images."""
    out = {}
    for perturb in args.perturb:
        per_root = {root: score_root(detector, root, args, perturb) for root in args.data}
        roots = per_root_metrics(per_root, detector)
        out[str(perturb)] = {name: {k: m.get(k) for k in ("n", "roc_auc", "accuracy")}
                             for name, m in {**roots, "overall": metrics_of(merge(list(per_root.values())), detector)}.items()}
    return out


def evaluate_videos(detector: Detector, folder: Path, n_frames: int) -> dict[str, Any]:
    """Video-level metrics (``Detector.predict_video``'s verdict), each frame aggregate of
    ``deepshield.video.AGGREGATES`` and the frames' majority vote side by side, and frame-level AUC."""
    paths, labels = list_labelled(folder, VIDEO_EXTS)
    threshold = detector.calibration.threshold
    rows, frame_ids, frame_labels, frame_probs = [], [], [], []
    for vid, (path, label) in enumerate(zip(tqdm(paths, desc="videos", unit="clip", leave=False), labels)):
        result = detector.predict_video(path, n_frames=n_frames)
        probs = [f.prob_fake for f in result.frames]
        scored = [p for p in probs if p is not None]
        rows.append({"path": str(path), "label": CLASSES[label], "prob_fake": result.prob_fake,
                     "face_found": result.face_found, "frames_with_face": result.frames_with_face,
                     "frames_analysed": result.frames_analysed, "fake_frames": result.fake_frames,
                     "aggregates": {rule: aggregate(probs, threshold, rule).prob_fake for rule in AGGREGATES},
                     "frame_probs": scored})
        frame_ids += [vid] * len(scored)
        frame_labels += [int(label)] * len(scored)
        frame_probs += scored
    out: dict[str, Any] = {"videos": summary(labels, np.array([r["prob_fake"] for r in rows]), threshold),
                           "aggregates": compare_aggregates(rows, labels, threshold), "per_video": rows}
    if len(set(frame_labels)) == 2:
        out["frame_auc"] = roc_auc(np.array(frame_labels), np.array(frame_probs))
        out["video_auc_mean_of_frames"] = video_auc(np.array(frame_ids), np.array(frame_labels), np.array(frame_probs))
    return out


def compare_aggregates(rows: list[dict[str, Any]], labels: np.ndarray, threshold: float) -> dict[str, dict[str, Any]]:
    """Per aggregate (and the majority vote, a share of fake frames judged at one half): videos right at the
    threshold, ROC-AUC over videos, and the smallest margin to the threshold of a right call."""
    scores = {rule: np.array([r["aggregates"][rule] for r in rows]) for rule in AGGREGATES}
    out = {}
    for rule, values in scores.items():
        right = (values >= threshold) == (labels == 1)
        margins = np.abs(values - threshold)[right]
        out[rule] = {"right": int(right.sum()), "n": len(rows),
                     "roc_auc": roc_auc(labels, values) if len(np.unique(labels)) == 2 else None,
                     "smallest_right_margin": float(margins.min()) if len(margins) else None}
    share = np.array([r["fake_frames"] / max(1, r["frames_with_face"]) for r in rows])
    majority = (share > 0.5) == (labels == 1)
    out["majority"] = {"right": int(majority.sum()), "n": len(rows),
                       "roc_auc": roc_auc(labels, share) if len(np.unique(labels)) == 2 else None}
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
    for name, m in report["roots"].items():
        if m.get("paired_with"):
            print(f"{Path(name).name} holds one class: measured with the other class of "
                  f"{', '.join(Path(o).name for o in m['paired_with'])}")


def print_perturbed(report: dict[str, Any]) -> None:
    """ROC-AUC per root under each corruption, and its change from the clean images."""
    clean = {**report["roots"], "overall": report["overall"]}
    names = [name for name, m in clean.items() if "roc_auc" in m]
    print(f"{'ROC-AUC':<12}" + "".join(f"{Path(n).name[:20]:>22}" for n in names))
    print(f"{'clean':<12}" + "".join(f"{clean[n].get('roc_auc', float('nan')):>22.4f}" for n in names))
    for perturb, roots in report["perturbed"].items():
        cells = [f"{roots[n]['roc_auc']:.4f} ({roots[n]['roc_auc'] - clean[n]['roc_auc']:+.4f})" for n in names]
        print(f"{perturb:<12}" + "".join(f"{c:>22}" for c in cells))


def print_subsets(subsets: dict[str, Any]) -> None:
    for name, m in subsets.items():
        print(f"subset {name}: {m['n']} images; {m['confusion_matrix'][0][1]} of {m['n_real']} reals called fake "
              f"(false-positive rate {m['false_positive_rate']:.3f}); mean P(fake) {m['mean_prob_fake']:.3f}")


def print_videos(videos: dict[str, Any]) -> None:
    print(f"videos: {json.dumps(videos['videos'])}")
    for rule, m in videos["aggregates"].items():
        print(f"  {rule:<10} right {m['right']}/{m['n']}  video ROC-AUC {m['roc_auc']}  "
              f"smallest right margin {m.get('smallest_right_margin')}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    detector = detector_from_args(args)
    if not detector.meta.trained:
        print(f"warning: {detector.weights_path} is marked untrained; its scores mean nothing", file=sys.stderr)
    report: dict[str, Any] = {"weights": str(detector.weights_path), "detector": detector.info(), "split": args.split,
                              "mode": "no-detect" if args.no_detect else "detect", "roots": {}}
    per_root = {root: score_root(detector, root, args) for root in args.data}
    if per_root:
        report["roots"] = per_root_metrics(per_root, detector)
        overall = merge(list(per_root.values()))
        report["overall"] = metrics_of(overall, detector)
        print_table(report)
        if args.predictions:
            write_predictions(overall, args.predictions)
        if args.plots:
            write_plots(per_root, overall, detector.calibration, args.plots)
        if args.subset:
            report["subsets"] = subset_metrics(per_root, args.subset, detector)
            print_subsets(report["subsets"])
        if args.perturb:
            report["perturbed"] = perturbed_aucs(detector, args)
            print_perturbed(report)
    if args.videos:
        report["videos"] = evaluate_videos(detector, args.videos, args.frames)
        print_videos(report["videos"])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError) as err:
        sys.exit(f"evaluate.py: error: {err}")
