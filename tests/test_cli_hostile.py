"""Hostile inputs to the ``emotion`` command: refused with one line and an exit code, before any
work, reading nothing they name and never damaging the input or a previous output."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from emotion_recognition import cli
from testkit import REPO_ROOT, own_peak_memory, tiny_model_file  # noqa: F401
from hostile_inputs import (concat_list, growing_mjpeg, hls_playlist, jpeg_scan_bomb, png_bomb, without_frame_count,
                            write_video)


def same_file_spellings(tmp_path: Path, source: Path) -> dict[str, str]:
    """Ways to name ``source`` as the output: itself, relative, through a symlink, a hard link."""
    (tmp_path / "sub").mkdir()
    os.symlink(source, tmp_path / "link.avi")
    os.link(source, tmp_path / "hard.avi")
    return {"same": str(source), "relative": os.path.relpath(source, tmp_path / "sub"),
            "dotted": str(tmp_path / "sub" / ".." / source.name), "symlink": str(tmp_path / "link.avi"),
            "hardlink": str(tmp_path / "hard.avi")}


def test_output_naming_the_input_is_refused_before_touching_it(tmp_path, capsys, monkeypatch):
    source = write_video(tmp_path / "A.avi", 3, 32, 24)
    before, mtime = source.read_bytes(), source.stat().st_mtime_ns
    for how, output in same_file_spellings(tmp_path, source).items():
        monkeypatch.chdir(tmp_path / "sub")
        assert cli.main(["video", str(source), "-o", output]) == cli.EXIT_USAGE, how
        assert "is the input file" in capsys.readouterr().err, how
    photo = tmp_path / "p.png"
    photo.write_bytes(b"\x89PNG not even read")
    assert cli.main(["photo", str(photo), "-o", str(photo)]) == cli.EXIT_USAGE
    assert cli.main(["photo", str(tmp_path / "p.json"), "-o", str(tmp_path / "p.png")]) == cli.EXIT_USAGE  # the JSON beside it
    assert "is the input file" in capsys.readouterr().err
    assert source.read_bytes() == before and source.stat().st_mtime_ns == mtime
    assert photo.read_bytes() == b"\x89PNG not even read"


@pytest.mark.parametrize("name, make", [
    ("playlist.m3u8", hls_playlist), ("playlist.mp4", hls_playlist), ("list.ffconcat", concat_list),
    ("bomb.mp4", lambda secret: png_bomb(16_000, 16_000)),
])
def test_non_containers_exit_1_in_one_line_and_write_nothing(tmp_path, capsys, name, make):
    secret = write_video(tmp_path / "secret.avi", 5, 40, 30)
    upload = tmp_path / "in" / name
    upload.parent.mkdir()
    upload.write_bytes(make(secret))
    start = time.process_time()
    assert cli.main(["video", str(upload), "-o", str(tmp_path / "out" / "o.mp4")]) == 1
    assert time.process_time() - start < 1.0
    err = capsys.readouterr().err
    assert err.startswith(f"error: {name} is not a video container") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_scan_bomb_photo_is_refused(tmp_path, capsys):
    bomb = tmp_path / "bomb.jpg"
    bomb.write_bytes(jpeg_scan_bomb(5000))
    start = time.process_time()
    assert cli.main(["photo", str(bomb), "-o", str(tmp_path / "o.jpg")]) == 1
    assert time.process_time() - start < 0.5
    assert "scans, over the limit of 100" in capsys.readouterr().err
    assert not (tmp_path / "o.jpg").exists()


def test_playlist_through_the_console_reads_no_server_file(tmp_path):
    secret = write_video(tmp_path / "secret.avi", 5, 40, 30)
    playlist = tmp_path / "x.m3u8"
    playlist.write_bytes(hls_playlist(secret))
    result = subprocess.run(
        [sys.executable, "-m", "emotion_recognition.cli", "video", str(playlist), "-o", str(tmp_path / "o.mp4")],
        capture_output=True, text=True, timeout=120, cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: x.m3u8 is not a video container")
    assert not (tmp_path / "o.mp4").exists() and not (tmp_path / "o.csv").exists()


def test_a_failure_midway_leaves_the_previous_outputs_intact(tmp_path, capsys, tiny_model_file):  # noqa: F811
    """Over the pixel budget after two batches (a stream that hides its length): exit 1, and the
    outputs of an earlier run are still there, unchanged, with no partial file left beside them."""
    source = without_frame_count(write_video(tmp_path / "long.avi", 12, 32, 24))
    out = tmp_path / "out.mp4"
    out.write_bytes(b"earlier video")
    out.with_suffix(".csv").write_text("earlier timeline\n")
    code = cli.main(["video", str(source), "-o", str(out), "--model", str(tiny_model_file), "--batch", "2",
                     "--max-video-pixels", str(32 * 24 * 5), "--quiet"])
    assert code == 1
    assert "needs more than 5 decoded frames" in capsys.readouterr().err
    assert out.read_bytes() == b"earlier video" and out.with_suffix(".csv").read_text() == "earlier timeline\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.avi", "out.csv", "out.mp4"]
    assert cli.main(["video", str(source), "-o", str(out), "--model", str(tiny_model_file), "--quiet"]) == 0
    assert out.read_bytes()[4:8] == b"ftyp" and len(out.with_suffix(".csv").read_text().splitlines()) == 13


def test_a_negative_pixel_budget_is_refused(tmp_path, capsys):
    assert cli.main(["video", str(tmp_path / "never-read.avi"), "--max-video-pixels", "-1"]) == cli.EXIT_USAGE
    assert "argument --max-video-pixels: must be >= 0, got -1" in capsys.readouterr().err


def test_a_frame_far_larger_than_the_header_exits_1_and_keeps_the_previous_outputs(tmp_path, capsys, tiny_model_file):  # noqa: F811
    """A 320x240 AVI whose frames 1-3 are 16000x16000: one line naming the limit, no traceback,
    a tenth of a second of CPU and a few MB (OpenCV decoded each big frame: 1.4 s and +380 MB
    for this video, measured on the previous code), and the outputs of an earlier run untouched,
    with no partial file beside them."""
    clean = write_video(tmp_path / "clean.avi", 5, 320, 240)
    out = tmp_path / "out.mp4"
    # the first run in a process pays the model's and TensorFlow's start (~2 s): not measured
    assert cli.main(["video", str(clean), "-o", str(out), "--model", str(tiny_model_file), "--quiet"]) == 0
    capsys.readouterr()
    out.write_bytes(b"earlier video")
    timeline = out.with_suffix(".csv").read_text()
    source = growing_mjpeg(tmp_path / "growing.avi")
    before, start = own_peak_memory(reset=True), time.process_time()
    code = cli.main(["video", str(source), "-o", str(out), "--model", str(tiny_model_file), "--quiet"])
    cpu, grown = time.process_time() - start, own_peak_memory() - before
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("error: the video has a frame over the limit of 40,000,000 pixels per frame "
                          "(its header says 320x240): it was refused before decoding"), err
    assert cpu < 0.5 and grown < 100 * 1024 * 1024, (cpu, grown / 1024 / 1024)
    assert out.read_bytes() == b"earlier video" and out.with_suffix(".csv").read_text() == timeline
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clean.avi", "growing.avi", "out.csv", "out.mp4"]
