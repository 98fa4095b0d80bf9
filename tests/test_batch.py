"""``emotion batch`` and the notebook API: inputs, rows equal to ``emotion photo``/``video``, errors as
rows, worker processes, and resuming after a SIGKILL."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from emotion_recognition import batch, cli
from emotion_recognition.inference import EmotionRecognizer
from emotion_recognition.labels import EMOTIONS
from emotion_recognition.media import read_image, write_image
from testkit import FER_ZIP, REPO_ROOT, face_canvas, media, require_shared, tiny_model_file  # noqa: F401


def test_inputs_folders_globs_lists_in_order_each_once(tmp_path):
    for name in ("b/2.jpg", "b/c/3.png", "a.mp4", "notes.txt", "1.jpg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "list.txt").write_text(f"# mine\n{tmp_path / 'notes.txt'}\n\n{tmp_path / '1.jpg'}\n")
    found = batch.expand_inputs([tmp_path / "b", str(tmp_path / "*.mp4"), f"@{tmp_path / 'list.txt'}",
                                 tmp_path / "b" / "2.jpg"])
    assert found == [str(tmp_path / p) for p in ("b/2.jpg", "b/c/3.png", "a.mp4", "notes.txt", "1.jpg")]
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        batch.expand_inputs([tmp_path / "nothing-here"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no photo or video in"):
        batch.expand_inputs([tmp_path / "empty"])


def test_lists_naming_themselves_or_each_other_are_read_once(tmp_path):
    (tmp_path / "1.jpg").write_bytes(b"x")
    (tmp_path / "2.jpg").write_bytes(b"x")
    (tmp_path / "self.txt").write_text(f"@{tmp_path / 'self.txt'}\n{tmp_path / '1.jpg'}\n")
    (tmp_path / "a.txt").write_text(f"{tmp_path / '2.jpg'}\n@{tmp_path / 'b.txt'}\n")
    (tmp_path / "b.txt").write_text(f"@{tmp_path / 'sub' / '..' / 'a.txt'}\n{tmp_path / '1.jpg'}\n")  # a.txt again
    (tmp_path / "sub").mkdir()
    assert batch.expand_inputs([f"@{tmp_path / 'self.txt'}"]) == [str(tmp_path / "1.jpg")]
    assert batch.expand_inputs([f"@{tmp_path / 'a.txt'}"]) == [str(tmp_path / p) for p in ("2.jpg", "1.jpg")]
    (tmp_path / "loop.txt").write_text(f"@{tmp_path / 'loop.txt'}\n")
    with pytest.raises(FileNotFoundError, match="no photo or video in"):
        batch.expand_inputs([f"@{tmp_path / 'loop.txt'}"])
    code = subprocess.run([sys.executable, "-m", "emotion_recognition.cli", "batch", f"@{tmp_path / 'loop.txt'}", "-o",
                           str(tmp_path / "r.csv")], env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
                          capture_output=True, text=True, timeout=120)
    assert code.returncode == 1 and code.stderr.startswith("error: no photo or video in"), code.stderr


def test_progress_is_a_bar_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    meter = batch._Progress(stream, total=3, done=1)
    meter.step(faces=2, new=1)
    meter.step(faces=1, new=2)
    assert "3/3" in stream.getvalue() and "faces=3" in stream.getvalue() and "file/s" in stream.getvalue()


def test_files_table_path():
    assert batch.files_table_path("out/r.parquet") == "out/r.files.parquet"
    assert batch.files_table_path("s3://bucket/run.1/results") == "s3://bucket/run.1/results.files"


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory) -> Path:
    """Real photos (../shared/media and generated FER canvases), Megamind.avi and two bad files."""
    folder = tmp_path_factory.mktemp("mixed")
    for name in ("angry_girl.jpg", "messi5.jpg", "Megamind.avi"):
        shutil.copy(media(name), folder / name)
    for seed in (0, 1):
        write_image(face_canvas(require_shared(FER_ZIP), n_faces=2, size=(320, 240), seed=seed)[0],
                    folder / "canvas" / f"c{seed}.png")
    whole = (folder / "canvas" / "c0.png").read_bytes()
    (folder / "canvas" / "broken.png").write_bytes(whole[: len(whole) // 2])  # truncated
    (folder / "empty.mp4").write_bytes(b"")
    return folder


def test_rows_equal_emotion_photo_and_video_and_bad_files_are_rows(tmp_path, mixed_folder, tiny_model_file, capsys):  # noqa: F811
    out = tmp_path / "r.csv"
    model = ["--model", str(tiny_model_file)]
    assert cli.main(["batch", str(mixed_folder), "-o", str(out), "--every", "60", "--workers", "1", *model]) == 0
    captured = capsys.readouterr()
    assert "7 file(s)" in captured.out
    assert "batch: 7/7 files" in captured.err and "files/s, ETA 0 s" in captured.err  # not a terminal: plain lines
    faces = pd.read_csv(out)
    files = pd.read_csv(tmp_path / "r.files.csv").set_index("file")
    assert list(faces.columns) == batch.FACE_COLUMNS and set(EMOTIONS) < set(faces.columns)
    assert files.loc[str(mixed_folder / "empty.mp4"), "status"] == "error"
    assert "empty" in files.loc[str(mixed_folder / "empty.mp4"), "error"]
    assert "could not be decoded" in files.loc[str(mixed_folder / "canvas" / "broken.png"), "error"]
    assert (files["status"] == "ok").sum() == 5 and files["faces"].sum() == len(faces)
    for photo in ("angry_girl.jpg", "canvas/c0.png", "canvas/c1.png"):
        assert cli.main(["photo", str(mixed_folder / photo), "-o", str(tmp_path / "p.png"), *model]) == 0
        expected = json.loads((tmp_path / "p.json").read_text())["faces"]
        rows = faces[faces["file"] == str(mixed_folder / photo)]
        assert len(rows) == len(expected) >= 1
        for (_, row), face in zip(rows.iterrows(), expected):
            assert [row.x, row.y, row.w, row.h] == list(face["box"].values())
            assert row.confidence == face["confidence"] and row.emotion == face["emotion"]
            assert json.loads(row.landmarks) == face["landmarks"]
            assert [row[e] for e in EMOTIONS] == [face["probabilities"][e] for e in EMOTIONS]
    assert cli.main(["video", str(mixed_folder / "Megamind.avi"), "-o", str(tmp_path / "v.avi"), "--every", "60",
                     "--quiet", *model]) == 0
    expected = [r for r in csv.DictReader((tmp_path / "v.csv").open()) if r["face"]]
    rows = faces[faces["file"] == str(mixed_folder / "Megamind.avi")]
    assert len(rows) == len(expected) >= 4
    for (_, row), face in zip(rows.iterrows(), expected):
        assert [row.frame, row.face, row.track_id, row.x, row.w] == [int(face[k]) for k in
                                                                    ("frame", "face", "track_id", "x", "w")]
        assert [row.time_s, *[row[e] for e in EMOTIONS]] == [float(face[k]) for k in ("time_s", *EMOTIONS)]


def test_api_paths_and_image_give_the_same_rows(mixed_folder, tiny_model_file, monkeypatch):  # noqa: F811
    """... and analyze_image loads the model once, again only when the file changes."""
    photo = mixed_folder / "canvas" / "c1.png"
    table = batch.analyze_paths([photo, mixed_folder / "empty.mp4"], model=str(tiny_model_file))
    assert len(table) == 2 and set(table["file"]) == {str(photo)}
    assert list(table.attrs["files"]["status"]) == ["ok", "error"]
    batch._load_recognizer.cache_clear()
    loads = []
    from_file = EmotionRecognizer.from_file
    monkeypatch.setattr(EmotionRecognizer, "from_file", lambda *a, **k: loads.append(a) or from_file(*a, **k))
    for _ in range(2):  # the second call reuses the recognizer
        single = batch.analyze_image(read_image(photo), model=str(tiny_model_file))
        pd.testing.assert_frame_equal(single.drop(columns="file"), table.drop(columns="file"))
    assert len(loads) == 1
    os.utime(tiny_model_file)  # the file changed: loaded again
    batch.analyze_image(read_image(photo), model=str(tiny_model_file))
    assert len(loads) == 2


def _batch_command(folder: Path, out: Path, model: Path, *extra: str) -> list[str]:
    # A part after every file (FLUSH_SECONDS = 0), so that a kill lands between parts.
    script = ("import sys; from emotion_recognition import batch, cli; batch.FLUSH_SECONDS = 0; "
              "sys.exit(cli.main(sys.argv[1:]))")
    return [sys.executable, "-c", script, "batch", str(folder), "-o", str(out), "--model", str(model),
            "--every", "60", "--workers", "2", *extra]


@pytest.mark.slow
def test_a_killed_run_resumes_and_each_face_is_there_once(tmp_path, mixed_folder, tiny_model_file):  # noqa: F811
    folder = tmp_path / "in"
    shutil.copytree(mixed_folder, folder)
    for i in range(6):  # more photos, so the kill lands mid-way
        shutil.copy(folder / "canvas" / f"c{i % 2}.png", folder / f"copy{i}.png")
    reference = batch.analyze_paths([folder], model=str(tiny_model_file), every=60)
    out = tmp_path / "out" / "r.parquet"
    env = {**os.environ, "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    process = subprocess.Popen(_batch_command(folder, out, tiny_model_file), env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    parts = Path(f"{out}.parts")
    deadline = time.monotonic() + 240
    while len(list(parts.glob("*.files.parquet"))) < 3 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()[-2000:]
    done = pd.concat([pd.read_parquet(p) for p in parts.glob("*.files.parquet")])
    assert 3 <= len(done) < 13 and not out.exists()
    other = subprocess.run(_batch_command(folder, out, tiny_model_file, "--every", "30"), env=env,
                           capture_output=True, text=True)
    assert other.returncode == 1 and "other settings" in other.stderr and "Traceback" not in other.stderr
    again = subprocess.run(_batch_command(folder, out, tiny_model_file, "--quiet"), env=env,
                           capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "13 file(s)" in again.stdout and not parts.exists()
    faces = pd.read_parquet(out)
    assert not faces.duplicated(["file", "frame", "face"]).any()
    pd.testing.assert_frame_equal(faces, reference, check_dtype=False)
    assert list(pd.read_parquet(tmp_path / "out" / "r.files.parquet")["file"]) == batch.expand_inputs([folder])


def test_cli_errors_are_one_line(tmp_path, tiny_model_file, capsys):  # noqa: F811
    assert cli.main(["batch", str(tmp_path), "-o", str(tmp_path / "r.txt")]) == cli.EXIT_USAGE
    assert cli.main(["batch", str(tmp_path / "missing"), "-o", str(tmp_path / "r.csv"),
                     "--model", str(tiny_model_file)]) == cli.EXIT_ERROR
    assert "no file or folder at" in capsys.readouterr().err
    assert not (tmp_path / "r.csv").exists()


def test_a_worker_process_detects_on_its_share_of_the_cores(tiny_model_file):  # noqa: F811
    """The threads a worker gets (cores / workers) go to the detector too (yunet on OpenVINO)."""
    recognizer = batch.load_recognizer(batch.BatchSettings(model=str(tiny_model_file)), threads=1)
    assert recognizer.detection.threads == 1
    assert batch.load_recognizer(batch.BatchSettings(model=str(tiny_model_file))).detection.threads == 0
