"""Sharing on the Hugging Face Hub: the publish dry run (no network), a Space built from its file list starts and
serves, and the front matter of the README (Space) and of the model card parse and stay true."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import gradio
import httpx
import pytest
import yaml

from deepshield.publish import LFS_SIZE, carried_by_lfs, lfs_patterns, plan
from deepshield.weights import DEFAULT_HUB_REPO, WEIGHTS_NAME

from .conftest import REPO

OFFLINE = {"HF_HUB_OFFLINE": "1", **{k: "http://127.0.0.1:9" for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")}}


def front_matter(path: Path) -> dict:
    text = path.read_text()
    assert text.startswith("---\n"), f"{path} has no YAML front matter"
    return yaml.safe_load(text.split("---\n", 2)[1])


def test_dry_run_lists_a_complete_lfs_correct_upload_without_network() -> None:
    env = {**os.environ, **OFFLINE}
    done = subprocess.run([sys.executable, "-m", "deepshield", "publish", "--model", "u/m", "--space", "u/s", "--dry-run"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = {line.split()[1]: line for line in done.stdout.splitlines() if line.startswith(("model", "space"))}
    assert " LFS " in lines[f"u/m:{WEIGHTS_NAME}"] and " git " in lines["u/m:README.md"]
    assert " LFS " in lines[f"u/s:weights/{WEIGHTS_NAME}"] and " LFS " in lines["u/s:examples/astronaut.jpg"]
    assert " git " in lines["u/s:app.py"] and " git " in lines["u/s:deepshield/detector.py"]
    assert done.stdout.rstrip().endswith("dry run: nothing was sent")


def test_lfs_rules() -> None:
    patterns = lfs_patterns(REPO / ".gitattributes")
    assert {"*.safetensors", "*.onnx", "*.jpg", "*.webm"} <= set(patterns)
    assert carried_by_lfs("weights/x.safetensors", 10, patterns) and carried_by_lfs("a/b/c.jpg", 10, patterns)
    assert not carried_by_lfs("app.py", 10, patterns) and carried_by_lfs("big.txt", LFS_SIZE + 1, patterns)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=WEIGHTS_NAME):
        plan("u/m", None, root=tmp_path)


def test_space_from_the_dry_run_list_starts_and_serves(tmp_path: Path) -> None:
    space = tmp_path / "space"
    uploads = [u for u in plan("u/m", "u/s") if u.repo_type == "space"]
    for upload in uploads:
        (space / upload.path_in_repo).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(upload.local, space / upload.path_in_repo)
    card = front_matter(space / "README.md")
    assert (space / card["app_file"]).is_file() and (space / "requirements.txt").is_file()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, **OFFLINE, "PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1", "SPACE_ID": "u/s",
           "PYTHONPATH": ""}
    env.pop("DEEPSHIELD_WEIGHTS", None)
    server = subprocess.Popen([sys.executable, card["app_file"]], cwd=space, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        health = None
        for _ in range(240):
            if server.poll() is not None:
                pytest.fail(f"the Space's app exited: {server.stdout.read()[-3000:]}")
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json()
                break
            except httpx.TransportError:
                time.sleep(0.5)
        assert health is not None, "no /health within 120 s"
        assert Path(health["weights"]).resolve() == (space / "weights" / WEIGHTS_NAME).resolve()
        assert health["trained"] is True
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_space_front_matter_pins_the_tested_gradio() -> None:
    card = front_matter(REPO / "README.md")
    assert card["sdk"] == "gradio" and card["sdk_version"] == gradio.__version__
    assert DEFAULT_HUB_REPO in card["models"] and len(card["short_description"]) <= 60
    assert str(card["python_version"]).startswith("3.")


def test_model_card_metadata_parses_and_matches_its_text() -> None:
    path = REPO / "weights" / "README.md"
    card = front_matter(path)
    body = path.read_text().split("---\n", 2)[2]
    assert card["library_name"] and card["license"] and "deepfake-detection" in card["tags"] and card["base_model"]
    results = card["model-index"][0]["results"]
    assert {r["dataset"]["name"] for r in results} >= {"dfdc-faces", "140k-sample"}
    for result in results:
        for metric in result["metrics"]:
            assert 0.0 <= metric["value"] <= 1.0 and f"{metric['value']:.3f}" in body, metric
