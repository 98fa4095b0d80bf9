"""Reading user media safely: uploaded image bytes (Pillow) and video files (PyAV's FFmpeg).

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

``video_frames`` reads a video with the same kinds of errors: a container recognised by its magic
bytes (415 otherwise), frames no larger than the limit whatever the header says (413: FFmpeg's
decoder refuses a larger frame before allocating it), a budget of decoded frames and pixels (413),
and a damaged video (``CorruptVideo``, 400). Videos are written with OpenCV (``VideoWriter``).
"""

from __future__ import annotations

import io
import itertools
import os
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import av
import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

SUPPORTED_IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP")


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


class CorruptVideo(InputError):
    http_status = 400


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000  # width x height
    max_jpeg_scans: int = 100  # each scan re-walks the whole image; real files have 1 to ~12


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
    # SOS markers (entropy-coded data escapes 0xFF): the scans, plus any of an EXIF thumbnail
    scans = data.count(b"\xff\xda") if image.format == "JPEG" else 0
    if scans > limits.max_jpeg_scans:
        raise InputTooLarge(f"the JPEG has {scans:,} scans, over the limit of {limits.max_jpeg_scans}: "
                            "re-save it as a baseline or ordinary progressive JPEG")
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


IMAGE_ENCODERS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP", "bmp": "BMP"}  # suffix -> Pillow


def encode_image(rgb: np.ndarray, fmt: str = "png", quality: int = 90) -> bytes:
    """RGB array -> PNG, JPEG, WebP or BMP bytes (``quality``: JPEG and WebP only)."""
    name = IMAGE_ENCODERS.get(fmt.lower().lstrip("."))
    if name is None:
        raise ValueError(f"cannot write {fmt!r} images: use png, jpg, webp or bmp")
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buffer, format=name, quality=quality)
    return buffer.getvalue()


def write_image(rgb: np.ndarray, path: str | Path) -> None:
    with atomic_output(path) as tmp:
        tmp.write_bytes(encode_image(rgb, Path(path).suffix or ".png"))


@contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` (same suffix), renamed onto it only if the block succeeds:
    a failure or an interrupt never leaves a half-written output."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".part{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(name)
        os.replace(name, path)
    finally:
        Path(name).unlink(missing_ok=True)


# ---------------------------------------------------------------- video


@dataclass(frozen=True)
class VideoInfo:
    fps: float
    frame_count: int  # as the container reports it (0 when unknown, or approximate)
    width: int
    height: int


@dataclass(frozen=True)
class Frame:
    index: int
    time_s: float
    rgb: np.ndarray


@dataclass(frozen=True)
class VideoLimits:
    max_frame_pixels: int = ImageLimits.max_pixels  # width x height: the header's, then each frame's, before decoding
    max_decoded_frames: int = 20_000  # frames read from one video (analysed or skipped)
    max_pixels: int = 20_000 * 1280 * 720  # the decoded frames' pixels: the decoding work per video

    def max_read(self, info: VideoInfo) -> int:
        return max(1, min(self.max_decoded_frames, self.max_pixels // (info.width * info.height)))


# Containers by their magic bytes (offset, bytes) -> the one FFmpeg demuxer allowed for them.
# Anything else is refused before FFmpeg sees it: HLS/concat playlists make FFmpeg read the files
# they name; images (a PNG named .mp4) have no frame-size limit. (MOV's external data references
# stay off: FFmpeg's enable_drefs.)
VIDEO_CONTAINERS = "MP4/MOV/3GP, AVI, Matroska/WebM, MPEG-TS or MPEG-PS"
MAGIC = {**dict.fromkeys([(4, b"ftyp"), (4, b"moov"), (4, b"mdat"), (4, b"free"), (4, b"wide")], "mov"),
         (8, b"AVI "): "avi", (0, b"\x1a\x45\xdf\xa3"): "matroska", (0, b"\x00\x00\x01\xba"): "mpeg"}


def sniff_container(head: bytes) -> str | None:
    demuxer = next((name for (at, magic), name in MAGIC.items() if head[at : at + 4] == magic), None)
    return demuxer or ("mpegts" if len(head) > 376 and head[0] == head[188] == head[376] == 0x47 else None)


# FFmpeg's own cap on a decoded frame (AVCodecContext.max_pixels, checked before the frame's memory
# is allocated) is this many times the frame limit: FFmpeg counts the row stride (the width rounded
# up to 32 or 64 pixels), so a frame at the limit must pass it. The exact limit is checked on every
# decoded frame's real size, before it is converted.
FFMPEG_PIXEL_SLACK = 2
# Undecodable packets skipped (a damaged frame loses that frame; OpenCV ended the video at the first);
# past this many the video is refused as damaged, so that each one's decoding attempt stays bounded.
MAX_BAD_PACKETS = 64


def _open(path: str | Path, limits: VideoLimits):
    """A PyAV container of a sniffed container format, its first video stream with its frame size
    checked from the header, and the decoder capped at that limit; no frame decoded yet."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no video file at {path}")
    if path.stat().st_size == 0:
        raise EmptyInput(f"{path.name} is empty (0 bytes)")
    with open(path, "rb") as f:
        demuxer = sniff_container(f.read(512))
    if demuxer is None:
        raise UnsupportedMedia(f"{path.name} is not a video container this program reads ({VIDEO_CONTAINERS})")
    unreadable = UnsupportedMedia(f"{path.name} is not a video this program can read (try MP4/H.264, AVI or MKV)")
    cap = str(min(FFMPEG_PIXEL_SLACK * limits.max_frame_pixels, 2**31 - 1))  # FFmpeg's option is at most INT_MAX
    try:
        # second layer, should the sniffing be fooled: FFmpeg uses this demuxer only, and local
        # files only. options: max_pixels also for the decoders FFmpeg opens while probing the
        # streams the header declares (MPEG-TS/PS declare none; their probe only parses headers)
        container = av.open(str(path.resolve()), format=demuxer, options={"max_pixels": cap},
                            container_options={"format_whitelist": demuxer, "protocol_whitelist": "file"})
    except (av.FFmpegError, OSError, ValueError):
        raise unreadable from None
    stream = container.streams.video[0] if container.streams.video else None
    width, height = (stream.codec_context.width, stream.codec_context.height) if stream else (0, 0)
    if width <= 0 or height <= 0:
        container.close()
        raise unreadable
    if width * height > limits.max_frame_pixels:
        container.close()
        raise InputTooLarge(f"the video's frames are {width}x{height} = {width * height:,} pixels, over the "
                            f"limit of {limits.max_frame_pixels:,} pixels")
    # the decoder refuses a larger frame before allocating it, whatever the header said; slice
    # threads only, so that a decode error and the decoder's frame size belong to the packet just sent
    stream.codec_context.options = {"max_pixels": cap}
    stream.thread_type = "SLICE"
    fps = float(stream.guessed_rate or 0)
    fps = fps if 0 < fps <= 1000 else 25.0  # NaN too
    frames = stream.frames
    if not frames:  # as OpenCV did: the duration times the frame rate when the header has no count
        seconds = container.duration / av.time_base if container.duration else float((stream.duration or 0) * (stream.time_base or 0))
        frames = int(seconds * fps + 0.5) if 0 < seconds < 1e7 else 0
    return container, stream, VideoInfo(fps, max(frames, 0), width, height)


def video_frames(
    path: str | Path, every: int = 1, max_frames: int | None = None, limits: VideoLimits | None = None,
    refuse_more: bool = False,
) -> tuple[VideoInfo, Iterator[Frame]]:
    """Open a video (container sniffed, frame size checked from the header before any decoding,
    then the first frame decoded to learn its display orientation): its info and an iterator over
    every ``every``-th frame (RGB, upright, at the info's size) with its index and time, which
    raises if there is none; InputTooLarge when a frame is over the limit (FFmpeg refuses to
    allocate one far over it, whatever the header said), or when the limits' decoded frames or
    pixels would be passed, and, with ``refuse_more``, when there are more than ``max_frames``
    frames to analyse (a stream that does not tell its frame count is then refused, not silently cut)."""
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    limits = limits or VideoLimits()
    container, stream, info = _open(path, limits)
    decoded = _decoded(container, stream, info, limits)
    try:
        first = next(decoded, None)
    except BaseException:
        decoded.close()
        raise
    if first is not None and first[1] % 2:  # a quarter turn: the info gives the upright size, as OpenCV did
        info = VideoInfo(info.fps, info.frame_count, info.height, info.width)
    frames = itertools.chain([first] if first is not None else [], decoded)
    return info, _frames(frames, decoded, info, every, max_frames, limits, refuse_more)


def iter_video_frames(path: str | Path, every: int = 1, max_frames: int | None = None, **options) -> Iterator[Frame]:
    return video_frames(path, every, max_frames, **options)[1]


def chunks(items: Iterable, size: int) -> Iterator[list]:
    """Successive lists of ``size`` items (the last one shorter): frames per model call."""
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def _decoded(container, stream, info: VideoInfo, limits: VideoLimits) -> Iterator[tuple["av.VideoFrame", int]]:
    """The stream's decoded frames and their quarter turns (counter-clockwise) to display them
    upright, each checked against the frame limit (a header can understate the frames' size)."""
    context, limit, bad = stream.codec_context, limits.max_frame_pixels, 0
    header = f"its header says {info.width}x{info.height}"
    try:
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.FFmpegError:
                # a size the decoder refused leaves it without a size (FFmpeg's ff_set_dimensions) or
                # with that size (a buffer it would not allocate); a corrupt packet leaves it as it was
                size = context.width * context.height
                if size == 0 or size > limit:
                    shown = f"a {context.width}x{context.height} frame = {size:,} pixels" if size else "a frame"
                    raise InputTooLarge(f"the video has {shown} over the limit of {limit:,} pixels per frame "
                                        f"({header}): it was refused before decoding") from None
                bad += 1
                if bad > MAX_BAD_PACKETS:
                    raise CorruptVideo(f"the video is damaged: more than {MAX_BAD_PACKETS} of its frames cannot be decoded")
                continue
            for frame in frames:
                size = frame.width * frame.height
                if size > limit:
                    raise InputTooLarge(f"the video has a {frame.width}x{frame.height} frame = {size:,} pixels over the "
                                        f"limit of {limit:,} pixels per frame ({header})")
                yield frame, round(frame.rotation / 90) % 4
    finally:
        container.close()


def _upright(frame, turns: int, info: VideoInfo) -> np.ndarray:
    """RGB at the info's (upright) size: a frame of another size is scaled to it, as OpenCV did."""
    width, height = (info.height, info.width) if turns % 2 else (info.width, info.height)
    if (frame.width, frame.height) != (width, height):
        rgb = frame.to_ndarray(width=width, height=height, format="rgb24")
    else:
        rgb = frame.to_ndarray(format="rgb24")
    return np.ascontiguousarray(np.rot90(rgb, turns) if turns else rgb)


def _frames(frames, decoded, info: VideoInfo, every: int, max_frames: int | None, limits: VideoLimits,
            refuse_more: bool) -> Iterator[Frame]:
    yielded, pixels, max_read = 0, 0, limits.max_read(info)
    try:
        for index, (frame, turns) in enumerate(frames):
            if index >= max_read:
                raise InputTooLarge(f"reading this {info.width}x{info.height} video at every={every} needs more than "
                                    f"{max_read:,} decoded frames, the limit: pass a smaller 'every' or 'max_frames'")
            pixels += frame.width * frame.height  # the frames' own sizes: a header can understate them
            if pixels > limits.max_pixels:
                raise InputTooLarge(f"the video's decoded frames hold more than {limits.max_pixels:,} pixels, the limit "
                                    f"per video (frames larger than the header's {info.width}x{info.height})")
            if index % every == 0:
                if max_frames is not None and yielded >= max_frames:  # only read on with refuse_more
                    raise InputTooLarge(f"at every={every} the video has more frames to analyse than the limit of "
                                        f"{max_frames:,} analysed frames: pass a larger 'every' or 'max_frames'")
                yield Frame(index, index / info.fps, _upright(frame, turns, info))
                yielded += 1
                if yielded == max_frames and not refuse_more:
                    break
    finally:
        decoded.close()  # closes the container
    if yielded == 0:
        raise UnsupportedMedia("the video has no readable frames (try MP4/H.264, AVI or MKV)")


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
