"""The plain HTTP and WebSocket API served beside the Gradio app (``app.py`` mounts both on one server):
``GET /health``, ``POST /predict/image``, ``POST /predict/video``, ``WS /ws/webcam``. Bad requests get a 4xx
with ``{"error": ...}`` naming the problem; uploads never outlive their request."""

from __future__ import annotations

import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, File, Form, Request, UploadFile, WebSocket, WebSocketDisconnect
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from . import __version__
from .detector import Detector
from .video import DEFAULT_FRAMES, MAX_FRAMES, MIN_FRAMES, check_n_frames


@dataclass(frozen=True)
class Limits:
    """Request limits; each has an environment override."""

    max_image_bytes: int = int(float(os.environ.get("DEEPSHIELD_MAX_IMAGE_MB", 20)) * 2**20)
    max_video_bytes: int = int(float(os.environ.get("DEEPSHIELD_MAX_VIDEO_MB", 200)) * 2**20)
    concurrency: int = int(os.environ.get("DEEPSHIELD_CONCURRENCY", 2))  # model calls at once, protects memory
    webcam_every: int = int(os.environ.get("DEEPSHIELD_WEBCAM_EVERY", 3))  # webcam: infer on every Nth frame
    max_batch_files: int = int(os.environ.get("DEEPSHIELD_MAX_BATCH_FILES", 200))  # the Batch tab, zips unpacked
    max_batch_bytes: int = int(float(os.environ.get("DEEPSHIELD_MAX_BATCH_MB", 500)) * 2**20)


class BadInput(Exception):
    """A request the server refuses, with the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def add_api_routes(api: FastAPI, detector: Detector, limits: Limits, gate: threading.Semaphore) -> None:
    """Plain HTTP and WebSocket endpoints beside the Gradio app, on the same server."""

    @api.exception_handler(BadInput)
    async def bad_input(_request: Request, exc: BadInput) -> JSONResponse:
        return error(exc.status, str(exc))

    @api.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'][1:]))}: {e['msg']}" for e in exc.errors())
        return error(422, f"invalid request: {problems}")

    @api.get("/health")
    def health() -> dict[str, Any]:
        """Model loaded, weights file, face detector, device and version."""
        return {"status": "ok", "model_loaded": True, "version": __version__, **detector.info()}

    @api.post("/predict/image")
    def predict_image(file: UploadFile = File(..., description="JPG, PNG, WebP, BMP or TIFF image")) -> dict[str, Any]:
        """Classify the faces in one image."""
        data = read_upload(file, limits.max_image_bytes, "image")
        try:
            with gate:
                return detector.predict_image(data).to_dict()
        except ValueError as err:
            raise BadInput(400, f"{file.filename or 'image'}: {err}") from err

    @api.post("/predict/video")
    def predict_video(file: UploadFile = File(..., description="MP4, AVI, MOV or WebM video"),
                      frames: int = Form(DEFAULT_FRAMES, description=f"frames to sample, {MIN_FRAMES}-{MAX_FRAMES}")) -> dict[str, Any]:
        """Aggregate verdict and per-frame rows for one video."""
        try:
            check_n_frames(frames)
        except ValueError as err:
            raise BadInput(422, str(err)) from err
        data = read_upload(file, limits.max_video_bytes, "video")
        handle, path = tempfile.mkstemp(prefix="deepshield-upload-", suffix=Path(file.filename or "").suffix)
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(data)
            with gate:
                return detector.predict_video(path, frames).to_dict()
        except ValueError as err:  # name the upload, not our temp file
            raise BadInput(400, str(err).replace(path, file.filename or "video")) from err
        finally:
            os.unlink(path)  # uploads never outlive their request

    add_webcam_route(api, detector, limits, gate)


def add_webcam_route(api: FastAPI, detector: Detector, limits: Limits, gate: threading.Semaphore) -> None:
    """``WS /ws/webcam``: one JSON prediction per binary frame; a bad frame gets ``{"error": ...}`` and the
    connection stays open."""

    @api.websocket("/ws/webcam")
    async def webcam(socket: WebSocket) -> None:
        """Send JPEG (or PNG) bytes per frame; receive one JSON prediction per frame."""
        await socket.accept()
        try:
            while True:
                message = await socket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                await socket.send_json(await run_in_threadpool(webcam_answer, message.get("bytes")))
        except WebSocketDisconnect:
            return

    def webcam_answer(frame: bytes | None) -> dict[str, Any]:
        if frame is None:
            return {"error": "send each frame as a binary message of JPEG or PNG bytes"}
        if len(frame) > limits.max_image_bytes:
            return {"error": f"frame over the {limits.max_image_bytes / 2**20:.0f} MB limit"}
        try:
            with gate:
                return detector.predict_image(frame).to_dict()
        except ValueError as err:
            return {"error": str(err)}


def read_upload(file: UploadFile, limit: int, kind: str) -> bytes:
    data = file.file.read(limit + 1)
    if not data:
        raise BadInput(400, f"{file.filename or kind}: empty file (0 bytes)")
    if len(data) > limit:
        raise BadInput(413, f"{file.filename or kind}: {kind} over the {limit / 2**20:.0f} MB upload limit")
    return data
