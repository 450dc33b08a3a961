"""DeepShield web app and API, fully offline: ``python app.py`` -> http://localhost:7860.

One server: the Gradio UI (Image / Video / Webcam / Batch tabs, whose events are also named ``gradio_client``
endpoints) mounted on a FastAPI app that adds plain REST (``deepshield/server.py``: ``/health``, ``/predict/image``,
``/predict/video``), a WebSocket (``/ws/webcam``) and OpenAPI docs (``/docs``).
"""

from __future__ import annotations

import atexit
import csv
import json
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no telemetry

import gradio as gr
import numpy as np
from fastapi import FastAPI

from deepshield import __version__, load_detector
from deepshield.detector import Detector, ImageResult, shown_label
from deepshield.media import load_image
from deepshield.charts import donut, histogram, timeline
from deepshield.draw import FAKE_HEX, REAL_HEX, UNSURE_HEX, FpsMeter, annotate, draw_faces
from deepshield.scan import scan_batch, unpack
from deepshield.server import Limits, add_api_routes
from deepshield.video import DEFAULT_FRAMES, MAX_FRAMES, MIN_FRAMES, check_n_frames


EXAMPLES = Path(__file__).resolve().parent / "examples"
IMAGE_TYPES = [".jpg", ".jpeg", ".png", ".webp"]
DOWNLOADS_KEEP_S = 600
VIDEO_TYPES = [".mp4", ".avi", ".mov", ".webm"]
# Below this validation ROC-AUC (the bar the shipped model is held to on dfdc-faces) the sidebar says the model is weak.
WEAK_AUC = 0.90
# How the sidebar names a model's starting point (ModelMeta.init).
INITS = {"imagenet": "ImageNet weights", "scratch": "scratch (random init)"}
# System fonts only: the default theme would fetch Google Fonts, and nothing may leave the machine.
THEME = gr.themes.Default(font=["system-ui", "Segoe UI", "Helvetica", "Arial", "sans-serif"],
                          font_mono=["ui-monospace", "Menlo", "Consolas", "monospace"])


# --- presentation ---------------------------------------------------------------------------------


def verdict_card(data: dict[str, Any], subject: str, labels: tuple[str, str] = ("Real", "Fake")) -> str:
    """The Real / Fake / Uncertain card as HTML; ``labels`` are the weights' (real, fake) labels."""
    label = shown_label(data["label"], data["uncertain"])
    colour = {labels[0]: REAL_HEX, labels[1]: FAKE_HEX}.get(label, UNSURE_HEX)
    note = "" if data.get("face_found", True) else "<div>No face found: the whole input was classified.</div>"
    return (
        f'<div class="verdict" style="border-left:8px solid {colour};padding:8px 16px">'
        f'<div style="font-size:2em;font-weight:700;color:{colour}" id="verdict-label">{label}</div>'
        f"<div>{subject} verdict: {data['label']} with {data['confidence']:.0%} confidence</div>"
        f"<div>P(Real) = {data['prob_real']:.3f} &nbsp; P(Fake) = {data['prob_fake']:.3f}</div>{note}</div>"
    )


def interpretation_table(threshold: float, band: float) -> str:
    """What P(Real) ranges mean at this threshold (on P(Fake)) and uncertainty band."""
    low, high = max(0.0, 1 - threshold - band), min(1.0, 1 - threshold + band)
    return (
        "| P(Real) | Reading |\n|---|---|\n"
        f"| {high:.2f} - 1.00 | **Real**: no manipulation found |\n"
        f"| {low:.2f} - {high:.2f} | **Uncertain**: too close to the threshold to call |\n"
        f"| 0.00 - {low:.2f} | **Fake**: manipulation likely |\n\n"
        "A score is evidence, not proof: check the heatmap and the source."
    )


def face_rows(data: dict[str, Any]) -> list[list[Any]]:
    return [[i, *face["box"], round(1 - face["prob_fake"], 4), round(face["prob_fake"], 4)]
            for i, face in enumerate(data.get("faces", []), start=1)]


