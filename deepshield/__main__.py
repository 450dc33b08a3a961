"""Command line: ``python -m deepshield predict PATH [PATH...]`` for images and videos,
``python -m deepshield export --onnx OUT.onnx`` for other runtimes, and
``python -m deepshield publish --model REPO [--space SPACE] [--dry-run]`` for the Hugging Face Hub."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


from .detector import Detector, ImageResult, VideoResult, shown_label
from .cli import EXIT_BAD_INPUT, add_detector_args, check_threshold, detector_from_args
from .media import sniff_media, write_image
from .video import DEFAULT_FRAMES, MAX_FRAMES, MIN_FRAMES, check_n_frames



def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m deepshield", description="Offline, explainable deepfake detection for faces.")
    commands = parser.add_subparsers(dest="command", required=True)
    predict = commands.add_parser("predict", help="classify images and videos (told apart by content)")
    predict.add_argument("paths", nargs="+", metavar="PATH", help="image or video files")
    predict.add_argument("--frames", type=int, default=DEFAULT_FRAMES, help=f"frames sampled per video, {MIN_FRAMES}-{MAX_FRAMES} (default {DEFAULT_FRAMES})")
    predict.add_argument("--gradcam", type=Path, metavar="OUT_DIR", help="write a Grad-CAM overlay PNG per input here")
    predict.add_argument("--json", action="store_true", help="print one JSON object per input")
    add_detector_args(predict)
    export = commands.add_parser("export", help="write the classifier as ONNX, its metadata inside")
    export.add_argument("--onnx", type=Path, required=True, metavar="OUT.onnx", help="where to write it")
    export.add_argument("--weights", type=Path, metavar="FILE", help="a .safetensors weights file (default: as "
                        "load_detector finds it)")
    scan = commands.add_parser("scan", help="score every image and video under folders into Parquet / CSV tables")
    scan.add_argument("paths", nargs="+", metavar="PATH", help="folders (walked) and files")
    scan.add_argument("--out", type=Path, required=True, metavar="OUT.parquet|OUT.csv",
                      help="the per-file table; the per-face table goes beside it as OUT.faces.parquet|csv")
    scan.add_argument("--frames", type=int, default=DEFAULT_FRAMES, help=f"frames sampled per video, {MIN_FRAMES}-{MAX_FRAMES} (default {DEFAULT_FRAMES})")
    scan.add_argument("--workers", type=int, default=-1, metavar="N", help="worker processes, each with its own "
                      "detector and cores/N threads; 0: this process (default: half the usable cores, at least 1)")
    scan.add_argument("--ray", metavar="ADDRESS", help="run on Ray instead: a cluster address, auto, or local "
                      "(pip install 'ray[data]')")
    scan.add_argument("--flush-every", type=int, default=32, metavar="N", help="write finished rows every N files "
                      "(and every 10 s) (default 32)")
    add_detector_args(scan, threshold=False)
    publish = commands.add_parser("publish", help="upload the weights as a Hub model repo (and the app as a Space)")
    publish.add_argument("--model", required=True, metavar="REPO_ID", help="model repo, e.g. you/deepshield-lite0")
    publish.add_argument("--space", metavar="SPACE_ID", help="also upload the app as this Gradio Space")
    publish.add_argument("--dry-run", action="store_true", help="list every file, destination, size and LFS; send nothing")
    return parser


def predict_path(detector: Detector, path: Path, args: argparse.Namespace) -> ImageResult | VideoResult:
    """Run the right prediction for ``path``'s content; write its overlay when asked."""
    explain = args.gradcam is not None
    if sniff_media(path) == "image":
        result: ImageResult | VideoResult = detector.predict_image(path, explain=explain, threshold=args.threshold)
    else:
        result = detector.predict_video(path, args.frames, explain=explain, threshold=args.threshold)
    if explain and result.overlay is not None:
        write_image(args.gradcam / f"{path.name}.gradcam.png", result.overlay)
    return result


