"""The service's APIs in-process (BentoML's ASGI app under Starlette's TestClient)."""

from __future__ import annotations

import csv
import io
import json

import cv2
import numpy as np
import pytest
from PIL import Image

from emotion_recognition.labels import EMOTIONS, TRANSLATIONS
from emotion_recognition.media import encode_image
from testkit import HAPPY_P, face_canvas, iou, media, png_bomb


def post_image(client, data: bytes, name: str = "image.jpg", path: str = "/analyze", **fields):
    return client.post(path, files={"image": (name, data)}, data=fields)


def error_of(response) -> str:
    body = response.json()
    item = body[0] if isinstance(body, list) else body
    return item["error"]


def check_face(face: dict, width: int, height: int) -> None:
    assert set(face) == {"box", "confidence", "landmarks", "emotion", "probabilities"}
    box = face["box"]
    assert 0 <= box["x"] and 0 <= box["y"] and box["x"] + box["w"] <= width and box["y"] + box["h"] <= height
    if face["landmarks"] is not None:  # the CNN detectors: eyes, nose, mouth corners inside the face box
        assert len(face["landmarks"]) == 5
        for x, y in face["landmarks"]:
            assert box["x"] <= x <= box["x"] + box["w"] and box["y"] <= y <= box["y"] + box["h"]
        (rx, ry), (lx, ly), _, (mrx, mry), (mlx, mly) = face["landmarks"]
        assert rx < lx and mrx < mlx and max(ry, ly) < min(mry, mly)  # upright face: eyes above mouth
    assert 0 < face["confidence"] <= 1
    assert list(face["probabilities"]) == list(EMOTIONS)
    assert sum(face["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert face["emotion"] == "happy" and face["probabilities"]["happy"] == pytest.approx(HAPPY_P, abs=0.06)


def test_analyze_photo(service_client):
    response = post_image(service_client, media("fear.jpg").read_bytes(), "fear.jpg")
    assert response.status_code == 200, response.text
    faces = response.json()
    assert len(faces) == 1
    check_face(faces[0], 230, 219)
    assert faces[0]["box"]["w"] > 80  # the one large face of fear.jpg


def test_analyze_three_pasted_faces(service_client, fer_zip):
    image, pasted = face_canvas(fer_zip, 3)
    response = post_image(service_client, encode_image(image, "png"), "canvas.png")
    faces = response.json()
    assert len(faces) == 3
    for face in faces:
        check_face(face, 640, 480)
    from emotion_recognition.detection import Box

    boxes = [Box(**f["box"]) for f in faces]
    for p in pasted:
        assert max(iou(p.box, b) for b in boxes) > 0.5


def test_no_face_gives_empty_list(service_client):
    blank = np.full((200, 300, 3), 200, np.uint8)
    response = post_image(service_client, encode_image(blank, "png"), "blank.png")
    assert response.status_code == 200 and response.json() == []


@pytest.mark.parametrize("language", ["en", "es"])
def test_annotate(service_client, language):
    original = media("angry_girl.jpg").read_bytes()
    response = post_image(service_client, original, "girl.jpg", "/annotate", language=language)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/jpeg"
    assert json.loads(response.headers["x-emotions"]) == ["happy"]
    drawn = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))
    plain = np.asarray(Image.open(io.BytesIO(original)).convert("RGB"))
    assert drawn.shape == plain.shape
    assert np.abs(drawn.astype(int) - plain.astype(int)).mean() > 1  # something was drawn
    png = post_image(service_client, original, "girl.jpg", "/annotate", language=language, format="png")
    assert png.headers["content-type"] == "image/png" and png.content.startswith(b"\x89PNG")


def test_annotate_label_languages_differ(service_client):
    original = media("angry_girl.jpg").read_bytes()
    en = post_image(service_client, original, "g.jpg", "/annotate", language="en", format="png").content
    es = post_image(service_client, original, "g.jpg", "/annotate", language="es", format="png").content
    assert en != es
    bad = post_image(service_client, original, "g.jpg", "/annotate", language="fr")
    assert bad.status_code == 400


