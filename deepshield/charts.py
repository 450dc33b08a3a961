"""The app's charts: the Real / Fake donut, a video's P(Real) timeline and its histogram of frame scores.
Built on ``matplotlib.figure.Figure``, not pyplot: pyplot's global state is not thread-safe, and the app's
events run in threads."""

from __future__ import annotations

from typing import Any

from matplotlib.figure import Figure

from .draw import FAKE_HEX, REAL_HEX


def donut(prob_real: float) -> Figure:
    figure = Figure(figsize=(3.2, 3.2))
    axes = figure.subplots()
    axes.pie([prob_real, 1 - prob_real], colors=[REAL_HEX, FAKE_HEX], startangle=90, counterclock=False,
             wedgeprops={"width": 0.35}, labels=[f"Real {prob_real:.0%}", f"Fake {1 - prob_real:.0%}"])
    axes.set_aspect("equal")
    figure.tight_layout()
    return figure


def timeline(frames: list[dict[str, Any]], threshold: float) -> Figure:
    figure = Figure(figsize=(7, 2.8))
    axes = figure.subplots()
    scored = [f for f in frames if f["prob_real"] is not None]
    xs = [f["time_s"] if f["time_s"] is not None else f["index"] for f in scored]
    axes.plot(xs, [f["prob_real"] for f in scored], "o-", color=REAL_HEX)
    axes.axhline(1 - threshold, color="grey", linestyle="--", label=f"threshold (P(Real) = {1 - threshold:.2f})")
    axes.set(ylim=(0, 1), ylabel="P(Real)", xlabel="time (s)" if frames and frames[0]["time_s"] is not None else "frame")
    axes.legend(loc="lower right")
    figure.tight_layout()
    return figure


def histogram(frames: list[dict[str, Any]]) -> Figure:
    figure = Figure(figsize=(4, 2.8))
    axes = figure.subplots()
    axes.hist([f["prob_real"] for f in frames if f["prob_real"] is not None], bins=10, range=(0, 1), color="#57606a")
    axes.set(xlabel="P(Real) per frame", ylabel="frames")
    figure.tight_layout()
    return figure