def summary_line(path: Path, result: ImageResult | VideoResult) -> str:
    label = shown_label(result.label, result.uncertain)
    head = f"{path}: {label} (P(real)={result.prob_real:.3f}, P(fake)={result.prob_fake:.3f}, confidence {result.confidence:.0%})"
    if isinstance(result, VideoResult):
        return head + f", {result.frames_with_face}/{result.frames_analysed} frames with a face, {result.fake_frames} fake / {result.real_frames} real"
    return head + (f", {len(result.faces)} face(s)" if result.face_found else ", no face found: whole image classified")


def run_predict(args: argparse.Namespace) -> int:
    try:
        check_n_frames(args.frames, "--frames")
        check_threshold(args.threshold)
        detector = detector_from_args(args)
    except (FileNotFoundError, ValueError) as err:
        print(f"deepshield: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    status = 0
    for path in map(Path, args.paths):
        record: dict[str, Any] = {"path": str(path)}
        try:
            result = predict_path(detector, path, args)
        except (FileNotFoundError, ValueError) as err:
            status = EXIT_BAD_INPUT
            print(f"deepshield: {err}", file=sys.stderr)
            record["error"] = str(err)
        else:
            record.update(kind="video" if isinstance(result, VideoResult) else "image", **result.to_dict())
            if not args.json:
                print(summary_line(path, result))
        if args.json:
            print(json.dumps(record), flush=True)
    return status


def run_publish(args: argparse.Namespace) -> int:
    from .publish import describe, plan, publish

    try:
        uploads = plan(args.model, args.space)
    except FileNotFoundError as err:
        print(f"deepshield: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(describe(uploads))
    if args.dry_run:
        print("dry run: nothing was sent")
        return 0
    from huggingface_hub.errors import HfHubHTTPError

    try:
        publish(uploads)
    except (HfHubHTTPError, OSError) as err:  # no token, no network, no rights on the repo
        print(f"deepshield: publish failed: {err}", file=sys.stderr)
        return 1
    return 0


def run_export(args: argparse.Namespace) -> int:
    from .export import export_onnx
    from .weights import find_weights, load_weights

    try:
        path = find_weights(args.weights)
        model, meta = load_weights(path)
        out = export_onnx(model, meta, args.onnx)
    except (FileNotFoundError, ValueError) as err:
        print(f"deepshield: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"{out}: {meta.arch} @ {meta.img_size} px from {path} ({out.stat().st_size / 1e6:.1f} MB), input 'crops' "
          f"(N, 3, {meta.img_size}, {meta.img_size}) float32, output 'logit' (N,); metadata: the weights'")
    return 0


def run_scan(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .cli import usable_cores
    from .scan import ScanJob, faces_path, run_scan

    workers = args.workers if args.workers >= 0 else max(1, usable_cores() // 2)
    kwargs = {"weights": args.weights, "device": args.device, "face_model": args.face_model, "backend": args.backend}
    job = ScanJob(args.paths, args.out, args.frames, workers, args.ray, kwargs, args.flush_every)
    try:
        check_n_frames(args.frames, "--frames")
        if args.flush_every < 1:
            raise ValueError(f"--flush-every must be >= 1, got {args.flush_every}")
        counts = run_scan(job, lambda total: tqdm(total=total, unit="file", desc="scan", dynamic_ncols=True))
    except (FileNotFoundError, ValueError) as err:
        print(f"deepshield: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"deepshield: interrupted; finished files are saved in {args.out}.parts: run the same command "
              "again to scan the rest", file=sys.stderr)
        return 130
    summary = ", ".join(f"{counts[k]} {k}" for k in ("real", "fake", "uncertain", "no face", "error", "skipped"))
    before = counts.pop("done before")
    print(f"scanned {sum(counts.values()) - before} files ({before} done before): "
          f"{summary} -> {args.out}, {faces_path(args.out)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands = {"publish": run_publish, "export": run_export, "predict": run_predict, "scan": run_scan}
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
