"""Hostile media against emotion_recognition.media, in process: what reaches FFmpeg, and the work
done before a refusal."""

from __future__ import annotations

import io
import os
import time

import cv2
import numpy as np
import pytest
from PIL import Image

from emotion_recognition import media
from emotion_recognition.media import (
    ImageLimits,
    InputTooLarge,
    UnsupportedMedia,
    VideoLimits,
    decode_image,
    iter_video_frames,
    video_frames,
)
from hostile_inputs import concat_list, hls_playlist, jpeg_scan_bomb, png_bomb, without_frame_count, write_video


@pytest.fixture
def secret(tmp_path):
    """A video on the 'server' that no upload may make us read."""
    (tmp_path / "secret").mkdir()
    return write_video(tmp_path / "secret" / "private.avi", 7, 40, 30, value=201)


@pytest.fixture
def opened(monkeypatch):
    """Every path cv2.VideoCapture is asked to open (the real capture still opens it)."""
    paths, real = [], cv2.VideoCapture

    def recording(source, *args):
        paths.append(str(source))
        return real(source, *args)

    monkeypatch.setattr(cv2, "VideoCapture", recording)
    return paths


def small_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 200, 30)).save(buffer, "JPEG")
    return buffer.getvalue()


NOT_CONTAINERS = {
    "playlist.m3u8": hls_playlist,
    "playlist.mp4": hls_playlist,
    "concat.ffconcat": concat_list,
    "concat.mkv": concat_list,
    "bomb16000.mp4": lambda secret: png_bomb(16_000, 16_000),
    "photo.avi": lambda secret: small_jpeg(),
}


@pytest.mark.parametrize("name", NOT_CONTAINERS)
def test_non_containers_are_refused_before_opencv_sees_them(tmp_path, secret, opened, name):
    upload = tmp_path / name
    upload.write_bytes(NOT_CONTAINERS[name](secret))
    start = time.process_time()
    with pytest.raises(UnsupportedMedia, match="is not a video container this program reads") as error:
        video_frames(upload)
    assert time.process_time() - start < 1.0
    assert error.value.http_status == 415
    assert opened == []  # neither the upload nor the file it names was opened


def test_ffmpeg_is_pinned_to_the_sniffed_demuxer_and_local_files(tmp_path, secret, monkeypatch):
    """The second layer: were the sniffing fooled, FFmpeg still opens neither the playlist nor its target."""
    playlist = tmp_path / "playlist.m3u8"
    playlist.write_bytes(hls_playlist(secret))
    plain = cv2.VideoCapture(str(playlist))  # what an upload named .m3u8 did before
    assert plain.read()[0], "the HLS attack should work without the options (else this test proves nothing)"
    plain.release()
    for demuxer in ("mov", "avi", "matroska", "mpegts", "mpeg"):
        monkeypatch.setattr(media, "sniff_container", lambda head, demuxer=demuxer: demuxer)
        with pytest.raises(UnsupportedMedia, match="is not a video OpenCV can read"):
            video_frames(playlist)
    assert "OPENCV_FFMPEG_CAPTURE_OPTIONS" not in os.environ  # the options were scoped to our open


@pytest.mark.parametrize("suffix, fourcc", [(".avi", "MJPG"), (".mp4", "mp4v"), (".mkv", "MJPG"), (".webm", "VP80")])
def test_real_containers_still_open(tmp_path, suffix, fourcc, monkeypatch):
    monkeypatch.setenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")  # a user's own, kept
    path = tmp_path / f"v{suffix}"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10.0, (64, 48))
    for _ in range(3):
        writer.write(np.full((48, 64, 3), 90, np.uint8))
    writer.release()
    info, frames = video_frames(path)
    assert info.width == 64 and len(list(frames)) == 3
    assert os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] == "rtsp_transport;tcp"


def test_frame_size_is_checked_before_any_frame_is_decoded(tmp_path, monkeypatch):
    video = write_video(tmp_path / "v.avi", 3, 64, 48)
    reads, real = [], cv2.VideoCapture

    class Counting:  # counts read() calls (a cv2.VideoCapture subclass crashes OpenCV)
        def __init__(self, *args):
            self.capture = real(*args)

        def read(self):
            reads.append(1)
            return self.capture.read()

        def __getattr__(self, name):
            return getattr(self.capture, name)

    monkeypatch.setattr(cv2, "VideoCapture", Counting)
    with pytest.raises(InputTooLarge, match="64x48 = 3,072 pixels, over the limit of 3,000 pixels") as error:
        video_frames(video, limits=VideoLimits(max_frame_pixels=3000))
    assert error.value.http_status == 413 and reads == []
    info, frames = video_frames(video, limits=VideoLimits(max_frame_pixels=3072))
    assert info.width == 64 and reads == [] and next(frames).index == 0 and reads == [1]


def test_per_video_pixel_budget(tmp_path):
    video = write_video(tmp_path / "v.avi", 20, 64, 48)
    with pytest.raises(InputTooLarge, match="64x48 video at every=1 needs more than 10 decoded frames"):
        list(iter_video_frames(video, limits=VideoLimits(max_pixels=64 * 48 * 10)))
    assert len(list(iter_video_frames(video, limits=VideoLimits(max_pixels=64 * 48 * 20)))) == 20
    assert VideoLimits(max_pixels=1).max_read(video_frames(video)[0]) == 1  # never 0: a refusal, not an empty answer


def test_a_stream_without_a_frame_count_is_refused_not_cut(tmp_path):
    video = without_frame_count(write_video(tmp_path / "v.avi", 12, 32, 24))
    assert video_frames(video)[0].frame_count == 0
    with pytest.raises(InputTooLarge, match="at every=1 the video has more frames to analyse than the limit of 5 analysed"):
        list(iter_video_frames(video, max_frames=5, refuse_more=True))
    with pytest.raises(InputTooLarge, match="at every=5 the video has more frames to analyse than the limit of 2 analysed"):
        list(iter_video_frames(video, every=5, max_frames=2, refuse_more=True))  # frame 10 is a third
    assert [f.index for f in iter_video_frames(video, every=5, max_frames=3, refuse_more=True)] == [0, 5, 10]
    assert len(list(iter_video_frames(video, max_frames=5))) == 5  # an explicit max_frames cuts, as asked


def test_jpeg_scan_bomb_is_refused_before_decoding():
    bomb = jpeg_scan_bomb(5000)
    assert len(bomb) < 100_000
    start = time.process_time()
    with pytest.raises(InputTooLarge, match="the JPEG has 5,00[0-9] scans, over the limit of 100") as error:
        decode_image(bomb)
    assert time.process_time() - start < 0.1 and error.value.http_status == 413
    ordinary = io.BytesIO()
    Image.new("RGB", (300, 200), (1, 2, 3)).save(ordinary, "JPEG", progressive=True)
    assert decode_image(ordinary.getvalue()).shape == (200, 300, 3)
    assert decode_image(jpeg_scan_bomb(50, 64), ImageLimits(max_jpeg_scans=100)).shape == (64, 64, 3)


def test_a_real_container_without_decodable_frames_is_415(tmp_path):
    video = write_video(tmp_path / "v.avi", 3, 32, 24)
    data = video.read_bytes()
    video.write_bytes(data[: data.index(b"movi") + 4])  # the header, and no frame
    info, frames = video_frames(video)
    assert info.width == 32
    with pytest.raises(UnsupportedMedia, match="the video has no readable frames") as error:
        next(frames)
    assert error.value.http_status == 415