FACE_HEADERS = ["face", "x", "y", "w", "h", "P(Real)", "P(Fake)"]
FRAME_HEADERS = ["frame", "time (s)", "faces", "P(Real)", "P(Fake)"]


def frame_rows(data: dict[str, Any]) -> list[list[Any]]:
    return [[f["index"], f["time_s"], f["faces"], f["prob_real"], f["prob_fake"]] for f in data.get("frames", [])]


BATCH_HEADERS = ["file", "kind", "verdict", "P(Fake)", "faces", "frames", "error"]


def json_row(row: dict[str, Any]) -> dict[str, Any]:
    """A scan row for the API: "file" rather than "path" (gradio_client would fetch a "path" as a file), and
    no NaN (not JSON): a file without a score has P(fake) null."""
    out = {"file": row["path"], **{k: v for k, v in row.items() if k != "path"}}
    out["prob_fake"] = None if row["prob_fake"] != row["prob_fake"] else row["prob_fake"]
    return out


def batch_rows(rows: list[dict[str, Any]]) -> list[list[Any]]:
    """The Batch tab's table: one row per file, the verdict as a person reads it (Uncertain inside the band)."""
    return [[r["file"], r["kind"], shown_label(r["label"], r["uncertain"]) if r["label"] else "",
             None if r["prob_fake"] is None else round(r["prob_fake"], 4), r["faces"], r["frames"], r["error"]]
            for r in rows]


def batch_summary_markdown(counts: dict[str, int]) -> str:
    keys = ("real", "fake", "uncertain", "no face", "error", "skipped")
    return ("| files | " + " | ".join(keys) + " |\n|" + "---|" * (len(keys) + 1) + "\n"
            f"| {sum(counts.values())} | " + " | ".join(str(counts.get(k, 0)) for k in keys) + " |")


# --- the app ---------------------------------------------------------------------------------------


@dataclass
class WebcamState:
    """Per-browser-session webcam state: frame counter, last prediction, frame rate."""

    count: int = 0
    last: ImageResult | None = None
    meter: FpsMeter = field(default_factory=FpsMeter)


Upload = dict[str, Any] | str | None  # an event input with preprocess=False: Gradio's FileData dict


def upload_path(upload: Upload) -> str | None:
    """The server-side path of an uploaded file. Events take uploads raw (``preprocess=False``) so that our
    loader, with its size limit and clear errors, is the only code that decodes them."""
    if isinstance(upload, dict):
        return upload.get("path")
    return upload or None


