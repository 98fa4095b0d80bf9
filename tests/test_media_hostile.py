"""Hostile media against emotion_recognition.media, in process: what reaches FFmpeg, and the work
done before a refusal."""

from __future__ import annotations

import io
import time

import av
import cv2
import numpy as np
import pytest
from PIL import Image

from emotion_recognition import media
from emotion_recognition.media import (
    CorruptVideo,
    ImageLimits,
    InputTooLarge,
    UnsupportedMedia,
    VideoLimits,
    decode_image,
    iter_video_frames,
    video_frames,
)
from hostile_inputs import (RESIZING_CODECS, concat_list, growing_mjpeg, hls_playlist, jpeg_scan_bomb, png_bomb,
                            replace_frames, resizing_video, without_frame_count, write_video)
from testkit import own_peak_memory

MB = 1024 * 1024


@pytest.fixture
def secret(tmp_path):
    """A video on the 'server' that no upload may make us read."""
    (tmp_path / "secret").mkdir()
    return write_video(tmp_path / "secret" / "private.avi", 7, 40, 30, value=201)


@pytest.fixture
def opened(monkeypatch):
    """Every path FFmpeg (PyAV's av.open) is asked to open (the real open still runs)."""
    paths, real = [], av.open

    def recording(source, *args, **kwargs):
        paths.append(str(source))
        return real(source, *args, **kwargs)

    monkeypatch.setattr(av, "open", recording)
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
def test_non_containers_are_refused_before_ffmpeg_sees_them(tmp_path, secret, opened, name):
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
    with av.open(str(playlist)) as plain:  # what an upload named .m3u8 did before
        values = [int(frame.to_ndarray(format="gray").mean()) for frame in plain.decode(video=0)]
    assert len(values) == 7, "the HLS attack should work without the options (else this test proves nothing)"
    for demuxer in ("mov", "avi", "matroska", "mpegts", "mpeg"):
        monkeypatch.setattr(media, "sniff_container", lambda head, demuxer=demuxer: demuxer)
        with pytest.raises(UnsupportedMedia, match="playlist.m3u8 is not a video this program can read"):
            video_frames(playlist)


@pytest.mark.parametrize("suffix, fourcc", [(".avi", "MJPG"), (".mp4", "mp4v"), (".mkv", "MJPG"), (".webm", "VP80")])
def test_real_containers_still_open(tmp_path, suffix, fourcc):
    path = tmp_path / f"v{suffix}"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10.0, (64, 48))
    for value in (60, 120, 180):
        writer.write(np.full((48, 64, 3), value, np.uint8))
    writer.release()
    info, frames = video_frames(path)
    assert (info.width, info.height, info.fps) == (64, 48, 10.0)
    assert info.frame_count == 3  # from the header, or as OpenCV did, duration x rate (Matroska)
    assert [round(float(f.rgb.mean()) / 10) for f in frames] == [6, 12, 18]


def test_frame_size_is_checked_before_any_frame_is_decoded(tmp_path, monkeypatch):
    video = write_video(tmp_path / "v.avi", 3, 64, 48)
    packets, real = [], av.open

    class Counting:  # counts the packets handed to the decoder (PyAV's container is a C type)
        def __init__(self, *args, **kwargs):
            self.container = real(*args, **kwargs)

        def demux(self, *streams):
            for packet in self.container.demux(*streams):
                packets.append(packet.size)
                yield packet

        def __getattr__(self, name):
            return getattr(self.container, name)

    monkeypatch.setattr(av, "open", Counting)
    with pytest.raises(InputTooLarge, match="64x48 = 3,072 pixels, over the limit of 3,000 pixels") as error:
        video_frames(video, limits=VideoLimits(max_frame_pixels=3000))
    assert error.value.http_status == 413 and packets == []
    info, frames = video_frames(video, limits=VideoLimits(max_frame_pixels=3072))
    assert info.width == 64 and len(packets) == 1  # the first frame, for its orientation
    assert [f.index for f in frames] == [0, 1, 2]


def test_a_frame_larger_than_the_header_is_refused_before_it_is_decoded(tmp_path):
    """The header says 320x240; frames 1-3 are 16000x16000 MJPEG (1.5 MB each, 384 MB decoded).
    OpenCV decoded each one and scaled it to 320x240 (~0.5 s and +390 MB for one here): FFmpeg's
    max_pixels now refuses it before allocating its buffer."""
    video = growing_mjpeg(tmp_path / "growing.avi")
    before, start = own_peak_memory(reset=True), time.process_time()
    with pytest.raises(InputTooLarge, match=r"the video has a frame over the limit of 40,000,000 pixels per frame "
                                            r"\(its header says 320x240\): it was refused before decoding") as error:
        list(iter_video_frames(video))
    cpu, grown = time.process_time() - start, own_peak_memory() - before
    assert error.value.http_status == 413
    assert cpu < 0.5 and grown < 100 * MB, (cpu, grown / MB)