def test_analyze_frames_matches_single_images(service_client):
    names = ["messi5.jpg", "fear.jpg", "angry_girl.jpg"]
    blobs = [media(n).read_bytes() for n in names]
    blank = encode_image(np.zeros((64, 64, 3), np.uint8), "png")
    files = [("frames", (n, b)) for n, b in zip(names, blobs)] + [("frames", ("blank.png", blank))]
    response = service_client.post("/analyze_frames", files=files)
    assert response.status_code == 200, response.text
    per_frame = response.json()
    assert [len(faces) for faces in per_frame] == [1, 1, 1, 0]
    for name, blob, faces in zip(names, blobs, per_frame):
        single = post_image(service_client, blob, name).json()
        assert single[0]["box"] == faces[0]["box"]
        for e in EMOTIONS:
            assert single[0]["probabilities"][e] == pytest.approx(faces[0]["probabilities"][e], abs=1e-5)
    # the six non-top probabilities differ between faces: results were not mixed up
    assert per_frame[0][0]["probabilities"] != per_frame[1][0]["probabilities"]


def test_analyze_frames_reports_the_bad_frame(service_client):
    files = [("frames", ("ok.jpg", media("fear.jpg").read_bytes())), ("frames", ("bad.jpg", b"not an image"))]
    response = service_client.post("/analyze_frames", files=files)
    assert response.status_code == 415
    assert error_of(response).startswith("frame 1:")


def test_video_timeline_json_and_csv(service_client):
    video = media("Megamind.avi").read_bytes()
    response = service_client.post("/video_timeline", files={"video": ("m.avi", video)}, data={"every": "30"})
    assert response.status_code == 200, response.text
    timeline = response.json()
    assert timeline["fps"] == pytest.approx(23.976, abs=0.01)
    assert [f["frame"] for f in timeline["frames"]] == list(range(0, 270, 30))
    assert sum(1 for f in timeline["frames"] if f["faces"]) >= 7
    assert timeline["smooth_frames"] == 1
    for entry in timeline["frames"]:
        for face in entry["faces"]:
            assert isinstance(face["track_id"], int) and face["track_id"] >= 1
    response = service_client.post(
        "/video_timeline_csv", files={"video": ("m.avi", video)}, data={"every": "30", "max_frames": "4"}
    )
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert sorted({int(r["frame"]) for r in rows}) == [0, 30, 60, 90]
    assert list(rows[0]) == ["frame", "time_s", "face", "track_id", "x", "y", "w", "h", "confidence", "emotion", *EMOTIONS]
    json_faces = [(e["frame"], f["track_id"], f["box"]["x"]) for e in timeline["frames"][:4] for f in e["faces"]]
    assert [(int(r["frame"]), int(r["track_id"]), int(r["x"])) for r in rows if r["face"]] == json_faces


def test_video_timeline_tracks_the_face_and_smooths(service_client):
    """Megamind.avi, every 2nd frame of the first 40: two faces (Megamind, large, centre at x
    290-350, and a small one at x 465-500) each keep one id from frame to frame; with smooth_frames=3 each
    face's probabilities are the mean of its track's last 3."""
    video = media("Megamind.avi").read_bytes()
    fields = {"every": "2", "max_frames": "20"}
    raw = service_client.post("/video_timeline", files={"video": ("m.avi", video)}, data=fields).json()
    smooth = service_client.post(
        "/video_timeline", files={"video": ("m.avi", video)}, data={**fields, "smooth_frames": "3"}
    ).json()
    assert smooth["smooth_frames"] == 3
    faces = [f for e in raw["frames"] for f in e["faces"]]
    assert len(faces) >= 15
    def centre_x(face: dict) -> float:
        return face["box"]["x"] + face["box"]["w"] / 2

    # (box sizes bounded so that a stray false detection near a face is not counted as it)
    large = [f["track_id"] for f in faces if 120 <= f["box"]["w"] <= 220 and 250 <= centre_x(f) <= 360]
    small = [f["track_id"] for f in faces if f["box"]["w"] < 130 and centre_x(f) >= 420]
    assert len(large) >= 15 and len(small) >= 15
    assert len(set(large)) == 1 and len(set(small)) == 1 and large[0] != small[0], (large, small)
    history: dict[int, list] = {}
    for raw_entry, smooth_entry in zip(raw["frames"], smooth["frames"]):
        assert [f["track_id"] for f in raw_entry["faces"]] == [f["track_id"] for f in smooth_entry["faces"]]
        for raw_face, smooth_face in zip(raw_entry["faces"], smooth_entry["faces"]):
            assert raw_face["box"] == smooth_face["box"]
            past = history.setdefault(raw_face["track_id"], [])
            past.append([raw_face["probabilities"][e] for e in EMOTIONS])
            expected = np.mean(past[-3:], axis=0)
            got = [smooth_face["probabilities"][e] for e in EMOTIONS]
            assert got == pytest.approx(expected, abs=2e-6)
            assert smooth_face["emotion"] == EMOTIONS[int(np.argmax(expected))]
    response = service_client.post(
        "/video_timeline", files={"video": ("m.avi", video)}, data={**fields, "smooth_frames": "0"}
    )
    assert response.status_code == 400 and "smooth_frames" in response.text