class DeepShieldApp:
    """The functions behind the UI and the API, sharing one detector."""

    def __init__(self, detector: Detector, limits: Limits, gate: threading.Semaphore) -> None:
        self.detector = detector
        self.limits = limits
        self.gate = gate  # shared with the REST routes: at most ``limits.concurrency`` model calls at once
        self.downloads = Path(tempfile.mkdtemp(prefix="deepshield-downloads-"))
        atexit.register(shutil.rmtree, self.downloads, True)

    # Each public method raises gr.Error with a readable message for bad input (shown in the UI,
    # returned to gradio_client), never a stack trace.

    def predict_image(self, upload: Upload, gradcam: bool, threshold: float) -> tuple[dict[str, Any], np.ndarray]:
        """Image -> (result JSON, the image with face boxes and, with Grad-CAM on, the heatmap overlay)."""
        image_path = upload_path(upload)
        if not image_path:
            raise gr.Error("Upload an image first (JPG, PNG or WebP).")
        self._check_size(Path(image_path).stat().st_size, self.limits.max_image_bytes, "image")
        image = self._guard(lambda: load_image(image_path, self.detector.max_pixels))
        with self.gate:
            result = self._guard(lambda: self.detector.predict_image(image, explain=gradcam, threshold=threshold))
        base = result.overlay if gradcam and result.overlay is not None else image
        return result.to_dict(), draw_faces(base, result, threshold)

    def predict_video(self, upload: Upload, frames: float, gradcam: bool, threshold: float,
                      progress: gr.Progress = gr.Progress()) -> tuple[dict[str, Any], np.ndarray | None, list[str]]:
        """Video -> (result JSON, Grad-CAM of the most fake frame or None, [CSV, JSON] downloads)."""
        video_path = upload_path(upload)
        if not video_path:
            raise gr.Error("Upload a video first (MP4, AVI, MOV or WebM).")
        self._check_size(Path(video_path).stat().st_size, self.limits.max_video_bytes, "video")
        n_frames = self._guard(lambda: check_n_frames(int(frames) if isinstance(frames, (int, float)) else frames))
        progress(0.0, desc="reading frames")
        with self.gate:
            result = self._guard(lambda: self.detector.predict_video(
                video_path, n_frames, explain=gradcam, threshold=threshold,
                progress=lambda share, message: progress(share, desc=message)))
        data = result.to_dict()
        return data, result.overlay, self._write_downloads(Path(video_path).stem, data)

    def predict_frame(self, upload: Upload, gradcam: bool, threshold: float) -> tuple[dict[str, Any], np.ndarray]:
        """One webcam frame -> (result JSON, the annotated frame)."""
        frame_path = upload_path(upload)
        if not frame_path:
            raise gr.Error("No frame received.")
        frame = self._guard(lambda: load_image(frame_path, self.detector.max_pixels))
        with self.gate:
            result = self._guard(lambda: self.detector.predict_image(frame, explain=gradcam, threshold=threshold))
        return result.to_dict(), annotate(frame, result, threshold=threshold, use_overlay=gradcam)

    def stream_frame(self, frame: np.ndarray | None, state: WebcamState | None, gradcam: bool,
                     threshold: float) -> tuple[np.ndarray | None, WebcamState, dict[str, Any] | None]:
        """Webcam stream: infer on every Nth frame, draw the last result on every frame."""
        state = state or WebcamState()
        if frame is None:
            return None, state, None
        state.count += 1
        fps = state.meter.tick()
        if state.last is None or state.count % self.limits.webcam_every == 1 or self.limits.webcam_every == 1:
            # Never wait for the model behind another request: skip inference and redraw instead, so
            # frames are dropped rather than queued.
            if self.gate.acquire(blocking=False):
                try:
                    state.last = self.detector.predict_image(frame, explain=gradcam, threshold=threshold)
                except ValueError as err:
                    raise gr.Error(str(err)) from err
                finally:
                    self.gate.release()
        shown = annotate(frame, state.last, fps=fps, threshold=threshold, use_overlay=gradcam)
        return shown, state, state.last.to_dict() if state.last else None

    def scan_batch(self, uploads: list[Upload] | None, frames: float,
                   progress: gr.Progress = gr.Progress()) -> tuple[list[dict[str, Any]], dict[str, int], list[str]]:
        """Several images / videos, or .zip archives of them -> (one row per file, the summary counts, the
        per-file and per-face tables as CSV and Parquet). A bad file is a row with its error."""
        named = [(Path(u.get("orig_name") or u["path"]).name if isinstance(u, dict) else Path(u).name, Path(upload_path(u)))
                 for u in uploads or [] if upload_path(u)]
        if not named:
            raise gr.Error("Upload some files first: images, videos, or .zip archives of them.")
        n_frames = self._guard(lambda: check_n_frames(int(frames) if isinstance(frames, (int, float)) else frames))
        folder = self._download_folder()
        files = self._guard(lambda: unpack(named, folder / "unpacked", self.limits.max_batch_files, self.limits.max_batch_bytes))
        with self.gate:
            rows, counts, tables = scan_batch(self.detector, files, n_frames, folder,
                                              lambda i, name: progress(i / len(files), desc=f"{i + 1}/{len(files)}: {name}"))
        shutil.rmtree(folder / "unpacked", ignore_errors=True)
        return [json_row(r) for r in rows], dict(counts), [str(t) for t in tables]

    # helpers

    @staticmethod
    def _guard(call: Any) -> Any:
        try:
            return call()
        except (ValueError, FileNotFoundError) as err:
            raise gr.Error(str(err)) from err

    @staticmethod
    def _check_size(size: int, limit: int, kind: str) -> None:
        if size == 0:
            raise gr.Error(f"The {kind} file is empty (0 bytes).")
        if size > limit:
            raise gr.Error(f"The {kind} is {size / 2**20:.1f} MB, over the {limit / 2**20:.0f} MB limit.")

    def _write_downloads(self, stem: str, data: dict[str, Any]) -> list[str]:
        """The per-frame CSV and JSON for download."""
        folder = self._download_folder()
        csv_path, json_path = folder / f"{stem}_frames.csv", folder / f"{stem}_result.json"
        with csv_path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["index", "time_s", "faces", "prob_real", "prob_fake"])
            writer.writerows(frame_rows(data))
        json_path.write_text(json.dumps(data, indent=2))
        return [str(csv_path), str(json_path)]

    def _download_folder(self) -> Path:
        """A new folder for one event's downloads. Gradio copies them into its own cache when the event
        returns, so older folders here are deleted as new ones are made."""
        for old in self.downloads.iterdir():
            if time.time() - old.stat().st_mtime > DOWNLOADS_KEEP_S:
                shutil.rmtree(old, ignore_errors=True)
        return Path(tempfile.mkdtemp(dir=self.downloads))


