"""Hostile media against a real ``bentoml serve``: playlists naming a server file, an image posing
as a video, a JPEG scan bomb. Each gets its exact 4xx, costing the server < 1 s of CPU and < 300 MB
of memory (read from /proc for the server's whole process group), and reads no server file."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from testkit import REPO_ROOT, running_server, serve_env, server_cost
from hostile_inputs import (concat_list, growing_mjpeg, hls_playlist, jpeg_scan_bomb, png_bomb, without_frame_count,
                            write_video)

pytestmark = pytest.mark.slow
MB = 1024 * 1024


@pytest.fixture(scope="module")
def server(bentoml_home, tmp_path_factory):
    """`bentoml serve` with the test limits, at most 5 analysed frames and 8 decoded 32x24 frames' pixels per video."""
    limits = {k: v for k, v in os.environ.items() if k.startswith("EMOTION_MAX_")}  # conftest's
    limits.update(EMOTION_MAX_VIDEO_FRAMES="5", EMOTION_MAX_VIDEO_PIXELS=str(8 * 32 * 24))
    with running_server(bentoml_home, tmp_path_factory.mktemp("hostile-server") / "serve.log", **limits) as url:
        yield url


@pytest.fixture(scope="module")
def secret(tmp_path_factory) -> Path:
    """A video on the server's disk that no upload may make it read."""
    return write_video(tmp_path_factory.mktemp("private") / "private-recording.avi", 7, 40, 30, value=201)


def post_bounded(url: str, path: str, files: dict, data: dict | None = None) -> httpx.Response:
    response, cpu, peak = server_cost(url, lambda: httpx.post(url + path, files=files, data=data, timeout=60))
    print(f"{path} {response.status_code}: {cpu:.2f} s server CPU, peak +{peak / MB:.0f} MB")  # -s
    assert cpu < 1.0, f"{path}: {cpu:.2f} s of server CPU"
    assert peak < 300 * MB, f"{path}: server memory peak grew by {peak / MB:.0f} MB"
    return response


@pytest.mark.parametrize("path", ["/video_timeline", "/video_timeline_csv", "/annotate_video"])
def test_playlists_naming_a_server_file_get_415(server, secret, path):
    for name, body in [("x.m3u8", hls_playlist(secret)), ("list.txt", concat_list(secret))]:
        response = post_bounded(server, path, {"video": (name, body)})
        assert response.status_code == 415, (name[:20], response.status_code, response.text[:300])
        assert "the upload is not a video container this program reads" in response.text
        assert b"private-recording" not in response.content and b"RIFF" not in response.content


def test_a_stream_that_hides_its_length_is_refused_not_cut(server, tmp_path):
    """No max_frames: more frames to analyse than the limit is a 413 whether or not the container
    tells its frame count; with max_frames the answer has exactly those frames."""
    stream = without_frame_count(write_video(tmp_path / "s.avi", 8, 32, 24)).read_bytes()
    told = write_video(tmp_path / "t.avi", 8, 32, 24).read_bytes()
    for name, body in [("stream.avi", stream), ("told.avi", told)]:
        response = post_bounded(server, "/video_timeline", {"video": (name, body)})
        assert response.status_code == 413 and "the limit of 5 analysed frames" in response.text, response.text
    response = httpx.post(server + "/video_timeline", files={"video": ("s.avi", stream)}, data={"max_frames": "5"}, timeout=60)
    assert response.status_code == 200 and [f["frame"] for f in response.json()["frames"]] == [0, 1, 2, 3, 4]
    assert response.json()["frame_count"] == 0
    response = httpx.post(server + "/video_timeline", files={"video": ("s.avi", stream)}, data={"every": "2"}, timeout=60)
    assert response.status_code == 200 and len(response.json()["frames"]) == 4


def test_the_per_video_pixel_budget(server, tmp_path):
    """EMOTION_MAX_VIDEO_PIXELS: 8 frames of 32x24 may be decoded, 9 may not (the count is known: before decoding)."""
    video = write_video(tmp_path / "v.avi", 10, 32, 24).read_bytes()
    response = post_bounded(server, "/video_timeline", {"video": ("v.avi", video)}, {"every": "4", "max_frames": "3"})
    assert response.status_code == 413 and "needs 9 decoded frames, over the limit of 8" in response.text, response.text


def test_an_upload_is_stored_under_a_fixed_name_without_the_clients_suffix(bentoml_home):
    """FFmpeg picks demuxers by suffix (.m3u8 -> HLS): the client's filename never reaches the disk."""
    from bentoml._internal.context import _request_var
    from starlette.requests import Request

    from serving.forms import StrictFormSerde
    from serving.service import EmotionService

    body = (b'--b\r\nContent-Disposition: form-data; name="video"; filename="clip.m3u8"\r\n\r\n'
            b"#EXTM3U\r\n--b--\r\n")

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    request = Request({"type": "http", "method": "POST", "headers": [(b"content-type", b"multipart/form-data; boundary=b")]},
                      receive)
    token = _request_var.set(request)
    try:
        parsed = asyncio.run(StrictFormSerde().parse_request(request, EmotionService.apis["video_timeline"].input_spec))
    finally:
        _request_var.reset(token)
    assert parsed.video.read_bytes() == b"#EXTM3U"
    assert parsed.video.suffix == "" and "clip" not in parsed.video.name


@pytest.mark.parametrize("path", ["/video_timeline", "/video_timeline_csv", "/annotate_video"])
def test_frames_larger_than_the_header_get_413_before_they_are_decoded(live_server, tmp_path, path):
    """A 320x240 AVI (4.5 MB) whose frames 1-3 are 16000x16000 MJPEG, 384 MB each decoded. The old
    reader (OpenCV) decoded and scaled each one: 200 after >1 s of CPU and +390 MB. FFmpeg now
    refuses each before allocating it (max_pixels): a 413 JSON error, never a partial video.
    The conftest server: 3,000,000 pixels per frame, the default per-video budget."""
    video = growing_mjpeg(tmp_path / "growing.avi").read_bytes()
    response = post_bounded(live_server, path, {"video": ("growing.avi", video)})
    assert response.status_code == 413, (response.status_code, response.text[:300])
    assert response.headers["content-type"] == "application/json"
    assert "the video has a frame over the limit of 3,000,000 pixels per frame (its header says 320x240)" in response.text


def test_16000x16000_png_named_mp4_gets_415_before_any_decode(server):
    response = post_bounded(server, "/annotate_video", {"video": ("big.mp4", png_bomb(16_000, 16_000))})
    assert response.status_code == 415 and "is not a video container" in response.text


def test_jpeg_scan_bomb_gets_413(server):
    response = post_bounded(server, "/analyze", {"image": ("bomb.jpg", jpeg_scan_bomb(20_000))})
    assert response.status_code == 413 and "scans, over the limit of 100" in response.text


def test_a_misspelt_setting_stops_the_server_naming_the_close_match(bentoml_home):
    env = {**serve_env(bentoml_home), "EMOTION_MAX_IMAGE_BYTE": "1000"}
    process = subprocess.run(
        [str(Path(sys.executable).parent / "bentoml"), "serve", "serving.service:EmotionService", "--port", "0"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    output = process.stdout + process.stderr
    assert process.returncode != 0 and "Traceback" not in output
    assert "EMOTION_MAX_IMAGE_BYTE is not a setting (did you mean EMOTION_MAX_IMAGE_BYTES?)" in output