@pytest.mark.parametrize("format", ["mp4", "webm"])
def test_annotate_video(service_client, tmp_path, format):
    video = media("Megamind.avi").read_bytes()
    response = service_client.post(
        "/annotate_video", files={"video": ("m.avi", video)}, data={"every": "10", "max_frames": "5", "format": format}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == f"video/{format}"
    out = tmp_path / f"out.{format}"
    out.write_bytes(response.content)
    capture = cv2.VideoCapture(str(out))
    frames = 0
    while capture.read()[0]:
        frames += 1
    assert frames == 5
    assert (capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (720, 528)


def test_bad_video(service_client):
    response = service_client.post("/video_timeline", files={"video": ("x.avi", b"definitely not a video")})
    assert response.status_code == 415, response.text
    response = service_client.post("/video_timeline", files={"video": ("x.avi", b"")})
    assert response.status_code == 400


def test_classify_api(service_client):
    faces = np.random.default_rng(0).integers(0, 256, (3, 48, 48)).tolist()
    response = service_client.post("/classify", json={"faces": faces})
    assert response.status_code == 200, response.text
    probabilities = np.asarray(response.json())
    assert probabilities.shape == (3, 7)
    assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-4)
    assert (probabilities.argmax(axis=1) == EMOTIONS.index("happy")).all()


BAD_INPUTS = {
    "empty": (b"", 400, "empty"),
    "text": (b"hello, this is not an image\n" * 10, 415, "not a recognisable image"),
    "truncated_jpeg": (None, 400, "truncated"),
    "gif": (None, 415, "GIF images are not supported"),
    "png_bomb_30000x30000": (None, 413, "900000000 pixels"),
    "over_byte_limit": (None, 413, "over the limit"),
}


def bad_input(kind: str) -> bytes:
    data = BAD_INPUTS[kind][0]
    if data is not None:
        return data
    if kind == "truncated_jpeg":
        full = media("messi5.jpg").read_bytes()
        return full[: len(full) // 2]
    if kind == "gif":
        buffer = io.BytesIO()
        Image.new("RGB", (20, 20), "red").save(buffer, format="GIF")
        return buffer.getvalue()
    if kind == "png_bomb_30000x30000":
        return png_bomb()
    if kind == "over_byte_limit":  # a valid image just over EMOTION_MAX_IMAGE_BYTES (2 MB in tests)
        noise = np.random.default_rng(0).integers(0, 256, (900, 900, 3), dtype=np.uint8)
        return encode_image(noise, "png")
    raise KeyError(kind)


@pytest.mark.parametrize("kind", list(BAD_INPUTS))
def test_bad_images_get_4xx_with_message(service_client, kind):
    data = bad_input(kind)
    response = post_image(service_client, data, f"{kind}.bin")
    _, status, words = BAD_INPUTS[kind]
    assert response.status_code == status, response.text
    assert words in error_of(response)
    # and the service still answers
    ok = post_image(service_client, media("fear.jpg").read_bytes(), "fear.jpg")
    assert ok.status_code == 200 and len(ok.json()) == 1


def test_request_body_over_limit_is_refused_before_reading(service_client):
    body = b"x" * (9 * 1024 * 1024)  # over EMOTION_MAX_REQUEST_BYTES (8 MB in tests)
    response = post_image(service_client, body, "big.bin")
    assert response.status_code == 413
    assert "over the limit" in response.json()["error"]


def test_missing_field_is_400(service_client):
    response = service_client.post("/analyze", files={"picture": ("x.jpg", b"123")})
    assert response.status_code == 400


def test_health_and_ready(service_client):
    # /metrics needs the Prometheus set-up of a real `bentoml serve`: tested in test_service_process.py
    assert service_client.get("/healthz").status_code == 200
    assert service_client.get("/readyz").status_code == 200


def test_model_info(service_client):
    info = service_client.post("/model_info", json={}).json()
    assert info["tag"].startswith("fer-emotion:")
    assert info["source"] == "file" and info["labels"] == list(EMOTIONS)
    assert info["translations"] == TRANSLATIONS
    assert info["test_time_augmentation"] == "2 views (flip)"  # EMOTION_TTA unset: the face and its mirror
    assert info["runtime"] == "openvino"  # EMOTION_RUNTIME unset: the default engine
    from emotion_recognition.detection import DetectionConfig, resolve_detector

    detection = info["face_detection"]
    assert detection["detector"] == resolve_detector(DetectionConfig()) and detection["configured"] == "auto"


def test_landmarks_in_every_face_api(service_client):
    """The default detector's landmarks reach /analyze, /analyze_frames and the video timeline."""
    pytest.importorskip("yuface", reason="yuface (the default detector here) is not installed")
    photo = media("angry_girl.jpg").read_bytes()
    faces = post_image(service_client, photo, "girl.jpg").json()
    assert faces and len(faces[0]["landmarks"]) == 5
    frames = service_client.post("/analyze_frames", files=[("frames", ("a.jpg", photo)), ("frames", ("b.jpg", photo))]).json()
    assert [f[0]["landmarks"] for f in frames] == [faces[0]["landmarks"]] * 2
    video = media("Megamind.avi").read_bytes()
    timeline = service_client.post("/video_timeline", files={"video": ("m.avi", video)},
                                   data={"every": "60", "max_frames": "3"}).json()
    found = [face for frame in timeline["frames"] for face in frame["faces"]]
    assert found and all(len(face["landmarks"]) == 5 for face in found)


def test_web_page_is_served(service_client):
    page = service_client.get("/ui/", follow_redirects=True)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'id="photo-input"' in page.text and 'id="webcam-start"' in page.text
    script = service_client.get("/ui/app.js")
    assert script.status_code == 200 and "getUserMedia" in script.text and "/analyze" in script.text


class FlakyProxy:
    """What ``bentoml.depends`` gives when served (an aiohttp client to the classifier's process),
    raising the given errors on its first calls: a keep-alive connection closed under the call."""

    def __init__(self, *errors):
        self.errors, self.calls = list(errors), 0
        self.to_async = self

    async def classify(self, faces):
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return np.repeat(faces.mean(axis=(1, 2))[:, None], 7, axis=1)


def test_a_classify_call_on_a_closed_connection_is_sent_again(bentoml_home):
    import asyncio

    from bentoml.exceptions import BentoMLException

    import aiohttp

    from serving.service import EmotionService

    service = EmotionService.inner.__new__(EmotionService.inner)  # no model: the proxy answers
    faces = np.arange(4, dtype=np.uint8)[:, None, None] * np.ones((1, 48, 48), np.uint8)
    service.classifier = FlakyProxy(aiohttp.ServerDisconnectedError(),
                                    aiohttp.ClientOSError(104, "Connection reset by peer"))
    probabilities = asyncio.run(service._classify(faces))
    assert service.classifier.calls == 3 and np.array_equal(probabilities[:, 0], [0, 1, 2, 3])
    # closed while the answer was read: aiohttp's RuntimeError (a 500 at 2 workers, seen in
    # bench/serving_throughput.py); another RuntimeError is a bug, not sent again
    service.classifier = FlakyProxy(RuntimeError("Connection closed."))
    assert np.array_equal(asyncio.run(service._classify(faces))[:, 0], [0, 1, 2, 3])
    service.classifier = FlakyProxy(RuntimeError("something else"))
    with pytest.raises(RuntimeError, match="something else"):
        asyncio.run(service._classify(faces))
    assert service.classifier.calls == 1
    service.classifier = FlakyProxy(*[aiohttp.ServerDisconnectedError()] * 3)  # three failures: a 503 to retry
    with pytest.raises(BentoMLException) as failed:
        asyncio.run(service._classify(faces))
    assert failed.value.error_code == 503 and "retry" in str(failed.value)
    service.classifier = FlakyProxy(asyncio.TimeoutError())  # a timeout is not sent again
    with pytest.raises(asyncio.TimeoutError):
        asyncio.run(service._classify(faces))
    assert service.classifier.calls == 1
