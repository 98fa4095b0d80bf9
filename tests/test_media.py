"""Decoding untrusted image bytes and reading/writing video (emotion_recognition.media)."""

from __future__ import annotations

import io
import time
import tracemalloc

import numpy as np
import pytest
from PIL import Image

from emotion_recognition.media import (
    CorruptImage,
    EmptyInput,
    ImageLimits,
    InputTooLarge,
    UnsupportedMedia,
    VideoWriter,
    decode_image,
    encode_image,
    iter_video_frames,
    read_image,
)
from testkit import media, png_bomb
from hostile_inputs import write_video


def pil_bytes(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def test_supported_formats_decode_to_rgb_uint8():
    pixels = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    for fmt, lossless in [("PNG", True), ("BMP", True), ("WEBP", False), ("JPEG", False)]:
        options = {"lossless": True} if fmt == "WEBP" else {}
        decoded = decode_image(pil_bytes(image, fmt, **options))
        assert decoded.shape == (30, 40, 3) and decoded.dtype == np.uint8, fmt
        if lossless or fmt == "WEBP":
            assert np.array_equal(decoded, pixels), fmt


def test_exif_orientation_is_applied():
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:5, :5] = (255, 0, 0)  # red at the stored top-left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    data = pil_bytes(Image.fromarray(pixels), "JPEG", exif=exif, quality=95)
    decoded = decode_image(data)
    assert decoded.shape == (40, 20, 3)
    assert decoded[:5, -5:, 0].mean() > 200 and decoded[:5, :5, 0].mean() < 50  # red now top-right


def test_grayscale_palette_rgba_and_16_bit():
    gray = decode_image(pil_bytes(Image.fromarray(np.full((8, 8), 77, np.uint8)), "PNG"))
    assert gray.shape == (8, 8, 3) and (gray == 77).all()

    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:4, :, 3] = 255  # top half opaque red, bottom half transparent
    decoded = decode_image(pil_bytes(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert (decoded[:4] == (255, 0, 0)).all() and (decoded[4:] == 255).all()  # transparent -> white

    sixteen = np.array([[0, 256, 65535, 32768]], dtype=np.uint16)
    data = pil_bytes(Image.fromarray(sixteen), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    assert decode_image(data)[0, :, 0].tolist() == [0, 1, 255, 128]

    palette = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).convert("P")
    assert decode_image(pil_bytes(palette, "PNG")).shape == (8, 8, 3)


def test_empty_body():
    with pytest.raises(EmptyInput, match="empty") as info:
        decode_image(b"")
    assert info.value.http_status == 400


def test_not_an_image():
    with pytest.raises(UnsupportedMedia, match="not a recognisable image") as info:
        decode_image(b"%PDF-1.4 something else entirely")
    assert info.value.http_status == 415


def test_other_image_formats_are_refused_by_name():
    gif = pil_bytes(Image.new("RGB", (10, 10)), "GIF")
    with pytest.raises(UnsupportedMedia, match="GIF images are not supported"):
        decode_image(gif)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_truncated_file(fmt):
    pixels = np.random.default_rng(1).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    data = pil_bytes(Image.fromarray(pixels), fmt)
    with pytest.raises(CorruptImage) as info:
        decode_image(data[: len(data) // 2])
    assert info.value.http_status == 400
    assert fmt in str(info.value) or "header" in str(info.value)


def test_byte_limit():
    data = pil_bytes(Image.new("RGB", (64, 64)), "BMP")
    with pytest.raises(InputTooLarge, match="over the limit") as info:
        decode_image(data, ImageLimits(max_bytes=len(data) - 1))
    assert info.value.http_status == 413
    assert decode_image(data, ImageLimits(max_bytes=len(data))).shape == (64, 64, 3)


def test_pixel_limit_is_checked_from_the_header():
    data = pil_bytes(Image.new("L", (3000, 2000)), "PNG")
    with pytest.raises(InputTooLarge, match="3000x2000 = 6,000,000 pixels, over the limit of 5,000,000"):
        decode_image(data, ImageLimits(max_pixels=5_000_000))


def test_30000x30000_png_is_refused_before_decoding():
    data = png_bomb()
    assert len(data) < 500_000  # "a few hundred KB"
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(InputTooLarge, match="900000000 pixels"):
        decode_image(data)
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert seconds < 1.0 and peak < 20 * 1024 * 1024  # nothing like the 900 MB of pixels


def test_read_image_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_image(tmp_path / "missing.jpg")
    bad = tmp_path / "bad.jpg"
    bad.write_text("hello")
    with pytest.raises(UnsupportedMedia, match="bad.jpg"):
        read_image(bad)
    assert read_image(media("fear.jpg")).shape == (219, 230, 3)


def test_encode_image_round_trip():
    pixels = np.random.default_rng(2).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    assert np.array_equal(decode_image(encode_image(pixels, "png")), pixels)
    with pytest.raises(ValueError, match="tiff"):
        encode_image(pixels, "tiff")


def test_video_frames_every_nth_and_errors(tmp_path):
    frames = list(iter_video_frames(media("Megamind.avi"), every=30))
    assert [f.index for f in frames] == list(range(0, 270, 30))
    assert frames[1].time_s == pytest.approx(30 / 23.976, abs=1e-3)
    assert frames[0].rgb.shape == (528, 720, 3)
    assert len(list(iter_video_frames(media("Megamind.avi"), max_frames=3))) == 3
    fake = tmp_path / "fake.mp4"
    fake.write_bytes(b"not a video at all" * 10)
    with pytest.raises(UnsupportedMedia):
        list(iter_video_frames(fake))
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(EmptyInput):
        list(iter_video_frames(empty))


@pytest.mark.parametrize("suffix", [".mp4", ".webm", ".avi"])
def test_video_writer_round_trip(tmp_path, suffix):
    out = tmp_path / f"out{suffix}"
    with VideoWriter(out, 10, 64, 48) as writer:
        for i in range(5):
            writer.write(np.full((48, 64, 3), i * 40, np.uint8))
    frames = list(iter_video_frames(out))
    assert len(frames) == 5 and frames[0].rgb.shape == (48, 64, 3)
    with pytest.raises(ValueError, match=".gif"):
        VideoWriter(tmp_path / "x.gif", 10, 64, 48)


def test_video_reading_stops_at_the_decoded_frame_cap(tmp_path):
    """The cap also holds when the container does not tell the frame count (checked while reading)."""
    from emotion_recognition.media import InputTooLarge, VideoLimits, iter_video_frames

    write_video(tmp_path / "v.avi", 20, 32, 32)
    assert [f.index for f in iter_video_frames(tmp_path / "v.avi", every=5, limits=VideoLimits(max_decoded_frames=20))] == [0, 5, 10, 15]
    with pytest.raises(InputTooLarge, match="more than 10 decoded frames"):
        list(iter_video_frames(tmp_path / "v.avi", every=5, limits=VideoLimits(max_decoded_frames=10)))