def model_info_markdown(detector: Detector) -> str:
    info = detector.info()
    trained = "trained" if info["trained"] else "**untrained (test weights): scores mean nothing**"
    auc = info["valid_roc_auc"]
    quality = "" if auc is None else f"**Validation ROC-AUC:** {auc:.3f}" + (
        " (**a weak detector**: treat a verdict as a hint, not evidence; see `weights/README.md`)" if auc < WEAK_AUC else "") + "  \n"
    return (
        f"**Weights:** `{Path(info['weights']).name if info['weights'] else '-'}` ({trained}, {info['arch']} @ "
        f"{info['img_size']} px{', FFT branch' if info['use_fft'] else ''}"
        f"{', from ' + INITS.get(info['init'], info['init']) if info['init'] else ''})  \n{quality}"
        f"**Face detector:** {info['face_detector']}  \n**Device:** {info['device']} ({info['backend']} scores"
        f"{'' if info['explains'] else '; no Grad-CAM from an ONNX file alone'})  \n"
        f"**Version:** {__version__}. Runs offline: nothing leaves this machine."
    )


def add_examples(component: gr.components.Component, suffixes: list[str]) -> None:
    """Example files of these types from examples/ (their sources are in examples/README.md)."""
    files = sorted(p for p in EXAMPLES.glob("*") if p.suffix.lower() in suffixes)
    if files:
        gr.Examples([[str(p)] for p in files], inputs=component, label="Examples (sources: examples/README.md)")


def build_demo(detector: Detector, limits: Limits = Limits(), gate: threading.Semaphore | None = None) -> gr.Blocks:
    """The Gradio Blocks app; every event that a script may call has an explicit ``api_name``."""
    core = DeepShieldApp(detector, limits, gate or threading.BoundedSemaphore(limits.concurrency))
    band = detector.uncertain_band
    with gr.Blocks(title="DeepShield", analytics_enabled=False, delete_cache=(600, 900)) as demo:
        with gr.Sidebar(open=True):
            gr.Markdown("## DeepShield\nOffline, explainable deepfake detection for faces.")
            gradcam = gr.Checkbox(value=True, label="Grad-CAM heatmap")
            threshold = gr.Slider(0.05, 0.95, value=detector.meta.threshold, step=0.01,
                                  label="Decision threshold on P(Fake)")
            table = gr.Markdown(interpretation_table(detector.meta.threshold, band))
            gr.Markdown(model_info_markdown(detector), elem_id="model-info")
        threshold.change(lambda t: interpretation_table(t, band), threshold, table, api_visibility="private")
        image_tab(core, gradcam, threshold)
        video_tab(core, gradcam, threshold)
        webcam_tab(core, gradcam, threshold)
        batch_tab(core)
    return demo