@pytest.mark.parametrize("kind", RESIZING_CODECS)
def test_every_codec_refuses_a_frame_over_the_limit(tmp_path, kind):
    """320x240, then two 1280x720 frames, then 320x240 again, in one stream: VP8, H.264 (MP4, TS),
    MPEG-4 part 2, MPEG-2. Far over the limit: refused by FFmpeg before decoding; just over it (within
    FFmpeg's 2x slack): refused by the exact check on the decoded frame; within it: every frame comes
    out at the header's size, as OpenCV gave it."""
    video = resizing_video(tmp_path / f"v{RESIZING_CODECS[kind][2]}", kind, [(320, 240, 3), (1280, 720, 2), (320, 240, 2)])
    with pytest.raises(InputTooLarge, match=r"over the limit of 300,000 pixels per frame \(its header says 320x240\): "
                                            r"it was refused before decoding"):
        list(iter_video_frames(video, limits=VideoLimits(max_frame_pixels=300_000)))
    with pytest.raises(InputTooLarge, match=r"a 1280x720 frame = 921,600 pixels over the limit of 600,000 pixels"):
        list(iter_video_frames(video, limits=VideoLimits(max_frame_pixels=600_000)))
    shapes = {f.rgb.shape for f in iter_video_frames(video, limits=VideoLimits(max_frame_pixels=921_600))}
    assert shapes == {(240, 320, 3)}


def test_the_pixel_budget_counts_the_frames_real_size(tmp_path):
    """A header of 32x24 must not stretch the per-video budget: 1280x720 frames count as such."""
    video = resizing_video(tmp_path / "v.webm", "vp8", [(32, 24, 1), (320, 240, 4)])
    with pytest.raises(InputTooLarge, match="decoded frames hold more than 250,000 pixels, the limit per video"):
        list(iter_video_frames(video, limits=VideoLimits(max_pixels=250_000)))
    assert len(list(iter_video_frames(video, limits=VideoLimits(max_pixels=32 * 24 + 4 * 320 * 240)))) == 5


def test_rotated_videos_come_out_upright_as_opencv_gave_them(tmp_path):
    """Phone videos carry a display rotation: OpenCV applied it (and swapped width and height)."""
    image = np.zeros((48, 64, 3), np.uint8)
    image[:8, :16] = (255, 0, 0)  # a red block in the top left corner
    for degrees in (90, -90, 180):
        path = tmp_path / f"r{degrees}.mp4"
        with av.open(str(path), "w") as out:
            stream = out.add_stream("mpeg4", rate=10)
            stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
            stream.set_display_rotation(degrees)
            for packet in [*stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")), *stream.encode()]:
                out.mux(packet)
        capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
        ok, bgr = capture.read()
        capture.release()
        info, frames = video_frames(path)
        rgb = next(frames).rgb
        assert ok and (info.width, info.height) == (bgr.shape[1], bgr.shape[0]) == (rgb.shape[1], rgb.shape[0])
        assert np.abs(rgb.astype(int) - bgr[:, :, ::-1]).max() <= 2, degrees


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


def test_damaged_frames_are_skipped_and_many_refused(tmp_path):
    """Garbage where a frame should be is not a size problem: that frame is lost, the others come
    out (OpenCV ended the video at the first); past MAX_BAD_PACKETS the video is refused as damaged."""
    garbage = {1: bytes(range(256)) * 8, 2: b"\xff\xd8" + bytes(3000)}
    video = replace_frames(write_video(tmp_path / "v.avi", 5, 32, 24, value=100), garbage)
    assert [round(float(f.rgb.mean()), -1) for f in iter_video_frames(video)] == [100, 100, 100]
    assert [f.index for f in iter_video_frames(video)] == [0, 1, 2]
    many = media.MAX_BAD_PACKETS + 1
    video = replace_frames(write_video(tmp_path / "w.avi", many + 1, 32, 24), {i: bytes(100) for i in range(1, many + 1)})
    with pytest.raises(CorruptVideo, match=f"more than {media.MAX_BAD_PACKETS} of its frames cannot be decoded") as error:
        list(iter_video_frames(video))
    assert error.value.http_status == 400
