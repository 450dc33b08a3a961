import os
import stat
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from deepshield import weights as W
from deepshield.model import DeepfakeCNN

from .conftest import make_tiny_model, make_tiny_weights


def test_round_trip_rebuilds_model_from_metadata(tmp_path: Path) -> None:
    path = make_tiny_weights(tmp_path / "m.safetensors", use_fft=True, threshold=0.3, temperature=1.7,
                             metrics={"auc": 0.5}, training_command="python train.py")
    model, meta = W.load_weights(path)
    assert (meta.arch, meta.img_size, meta.use_fft, meta.threshold, meta.temperature) == ("tiny", 64, True, 0.3, 1.7)
    assert meta.metrics == {"auc": 0.5} and meta.labels == ("Real", "Fake") and meta.mean == W.IMAGENET_MEAN
    original = make_tiny_model(use_fft=True)
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(model(x), original(x))
    assert not list(tmp_path.glob("*.partial"))


def test_saved_file_gets_ordinary_permissions(tmp_path: Path) -> None:
    """Weights are meant to be copied and served (a container, another user): safetensors' save_file
    would make them owner-only (0600); ours follow the umask like any other new file."""
    old = os.umask(0o022)
    try:
        path = make_tiny_weights(tmp_path / "m.safetensors")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_metadata_is_plain_strings(tmp_path: Path) -> None:
    path = make_tiny_weights(tmp_path / "m.safetensors")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    assert metadata["format"] == W.FORMAT and metadata["arch"] == '"tiny"' and metadata["img_size"] == "64"


def test_foreign_safetensors_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(1)}, str(path))
    with pytest.raises(ValueError, match="not DeepShield weights"):
        W.load_weights(path)


def test_metadata_that_does_not_match_tensors_fails_strictly(tmp_path: Path) -> None:
    model = DeepfakeCNN("tiny")
    path = tmp_path / "m.safetensors"
    save_file(dict(model.state_dict()), str(path), metadata=W.ModelMeta("tiny", 64, use_fft=True).to_metadata())
    with pytest.raises(ValueError, match="(?s)tensors do not match.*Missing key"):
        W.load_weights(path)


def test_save_refuses_meta_that_contradicts_model(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="use_fft"):
        W.save_weights(DeepfakeCNN("tiny"), W.ModelMeta("tiny", 64, use_fft=True), tmp_path / "m.safetensors")


def test_damaged_file_is_a_value_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(ValueError, match="bad.safetensors"):
        W.load_weights(path)


@pytest.fixture
def no_default_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point weights/ at an empty folder and clear the environment."""
    monkeypatch.setattr(W, "WEIGHTS_DIR", tmp_path / "weights")
    monkeypatch.delenv(W.WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "weights"


def test_lookup_order_explicit_env_folder(tmp_path: Path, no_default_weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = make_tiny_weights(no_default_weights / W.WEIGHTS_NAME)
    env = make_tiny_weights(tmp_path / "env.safetensors")
    explicit = make_tiny_weights(tmp_path / "explicit.safetensors")
    assert W.find_weights(cache_dir=tmp_path / "hub") == folder
    monkeypatch.setenv(W.WEIGHTS_ENV, str(env))
    assert W.find_weights(cache_dir=tmp_path / "hub") == env
    assert W.find_weights(explicit, cache_dir=tmp_path / "hub") == explicit


def test_explicit_missing_path_is_an_error_not_a_fallback(tmp_path: Path, no_default_weights: Path) -> None:
    make_tiny_weights(no_default_weights / W.WEIGHTS_NAME)
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        W.find_weights(tmp_path / "nope.safetensors")


def _fake_hub_cache(cache: Path, repo: str, source: Path) -> Path:
    """The layout huggingface_hub writes: refs/main names a snapshot folder holding the file."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    target = root / "snapshots" / commit / W.WEIGHTS_NAME
    target.parent.mkdir(parents=True)
    target.write_bytes(source.read_bytes())
    return target


def test_hub_cache_is_used_offline(tmp_path: Path, no_default_weights: Path) -> None:
    source = make_tiny_weights(tmp_path / "src.safetensors")
    cached = _fake_hub_cache(tmp_path / "hub", "someone/detector", source)
    found = W.find_weights(hub_repo="someone/detector", cache_dir=tmp_path / "hub")
    assert found.resolve() == cached.resolve()
    model, meta = W.load_weights(found)
    assert meta.arch == "tiny"


def test_missing_weights_message_says_where_it_looked(tmp_path: Path, no_default_weights: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        W.find_weights(hub_repo="someone/absent", cache_dir=tmp_path / "hub")
    message = str(info.value)
    for part in ("--weights", W.WEIGHTS_ENV, str(no_default_weights), "someone/absent", "train.py"):
        assert part in message
