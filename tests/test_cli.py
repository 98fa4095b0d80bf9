"""The ``emotion`` command: photo, video and webcam, and its errors (no traceback)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from emotion_recognition import cli, model_files
from emotion_recognition.labels import EMOTIONS
from testkit import media, tiny_model_file  # noqa: F401


@pytest.fixture
def no_bundled_model(tmp_path, monkeypatch):
    monkeypatch.setattr(model_files, "BUNDLED_MODEL", tmp_path / "none" / "model.keras")


def test_photo(tmp_path, capsys, tiny_model_file):  # noqa: F811
    out = tmp_path / "out" / "girl.jpg"
    code = cli.main(["photo", str(media("angry_girl.jpg")), "-o", str(out), "--model", str(tiny_model_file), "--language", "es"])
    assert code == 0
    assert out.read_bytes()[:2] == b"\xff\xd8"
    data = json.loads(out.with_suffix(".json").read_text())
    assert len(data["faces"]) == 1 and data["faces"][0]["emotion"] == "happy"
    assert list(data["faces"][0]["probabilities"]) == list(EMOTIONS)
    assert "1 face(s): happy" in capsys.readouterr().out


@pytest.mark.parametrize("detector, has_landmarks", [("haar", False), ("yuface", True)])
def test_photo_json_has_landmarks_from_cnn_detectors(tmp_path, tiny_model_file, detector, has_landmarks):  # noqa: F811
    if detector == "yuface":
        pytest.importorskip("yuface", reason="yuface is not installed")
    out = tmp_path / "girl.jpg"
    assert cli.main(["photo", str(media("angry_girl.jpg")), "-o", str(out), "--model", str(tiny_model_file),
                     "--detector", detector]) == 0
    [face] = json.loads(out.with_suffix(".json").read_text())["faces"]
    assert (face["landmarks"] is not None) == has_landmarks
    if has_landmarks:
        assert len(face["landmarks"]) == 5 and all(len(point) == 2 for point in face["landmarks"])


def test_video(tmp_path, capsys, tiny_model_file):  # noqa: F811
    out = tmp_path / "mm.mp4"
    code = cli.main(
        ["video", str(media("Megamind.avi")), "-o", str(out), "--model", str(tiny_model_file), "--every", "30", "--batch", "4"]
    )
    assert code == 0
    captured = capsys.readouterr()
    assert "9 frame(s)" in captured.out and "track(s)" in captured.out
    assert "frame/s" in captured.err or "9/9" in captured.err  # the tqdm progress bar
    rows = list(csv.DictReader(out.with_suffix(".csv").open()))
    assert sorted({int(r["frame"]) for r in rows}) == list(range(0, 270, 30))
    assert {r["emotion"] for r in rows if r["emotion"]} == {"happy"}
    assert all(int(r["track_id"]) >= 1 for r in rows if r["face"])
    # the header is written once although the frames came in chunks of 4
    assert out.with_suffix(".csv").read_text().count("frame,time_s,face,track_id") == 1
    import cv2

    capture = cv2.VideoCapture(str(out))
    assert capture.get(cv2.CAP_PROP_FRAME_COUNT) == 9


def test_video_track_ids_and_smoothing(tmp_path, capsys, tiny_model_file):  # noqa: F811
    """Every 2nd of the first 30 frames of Megamind.avi: the same faces keep their ids, and
    --smooth 4 gives each face the mean of its track's last 4 probability vectors."""
    import numpy as np

    tables = {}
    for smooth in (1, 4):
        out = tmp_path / f"s{smooth}.avi"
        code = cli.main(["video", str(media("Megamind.avi")), "-o", str(out), "--model", str(tiny_model_file),
                         "--every", "2", "--max-frames", "15", "--smooth", str(smooth), "--quiet"])
        assert code == 0
        tables[smooth] = [r for r in csv.DictReader(out.with_suffix(".csv").open()) if r["face"]]
    raw, smoothed = tables[1], tables[4]
    assert [(r["frame"], r["track_id"], r["x"]) for r in raw] == [(r["frame"], r["track_id"], r["x"]) for r in smoothed]
    assert len(raw) > 2 * len({r["track_id"] for r in raw})  # ids are reused across frames
    history: dict[str, list] = {}
    for r, s in zip(raw, smoothed):
        history.setdefault(r["track_id"], []).append([float(r[e]) for e in EMOTIONS])
        expected = np.mean(history[r["track_id"]][-4:], axis=0)
        assert [float(s[e]) for e in EMOTIONS] == pytest.approx(expected, abs=2e-6)
    assert cli.main(["video", str(media("Megamind.avi")), "--smooth", "0"]) == 2
    assert "argument --smooth: must be between 1 and" in capsys.readouterr().err
    assert cli.main(["webcam", "--smooth", "101"]) == 2
    assert "argument --smooth: must be between 1 and 100, got 101" in capsys.readouterr().err


