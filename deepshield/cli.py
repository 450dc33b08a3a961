"""What every command line shares: the exit code for a bad input, the detector flags and their checks, and the
number of usable cores. Used by ``predict``, ``realtime``, ``prepare``, ``bench``, ``train.py`` and ``evaluate.py``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .detector import Detector

EXIT_BAD_INPUT = 2  # what every command-line tool returns for a bad input
FACE_MODEL_HELP = ("YuNet face detector model (default: $DEEPSHIELD_FACE_MODEL, weights/face_detection_yunet.onnx, "
                   "else the Haar cascade)")


def add_detector_args(parser: argparse.ArgumentParser, threshold: bool = True) -> None:
    """--weights, --device, --face-model, --backend and (unless ``threshold`` is False) --threshold, as load_detector
    takes them (``detector_from_args``)."""
    parser.add_argument("--weights", type=Path, metavar="FILE", help="a .safetensors weights file (default: as "
                        "load_detector finds it: $DEEPSHIELD_WEIGHTS, weights/, the Hugging Face cache)")
    parser.add_argument("--device", help="cpu, cuda, mps (default: $DEEPSHIELD_DEVICE or the best available)")
    parser.add_argument("--face-model", type=Path, metavar="ONNX", help=FACE_MODEL_HELP)
    parser.add_argument("--backend", choices=("torch", "onnx"), help="what scores the crops: torch, or onnx (ONNX "
                        "Runtime on CPU, pip install onnx onnxruntime; Grad-CAM still runs in torch) "
                        "(default: $DEEPSHIELD_BACKEND or torch)")
    if threshold:
        parser.add_argument("--threshold", type=float, help="decision threshold on P(fake) (default: the weights')")


def detector_from_args(args: argparse.Namespace) -> Detector:
    """``load_detector`` with the flags of ``add_detector_args``."""
    from .detector import load_detector  # torch is imported only by the commands that need a detector

    return load_detector(args.weights, device=args.device, face_model=args.face_model, backend=args.backend)


def check_threshold(threshold: float | None) -> None:
    """Raises: ValueError unless ``threshold`` is None or strictly between 0 and 1."""
    if threshold is not None and not 0.0 < threshold < 1.0:
        raise ValueError(f"--threshold must be between 0 and 1, got {threshold}")


def usable_cores() -> int:
    """Cores this process may run on (fewer than ``os.cpu_count()`` under taskset or a container's cpuset)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