def _model_event(core: DeepShieldApp) -> dict[str, Any]:
    """Event settings for every model call: one shared concurrency limit, raw uploads (see upload_path)."""
    return {"concurrency_id": "model", "concurrency_limit": core.limits.concurrency, "preprocess": False}


def image_tab(core: DeepShieldApp, gradcam: gr.Checkbox, threshold: gr.Slider) -> None:
    with gr.Tab("Image", id="image"):
        with gr.Row():
            with gr.Column():
                image_in = gr.Image(type="filepath", sources=["upload", "clipboard"], label="Image (JPG, PNG, WebP)",
                                    elem_id="image-input")
                image_btn = gr.Button("Analyse image", variant="primary")
                add_examples(image_in, IMAGE_TYPES)
            with gr.Column():
                card = gr.HTML(elem_id="image-verdict")
                split = gr.Plot(label="Real / Fake split")
        shown = gr.Image(label="Faces and Grad-CAM", type="numpy", interactive=False)
        faces = gr.Dataframe(headers=FACE_HEADERS, label="One row per face", interactive=False)
        result = gr.JSON(label="Result (JSON)", open=False)
    image_btn.click(core.predict_image, [image_in, gradcam, threshold], [result, shown], api_name="predict_image",
                    **_model_event(core)).success(
        lambda d: (verdict_card(d, "Image", core.detector.meta.labels), donut(d["prob_real"]), face_rows(d)), result, [card, split, faces],
        api_visibility="private")


def video_tab(core: DeepShieldApp, gradcam: gr.Checkbox, threshold: gr.Slider) -> None:
    with gr.Tab("Video", id="video"):
        with gr.Row():
            with gr.Column():
                video_in = gr.Video(sources=["upload"], label="Video (MP4, AVI, MOV, WebM)", elem_id="video-input")
                frames = gr.Slider(MIN_FRAMES, MAX_FRAMES, value=DEFAULT_FRAMES, step=1, label="Frames to analyse")
                video_btn = gr.Button("Analyse video", variant="primary")
                add_examples(video_in, VIDEO_TYPES)
            with gr.Column():
                card = gr.HTML(elem_id="video-verdict")
                summary = gr.Markdown(elem_id="video-summary")
        with gr.Row():
            line = gr.Plot(label="P(Real) per frame")
            hist = gr.Plot(label="Frame scores")
        cam = gr.Image(label="Grad-CAM of the most fake frame", interactive=False)
        with gr.Accordion("Per-frame results", open=False):
            table = gr.Dataframe(headers=FRAME_HEADERS, interactive=False)
        files = gr.File(label="Download per-frame results (CSV, JSON)", file_count="multiple")
        result = gr.JSON(label="Result (JSON)", open=False)
    video_btn.click(core.predict_video, [video_in, frames, gradcam, threshold], [result, cam, files],
                    api_name="predict_video", **_model_event(core)).success(
        lambda d, t: (verdict_card(d, "Video", core.detector.meta.labels), video_summary_markdown(d), timeline(d["frames"], t),
                      histogram(d["frames"]), frame_rows(d)),
        [result, threshold], [card, summary, line, hist, table], api_visibility="private")