def test_no_model_is_a_clear_error(tmp_path, capsys, no_bundled_model):
    code = cli.main(["photo", str(media("fear.jpg")), "-o", str(tmp_path / "o.jpg")])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no model given and no bundled default model") and "--model" in err


def test_bad_inputs_are_clear_errors(tmp_path, capsys, tiny_model_file):  # noqa: F811
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    assert cli.main(["photo", str(text), "--model", str(tiny_model_file)]) == 1
    assert "not a recognisable image" in capsys.readouterr().err
    assert cli.main(["photo", str(tmp_path / "missing.jpg"), "--model", str(tiny_model_file)]) == 1
    assert "no image file" in capsys.readouterr().err
    assert cli.main(["photo", str(media("fear.jpg")), "-o", str(tmp_path / "o.gif")]) == 2
    assert cli.main(["video", str(text), "-o", str(tmp_path / "o.mp4"), "--model", str(tiny_model_file)]) == 1
    assert "not a video" in capsys.readouterr().err
    assert cli.main(["photo", str(media("fear.jpg")), "--model", str(text)]) == 1
    assert "not a Keras 3 model file" in capsys.readouterr().err


def test_webcam_without_gui_says_so(capsys):
    if cli.gui_available():
        pytest.skip("this OpenCV has a GUI: the headless message does not apply")
    assert cli.main(["webcam", "--camera", "0"]) == 1
    err = capsys.readouterr().err
    assert "opencv-python-headless" in err and "/ui/" in err


