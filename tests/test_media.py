import io
import struct
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from deepshield.media import array_to_rgb, load_image, sniff_media

from .conftest import noise_image, write_video


def _encode(array: np.ndarray, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def test_png_from_path_bytes_and_pil_agree(tmp_path: Path) -> None:
    image = noise_image()
    path = tmp_path / "x.png"
    path.write_bytes(_encode(image, "PNG"))
    for source in (path, str(path), path.read_bytes(), Image.open(path)):
        np.testing.assert_array_equal(load_image(source), image)


def test_grayscale_and_rgba_become_rgb() -> None:
    gray = noise_image()[:, :, 0]
    out = load_image(_encode(gray, "PNG"))
    assert out.shape == (120, 160, 3) and (out[:, :, 0] == gray).all() and (out[:, :, 2] == gray).all()
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:2, :, 3] = 255  # top half opaque red, bottom half fully transparent
    out = load_image(_encode(rgba, "PNG"))
    assert tuple(out[0, 0]) == (200, 0, 0) and tuple(out[3, 0]) == (255, 255, 255)


def test_16_bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    path = tmp_path / "deep.png"
    gray16 = np.full((8, 8), 32896, np.uint16)  # mid-grey in 16 bits
    cv2.imwrite(str(path), gray16)
    assert load_image(path)[0, 0, 0] == 128
    colour16 = np.zeros((8, 8, 3), np.uint16)
    colour16[..., 2] = 65535  # BGR on disk: full red
    cv2.imwrite(str(path), colour16)
    assert tuple(load_image(path)[0, 0]) == (255, 0, 0)


def test_exif_orientation_is_applied() -> None:
    image = np.zeros((20, 40, 3), np.uint8)  # landscape as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    data = _encode(image, "JPEG", exif=exif.tobytes())
    assert load_image(data).shape == (40, 20, 3)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"hello, I am plain text and not a picture", "not a recognised image"),
        (_encode(noise_image(), "JPEG")[:400], "corrupt or truncated"),
        (_encode(noise_image(), "PNG")[:300], "corrupt or truncated"),
    ],
)
def test_bad_bytes_are_clear_value_errors(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_image(data)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels but holds almost no data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [8000, 40000])  # 64 MP (over our limit), 1.6 GP (over Pillow's too)
def test_decompression_bomb_refused_before_decoding(side: int) -> None:
    start = time.perf_counter()
    with pytest.raises(ValueError, match="too large|over the 50 MP limit"):
        load_image(_png_header_only(side, side))
    assert time.perf_counter() - start < 1.0  # nothing was decoded


def test_pixel_limit_is_configurable() -> None:
    with pytest.raises(ValueError, match="over the 0 MP limit"):
        load_image(_encode(noise_image(), "PNG"), max_pixels=100)


def test_missing_file() -> None:
    with pytest.raises(FileNotFoundError, match="nowhere.png"):
        load_image("/nowhere.png")


def test_arrays_of_other_dtypes_and_shapes() -> None:
    assert array_to_rgb(np.ones((2, 3), np.float32)).tolist() == np.full((2, 3, 3), 255, np.uint8).tolist()
    assert array_to_rgb(np.zeros((2, 3, 1), np.uint8)).shape == (2, 3, 3)
    with pytest.raises(ValueError, match="shape"):
        array_to_rgb(np.zeros((2, 3, 5), np.uint8))
    with pytest.raises(ValueError, match="shape"):
        array_to_rgb(np.zeros((0, 3, 3), np.uint8))


def test_sniff_by_content_not_extension(tmp_path: Path) -> None:
    image = tmp_path / "looks_like.mp4"
    image.write_bytes(_encode(noise_image(), "JPEG"))
    video = write_video(tmp_path / "clip.avi", 5).rename(tmp_path / "looks_like.png")
    text = tmp_path / "notes.jpg"
    text.write_text("just text")
    empty = tmp_path / "empty.mp4"
    empty.touch()
    assert sniff_media(image) == "image"
    assert sniff_media(video) == "video"
    with pytest.raises(ValueError, match="neither an image"):
        sniff_media(text)
    with pytest.raises(ValueError, match="empty"):
        sniff_media(empty)
    with pytest.raises(FileNotFoundError):
        sniff_media(tmp_path / "absent")


def test_float_images_in_0_255_and_truncated_pil_images(tmp_path: Path) -> None:
    assert array_to_rgb(np.full((2, 2), 128.0, np.float32))[0, 0, 0] == 128
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(_encode(noise_image(), "JPEG")[:3000])  # header complete, pixel data cut
    with pytest.raises(ValueError, match="corrupt or truncated"):
        load_image(Image.open(truncated))
