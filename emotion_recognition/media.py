"""Reading user media safely: uploaded image bytes (Pillow) and video files (OpenCV).

``decode_image`` turns untrusted bytes into an RGB uint8 array or raises an ``InputError``
subclass whose message says what is wrong and whose ``http_status`` is the 4xx the service
answers with:

- ``EmptyInput`` (400): no bytes;
- ``InputTooLarge`` (413): more bytes than ``ImageLimits.max_bytes``, or more pixels than
  ``ImageLimits.max_pixels`` -- checked from the header, before any pixel is decoded, so a
  30,000 x 30,000 PNG of a few hundred KB is refused without allocating 900 MB;
- ``UnsupportedMedia`` (415): not an image, or an image format other than JPEG/PNG/WebP/BMP;
- ``CorruptImage`` (400): a known format whose data is truncated or broken.

EXIF orientation is applied (``ImageOps.exif_transpose``). Grayscale, palette, RGBA/LA (alpha
composited over white), CMYK and 16-bit images all come out as 8-bit RGB.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

SUPPORTED_IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


class InputError(ValueError):
    """Unusable user input; ``http_status`` is the matching 4xx code."""

    http_status = 400


class EmptyInput(InputError):
    http_status = 400


class CorruptImage(InputError):
    http_status = 400


class UnsupportedMedia(InputError):
    http_status = 415


class InputTooLarge(InputError):
    http_status = 413


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000  # width x height


def _megabytes(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB"


def check_size(n_bytes: int, limits: ImageLimits) -> None:
    if n_bytes == 0:
        raise EmptyInput("the upload is empty (0 bytes): send a JPEG, PNG, WebP or BMP image")
    if n_bytes > limits.max_bytes:
        raise InputTooLarge(
            f"the image is {_megabytes(n_bytes)}, over the limit of {_megabytes(limits.max_bytes)}"
        )


def open_image_header(data: bytes, limits: ImageLimits) -> Image.Image:
    """Open (header only) and validate format and pixel count; nothing is decoded yet."""
    check_size(len(data), limits)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise InputTooLarge(
                f"the image is too large to decode: {error} (this server's limit is {limits.max_pixels:,} pixels)"
            ) from None
        except UnidentifiedImageError:
            raise UnsupportedMedia(
                f"the upload ({len(data)} bytes) is not a recognisable image: send JPEG, PNG, WebP or BMP"
            ) from None
        except (OSError, SyntaxError, ValueError, EOFError) as error:
            raise CorruptImage(f"the image header could not be read: {error}") from None
    if image.format not in SUPPORTED_IMAGE_FORMATS:
        raise UnsupportedMedia(
            f"{image.format or 'this'} images are not supported: send JPEG, PNG, WebP or BMP"
        )
    width, height = image.size
    if width * height > limits.max_pixels:
        raise InputTooLarge(
            f"the image is {width}x{height} = {width * height:,} pixels, over the limit of "
            f"{limits.max_pixels:,} pixels"
        )
    if width == 0 or height == 0:
        raise CorruptImage(f"the image has no pixels ({width}x{height})")
    return image


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """8-bit RGB array from any Pillow mode (16-bit scaled down, alpha over white)."""
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        values = np.asarray(image)
        if mode == "I" and values.max(initial=0) > 65535:
            values = np.clip(values, 0, 65535)
        gray = (values.astype(np.uint32) >> 8).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "F":
        values = np.asarray(image, dtype=np.float32)
        scale = 255.0 if values.max(initial=0) <= 1.0 else 1.0
        gray = np.clip(values * scale, 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    if mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image)


def decode_image(data: bytes, limits: ImageLimits | None = None) -> np.ndarray:
    """Untrusted image bytes -> (H, W, 3) uint8 RGB, EXIF orientation applied."""
    limits = limits or ImageLimits()
    image = open_image_header(data, limits)
    fmt = image.format
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image.load()
            image = ImageOps.exif_transpose(image)
            array = to_rgb_array(image)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise InputTooLarge(f"the image has too many pixels to decode safely ({error})") from None
        except (OSError, SyntaxError, ValueError, EOFError, IndexError) as error:
            raise CorruptImage(f"the {fmt} image could not be decoded ({error}); is the file complete?") from None
    return np.ascontiguousarray(array)


def read_image(path: str | Path, limits: ImageLimits | None = None) -> np.ndarray:
    """Read an image file with the same checks as an upload."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no image file at {path}")
    limits = limits or ImageLimits()
    size = path.stat().st_size
    check_size(size, limits)
    try:
        return decode_image(path.read_bytes(), limits)
    except InputError as error:
        raise type(error)(f"{path}: {error}") from None


