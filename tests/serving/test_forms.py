"""Malformed requests get a 4xx JSON error naming the problem, never a 5xx (in-process ASGI app)."""

from __future__ import annotations

import json
import numpy as np
import pytest

from emotion_recognition.media import encode_image
from hostile_inputs import write_video

PNG = encode_image(np.full((40, 40, 3), 128, np.uint8), "png")


def error_text(response) -> str:
    body = response.json()
    item = body[0] if isinstance(body, list) else body
    return item["error"] + " " + str(item.get("detail", ""))


@pytest.mark.parametrize(
    "path, request_kwargs, status, words",
    [
        ("/analyze", {"content": b"--x\r\n", "headers": {"content-type": "multipart/form-data"}}, 400, "no boundary"),
        ("/analyze", {"content": b"garbage", "headers": {"content-type": "multipart/form-data; boundary=zz"}}, 400,
         "could not be parsed"),
        # a file API takes multipart only: JSON or url-encoded bodies are refused before they are read
        ("/analyze", {"content": b"", "headers": {"content-type": "application/json"}}, 415, "takes a multipart/form-data"),
        ("/analyze", {"content": b"\xff\xfe", "headers": {"content-type": "text/plain"}}, 415, "'text/plain'"),
        ("/analyze", {"json": {"image": 5}}, 415, "got Content-Type 'application/json'"),
        ("/analyze_frames", {"data": {"frames": "{}"}}, 415, "'application/x-www-form-urlencoded'"),
        ("/analyze_frames", {"json": {"frames": [""] * 100}}, 415, "takes a multipart/form-data"),
        ("/analyze_frames", {"files": [("frames", ("x", b"\xff\xfe"))], "data": {"frames": "{}"}}, 400,
         "field 'frames' must be a file upload"),
        ("/analyze", {"files": {"frames": ("x.bin", bytes(range(256)))}}, 400, "unknown field(s) 'frames'"),
        ("/analyze", {"files": {"image": ("a.png", PNG), "extra": ("x.bin", b"\xff\xfe\x00")}}, 400, "unknown field(s) 'extra'"),
        # a text value in a file field is never fetched as a URL
        ("/analyze", {"files": {"image": ("a.png", PNG)}, "data": {"image": "http://127.0.0.1:9/x.png"}}, 400,
         "field 'image' must be a file upload"),
        ("/annotate", {"files": {"image": ("a.png", PNG), "language": ("l.bin", b"\xff\xfe\xfa")}}, 400,
         "field 'language' must be text"),
        ("/annotate", {"files": {"image": ("a.png", PNG)}, "data": {"language": "fr"}}, 400, "'en' or 'es'"),
        ("/annotate", {"files": {"image": ("a.png", PNG), "language": ("l.json", b'"en"' + b" " * 1100)}}, 400,
         "field 'language' is a text field: 1,104 bytes is over the limit of 1,024"),
        ("/video_timeline", {"files": {"video": ("v.avi", PNG)}, "data": {"every": "x"}}, 400, "valid integer"),
        ("/video_timeline", {"files": {"video": ("v.avi", PNG)}, "data": {"max_frames": "-1"}}, 400, "max_frames must be >= 0"),
        # /classify: checked per request, before batching (a bad call never fails other callers' batch)
        ("/classify", {"json": {"faces": "x"}}, 400, "faces must be numbers 0-255, got str"),
        ("/classify", {"json": {"faces": [[["a"] * 48] * 48]}}, 400, "faces must be numbers 0-255, got str"),
        ("/classify", {"json": {"faces": [[[None] * 48] * 48]}}, 400, "faces must be numbers 0-255, got nulls, mixed or huge values"),
        ("/classify", {"json": {"faces": [0] * 2304}}, 400, "shape (N, 48, 48), got (2304,)"),
        ("/classify", {"json": {"faces": [[[0] * 48] * 47]}}, 400, "shape (N, 48, 48), got (1, 47, 48)"),
        ("/classify", {"content": json.dumps({"faces": [[[float("nan")] * 48] * 48]}),
                       "headers": {"content-type": "application/json"}}, 400, "finite values in 0-255"),
        ("/classify", {"json": {"faces": [[[256] * 48] * 48]}}, 400, "finite values in 0-255"),
        ("/classify", {"json": {"faces": [[[-1] * 48] * 48]}}, 400, "finite values in 0-255"),
        ("/classify", {"json": {"faces": np.zeros((129, 48, 48), np.uint8).tolist()}}, 400, "129 faces is over the limit of 128"),
    ],
)
def test_malformed_request_is_a_4xx_naming_the_problem(service_client, path, request_kwargs, status, words):
    response = service_client.post(path, **request_kwargs)
    assert response.status_code == status, response.text
    assert words in error_text(response)


def test_frames_over_the_pixel_budget_are_refused_before_decoding(service_client):
    # 1500 x 1500 frames: each under the 3 MP image limit, three over the 6 MP request budget (conftest)
    frame = encode_image(np.zeros((1500, 1500, 3), np.uint8), "png")
    ok = service_client.post("/analyze_frames", files=[("frames", (f"{i}.png", frame)) for i in range(2)])
    assert ok.status_code == 200, ok.text
    over = service_client.post("/analyze_frames", files=[("frames", (f"{i}.png", frame)) for i in range(3)])
    assert over.status_code == 413 and "frames 0-2 hold 6,750,000 pixels" in error_text(over)
    big = encode_image(np.zeros((1500, 2100, 3), np.uint8), "png")  # 3.15 MP: over the image limit
    one = service_client.post("/analyze_frames", files=[("frames", ("a.png", frame)), ("frames", ("b.png", big))])
    assert one.status_code == 413 and error_text(one).startswith("frame 1: the image is 2100x1500")


def test_video_limits_on_pixels_and_decoded_frames(service_client, tmp_path):
    large = write_video(tmp_path / "large.avi", 2, 2100, 1500).read_bytes()  # 3.15 MP frames, limit 3 MP
    response = service_client.post("/video_timeline", files={"video": ("large.avi", large)})
    assert response.status_code == 413 and "2100x1500 = 3,150,000 pixels" in error_text(response)
    long = write_video(tmp_path / "long.avi", 400, 32, 32).read_bytes()  # 400 decoded frames, limit 300
    response = service_client.post("/video_timeline", files={"video": ("long.avi", long)})
    assert response.status_code == 413 and "needs 400 decoded frames, over the limit of 300" in error_text(response)
    response = service_client.post("/video_timeline", files={"video": ("long.avi", long)}, data={"every": "100", "max_frames": "3"})
    assert response.status_code == 200 and [f["frame"] for f in response.json()["frames"]] == [0, 100, 200]


def test_the_classifier_service_checks_its_faces_too(bentoml_home):
    """EmotionClassifier listens on a local TCP port with BENTOML_NO_UDS: its /classify input model
    (which BentoML validates per request, before batching; a failure is a 400) refuses bad faces as
    the public one does. (A second ASGI app in this process would register BentoML's metrics twice.)"""
    from pydantic import ValidationError

    from serving.service import EmotionClassifier

    spec = EmotionClassifier.apis["classify"].input_spec
    for faces, words in [([[["x"] * 48] * 48], "faces must be numbers 0-255, got str"),
                         (np.zeros((129, 48, 48), np.uint8).tolist(), "129 faces is over the limit of 128"),
                         (np.full((1, 48, 48), 300).tolist(), "finite values in 0-255")]:
        with pytest.raises(ValidationError, match=words):
            spec.model_validate({"faces": faces})
    assert spec.model_validate({"faces": np.full((2, 48, 48), 100).tolist()}).faces.shape == (2, 48, 48)