def webcam_tab(core: DeepShieldApp, gradcam: gr.Checkbox, threshold: gr.Slider) -> None:
    every = core.limits.webcam_every
    with gr.Tab("Webcam", id="webcam"):
        gr.Markdown(f"Live analysis of your camera: the model runs on every {every}{'rd' if every == 3 else 'th'} frame; "
                    "the banner shows the latest verdict and the top bar fills to P(Real).")
        with gr.Row():
            cam_in = gr.Image(sources=["webcam"], streaming=True, type="numpy", label="Camera", elem_id="webcam-input")
            cam_out = gr.Image(label="Analysis", type="numpy", interactive=False, elem_id="webcam-output")
        latest = gr.JSON(label="Latest prediction", elem_id="webcam-json")
        state = gr.State(None)
    cam_in.stream(core.stream_frame, [cam_in, state, gradcam, threshold], [cam_out, state, latest],
                  stream_every=0.1, time_limit=600, concurrency_limit=core.limits.concurrency, api_visibility="private")
    # One webcam frame through the API (the stream above is for the browser).
    frame_in, frame_btn = gr.Image(type="numpy", visible=False), gr.Button(visible=False)
    frame_btn.click(core.predict_frame, [frame_in, gradcam, threshold],
                    [gr.JSON(visible=False, label="result"), gr.Image(visible=False, label="annotated frame")],
                    api_name="predict_frame", **_model_event(core))


def batch_tab(core: DeepShieldApp) -> None:
    limits = core.limits
    with gr.Tab("Batch", id="batch"):
        gr.Markdown(f"Several images and videos, or .zip archives of them (up to {limits.max_batch_files} files, "
                    f"{limits.max_batch_bytes / 2**20:.0f} MB unpacked). For whole archives on disk use "
                    "`python -m deepshield scan FOLDER --out results.parquet`.")
        with gr.Row():
            files_in = gr.File(file_count="multiple", label="Files or .zip archives", elem_id="batch-input")
            with gr.Column():
                frames = gr.Slider(MIN_FRAMES, MAX_FRAMES, value=DEFAULT_FRAMES, step=1, label="Frames per video")
                batch_btn = gr.Button("Scan", variant="primary")
                summary = gr.Markdown(elem_id="batch-summary")
        table = gr.Dataframe(headers=BATCH_HEADERS, label="One row per file", interactive=False)
        downloads = gr.File(label="Download: per-file and per-face tables (CSV, Parquet)", file_count="multiple")
        rows, counts = gr.JSON(visible=False, label="rows"), gr.JSON(visible=False, label="summary")
    batch_btn.click(core.scan_batch, [files_in, frames], [rows, counts, downloads], api_name="scan_batch",
                    **_model_event(core)).success(
        lambda r, c: (batch_rows(r), batch_summary_markdown(c)), [rows, counts], [table, summary],
        api_visibility="private")


def video_summary_markdown(data: dict[str, Any]) -> str:
    return (
        f"| frames analysed | with a face | average P(Real) | real frames | fake frames | majority |\n"
        f"|---|---|---|---|---|---|\n| {data['frames_analysed']} | {data['frames_with_face']} | "
        f"{data['prob_real']:.3f} | {data['real_frames']} | {data['fake_frames']} | {data['majority_label'] or '-'} |"
    )


def create_app(detector: Detector, limits: Limits = Limits()) -> FastAPI:
    """FastAPI app with the REST/WebSocket routes and the Gradio UI mounted at ``/``."""
    api = FastAPI(title="DeepShield API", version=__version__,
                  description="Offline deepfake detection for faces. The Gradio UI is served at /.")
    gate = threading.BoundedSemaphore(limits.concurrency)
    add_api_routes(api, detector, limits, gate)
    return gr.mount_gradio_app(api, build_demo(detector, limits, gate), path="/", theme=THEME, footer_links=["api"])


def main() -> None:
    import uvicorn

    try:
        detector = load_detector()
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"deepshield: {err}") from err
    port = int(os.environ.get("PORT", os.environ.get("GRADIO_SERVER_PORT", 7860)))
    host = os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0" if os.environ.get("SPACE_ID") else "127.0.0.1")
    print(f"DeepShield {__version__} on http://{'localhost' if host in ('127.0.0.1', '0.0.0.0') else host}:{port} "
          f"(face detector {detector.faces.name}, device {detector.device})")
    uvicorn.run(create_app(detector), host=host, port=port, log_level="warning")


if __name__ == "__main__":
    main()