def test_console_script_error_has_no_traceback(tmp_path):
    emotion = Path(sys.executable).parent / "emotion"
    result = subprocess.run(
        [str(emotion), "photo", str(tmp_path / "missing.jpg"), "--model", str(tmp_path / "m.keras")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr


def test_webcam_loop_labels_frames_and_quits_on_q(monkeypatch, tiny_model_file):  # noqa: F811
    """The live loop with the window calls replaced (no GUI here); a video file as the camera."""
    import cv2
    import numpy as np

    shown = []
    monkeypatch.setattr(cli, "gui_available", lambda: True)
    monkeypatch.setattr(cv2, "imshow", lambda name, image: shown.append(image.copy()))
    monkeypatch.setattr(cv2, "waitKey", lambda delay: ord("q") if len(shown) >= 6 else -1)
    monkeypatch.setattr(cv2, "destroyAllWindows", lambda: None)
    code = cli.main(["webcam", "--camera", str(media("Megamind.avi")), "--model", str(tiny_model_file)])
    assert code == 0 and len(shown) == 6
    capture = cv2.VideoCapture(str(media("Megamind.avi")))
    for image in shown:
        ok, raw = capture.read()
        assert ok and image.shape == raw.shape
        assert np.abs(image.astype(int) - raw.astype(int)).sum() > 0  # labels / FPS drawn on it
    # the FPS counter sits at the top-left in green (BGR 0, 255, 0)
    top_left = shown[-1][:40, :150]
    assert ((top_left[..., 1] > 200) & (top_left[..., 0] < 60) & (top_left[..., 2] < 60)).sum() > 20


def test_webcam_camera_that_cannot_open(monkeypatch, capsys, tiny_model_file):  # noqa: F811
    monkeypatch.setattr(cli, "gui_available", lambda: True)
    assert cli.main(["webcam", "--camera", "7", "--model", str(tiny_model_file)]) == 1
    assert "camera 7 could not be opened" in capsys.readouterr().err


def test_tta_option_changes_the_views_of_the_bundled_model(tmp_path, capsys):
    """The real bundled model on a real photo: one view and 16 views give different probabilities."""
    probabilities = {}
    for tta in ("none", "crops"):
        out = tmp_path / tta / "fear.jpg"
        assert cli.main(["photo", str(media("fear.jpg")), "-o", str(out), "--tta", tta]) == 0
        faces = json.loads(out.with_suffix(".json").read_text())["faces"]
        assert len(faces) == 1 and sum(faces[0]["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
        probabilities[tta] = list(faces[0]["probabilities"].values())
    assert max(abs(a - b) for a, b in zip(probabilities["none"], probabilities["crops"])) > 1e-3
    assert cli.main(["photo", str(media("fear.jpg")), "--tta", "ten-crop"]) == 2
    assert "invalid choice: 'ten-crop'" in capsys.readouterr().err


def test_yunet_without_its_model_file_is_a_one_line_error(tmp_path, capsys, monkeypatch, tiny_model_file):  # noqa: F811
    monkeypatch.delenv("EMOTION_YUNET_MODEL", raising=False)
    code = cli.main(["photo", str(media("angry_girl.jpg")), "-o", str(tmp_path / "o.jpg"),
                     "--model", str(tiny_model_file), "--detector", "yunet"])
    err = capsys.readouterr().err
    assert code != 0 and "EMOTION_YUNET_MODEL" in err and "Traceback" not in err


def test_runtime_option_runs_the_bundled_model_on_each_engine(tmp_path, capsys):
    """The real bundled model on a real photo: OpenVINO (its INT8 copy) and Keras find the same
    face with the same top emotion and probabilities within 0.1 of each other."""
    faces = {}
    for runtime in ("openvino", "keras"):
        out = tmp_path / runtime / "fear.jpg"
        assert cli.main(["photo", str(media("fear.jpg")), "-o", str(out), "--runtime", runtime]) == 0
        faces[runtime] = json.loads(out.with_suffix(".json").read_text())["faces"]
    assert len(faces["openvino"]) == len(faces["keras"]) == 1
    ours, reference = faces["openvino"][0], faces["keras"][0]
    assert ours["box"] == reference["box"] and ours["emotion"] == reference["emotion"]
    assert max(abs(ours["probabilities"][e] - reference["probabilities"][e]) for e in EMOTIONS) < 0.1
    assert cli.main(["photo", str(media("fear.jpg")), "--runtime", "tensorrt"]) == 2
    assert "invalid choice: 'tensorrt'" in capsys.readouterr().err


@pytest.mark.parametrize("option, value, message", [
    ("--every", "0", "argument --every: must be >= 1, got 0"),
    ("--batch", "-3", "argument --batch: must be >= 1, got -3"),
    ("--max-frames", "-1", "argument --max-frames: must be >= 0, got -1"),
    ("--min-face-size", "0", "argument --min-face-size: must be >= 1, got 0"),
    ("--every", "two", "argument --every: must be a whole number, got 'two'"),
])
def test_numeric_options_are_checked_before_any_work(tmp_path, capsys, option, value, message):
    """One usage line naming the option, exit 2, and no output file started."""
    out = tmp_path / "out.mp4"
    assert cli.main(["video", str(media("Megamind.avi")), "-o", str(out), option, value]) == cli.EXIT_USAGE
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