def encode_image(rgb: np.ndarray, fmt: str = "png", quality: int = 90) -> bytes:
    """RGB array -> PNG or JPEG bytes."""
    fmt = fmt.lower().lstrip(".")
    image = Image.fromarray(np.ascontiguousarray(rgb))
    buffer = io.BytesIO()
    if fmt in ("jpg", "jpeg"):
        image.save(buffer, format="JPEG", quality=quality)
    elif fmt == "png":
        image.save(buffer, format="PNG")
    elif fmt == "webp":
        image.save(buffer, format="WEBP", quality=quality)
    elif fmt == "bmp":
        image.save(buffer, format="BMP")
    else:
        raise ValueError(f"cannot write {fmt!r} images: use png, jpg, webp or bmp")
    return buffer.getvalue()


def write_image(rgb: np.ndarray, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_image(rgb, path.suffix or ".png"))


# ---------------------------------------------------------------- video


@dataclass(frozen=True)
class VideoInfo:
    fps: float
    frame_count: int  # as the container reports it (may be 0 or approximate)
    width: int
    height: int


@dataclass(frozen=True)
class Frame:
    index: int
    time_s: float
    rgb: np.ndarray


def open_video(path: str | Path) -> tuple[cv2.VideoCapture, VideoInfo]:
    """Open a video and check it has a decodable first frame; the capture is at frame 0."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no video file at {path}")
    if path.stat().st_size == 0:
        raise EmptyInput(f"{path.name} is empty (0 bytes)")
    unreadable = UnsupportedMedia(f"{path.name} is not a video OpenCV can read (try MP4/H.264, AVI or MKV)")
    probe = cv2.VideoCapture(str(path))
    try:
        ok, first = probe.read() if probe.isOpened() else (False, None)
        if not ok or first is None or first.ndim != 3 or first.size == 0:
            raise unreadable
        fps = probe.get(cv2.CAP_PROP_FPS)
        frame_count = max(int(probe.get(cv2.CAP_PROP_FRAME_COUNT)), 0)
    finally:
        probe.release()
    if not fps or fps != fps or fps <= 0 or fps > 1000:
        fps = 25.0
    info = VideoInfo(fps=float(fps), frame_count=frame_count, width=first.shape[1], height=first.shape[0])
    capture = cv2.VideoCapture(str(path))  # reopened: seeking back is unreliable for some codecs
    if not capture.isOpened():
        raise unreadable
    return capture, info


def iter_video_frames(
    path: str | Path, every: int = 1, max_frames: int | None = None, max_read: int | None = None
) -> Iterator[Frame]:
    """Yield every ``every``-th frame (RGB) with its index and time; raises if there is none.
    ``max_read`` bounds the frames decoded (skipped ones too): InputTooLarge when more are needed."""
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    capture, info = open_video(path)
    yielded = 0
    try:
        index = 0
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            if max_read is not None and index >= max_read:
                raise InputTooLarge(
                    f"reading this video at every={every} needs more than {max_read:,} decoded frames, "
                    "the limit: pass a smaller 'every' or 'max_frames'"
                )
            if index % every == 0:
                yield Frame(index, index / info.fps, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                yielded += 1
                if max_frames is not None and yielded >= max_frames:
                    break
            index += 1
    finally:
        capture.release()
    if yielded == 0:
        raise UnsupportedMedia(f"{Path(path).name} has no readable video frames")


class VideoWriter:
    """Write RGB frames with OpenCV: .mp4 (mp4v), .webm (VP8, plays in browsers) or .avi (MJPG).

    The pip OpenCV wheels have no H.264 encoder, so .webm is the format browsers can play."""

    CODECS = {".mp4": "mp4v", ".webm": "VP80", ".avi": "MJPG", ".mkv": "MJPG"}

    def __init__(self, path: str | Path, fps: float, width: int, height: int):
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in self.CODECS:
            raise ValueError(f"cannot write {suffix or 'extension-less'} video: use .mp4, .webm or .avi")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fourcc = cv2.VideoWriter_fourcc(*self.CODECS[suffix])
        self._writer = cv2.VideoWriter(str(self.path), fourcc, float(fps), (int(width), int(height)))
        if not self._writer.isOpened():
            raise OSError(f"OpenCV could not open {self.path} for writing")

    def write(self, rgb: np.ndarray) -> None:
        self._writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        self._writer.release()

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
