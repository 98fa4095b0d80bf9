"""``bentoml serve`` as a real process on a free port, talked to over HTTP (and by the CLI)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from emotion_recognition.detection import Box
from emotion_recognition.media import encode_image
from testkit import REPO_ROOT, face_canvas, free_port, iou, media, png_bomb, serve_env, stop_process_group, wait_ready

pytestmark = pytest.mark.slow


def test_real_server_json_annotate_and_concurrency(live_server, fer_zip):
    client = httpx.Client(base_url=live_server, timeout=60)
    image, pasted = face_canvas(fer_zip, 3)
    canvas_png = encode_image(image, "png")

    response = client.post("/analyze", files={"image": ("canvas.png", canvas_png)})
    assert response.status_code == 200, response.text
    faces = response.json()
    assert len(faces) == 3 and {f["emotion"] for f in faces} == {"happy"}
    boxes = [Box(**f["box"]) for f in faces]
    assert all(max(iou(p.box, b) for b in boxes) > 0.5 for p in pasted)

    annotated = client.post("/annotate", files={"image": ("c.png", canvas_png)}, data={"language": "es"})
    assert annotated.status_code == 200 and annotated.headers["content-type"] == "image/jpeg"
    assert annotated.content[:2] == b"\xff\xd8" and json.loads(annotated.headers["x-emotions"]) == ["happy"] * 3

    # concurrent requests (faces batched across requests by the classify API) all succeed
    def one(_):
        return client.post("/analyze", files={"image": ("canvas.png", canvas_png)})

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(16)))
    assert [r.status_code for r in results] == [200] * 16
    assert all(r.json() == faces for r in results)


def test_real_server_bad_inputs_and_recovery(live_server):
    """Needs no ../shared: generated inputs only."""
    client = httpx.Client(base_url=live_server, timeout=60)
    noise = np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8)
    png = encode_image(noise, "png")
    for data, status, words in [
        (b"", 400, "empty"),
        (b"plain text", 415, "not a recognisable image"),
        (png[: len(png) // 2], 400, "could not be decoded"),
        (png_bomb(), 413, "900000000 pixels"),
    ]:
        bad = client.post("/analyze", files={"image": ("x", data)})
        assert bad.status_code == status, (status, bad.text)
        assert words in bad.json()[0]["error"]
        # the server keeps serving after every bad request
        assert client.get("/readyz").status_code == 200
        ok = client.post("/analyze", files={"image": ("noise.png", png)})
        assert ok.status_code == 200 and ok.json() == []
    huge = client.post("/analyze", content=b"0" * (9 * 1024 * 1024), headers={"content-type": "multipart/form-data; boundary=x"})
    assert huge.status_code == 413 and "over the limit" in huge.json()["error"]
    assert client.post("/analyze", files={"image": ("noise.png", png)}).status_code == 200
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and 'endpoint="/analyze"' in metrics.text
    assert 'http_response_code="415"' in metrics.text and 'http_response_code="413"' in metrics.text


def test_web_page_links_and_assets_resolve(live_server):
    """Every href/src on /ui/ answers 200 on the real server (the footer once linked a missing /docs)."""
    client = httpx.Client(base_url=live_server, timeout=60, follow_redirects=True)
    page = client.get("/ui/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    targets = re.findall(r'(?:href|src)="([^"#]+)"', page.text)
    assert {"/", "/docs.json", "style.css", "app.js"} <= set(targets)
    for target in targets:
        url = str(page.url.join(target))
        assert client.get(url).status_code == 200, url


def test_cli_against_server(live_server, tmp_path):
    out = tmp_path / "girl.png"
    result = subprocess.run(
        [str(Path(sys.executable).parent / "emotion"), "photo", str(media("angry_girl.jpg")), "-o", str(out),
         "--server", live_server, "--language", "es"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(out.with_suffix(".json").read_text())
    assert [f["emotion"] for f in data["faces"]] == ["happy"]
    assert out.read_bytes().startswith(b"\x89PNG")


def test_cli_video_against_server(live_server, tmp_path):
    out = tmp_path / "mm.avi"
    result = subprocess.run(
        [str(Path(sys.executable).parent / "emotion"), "video", str(media("Megamind.avi")), "-o", str(out),
         "--server", live_server, "--every", "30", "--max-frames", "4", "--quiet"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "4 frame(s)" in result.stdout
    rows = out.with_suffix(".csv").read_text().splitlines()
    assert rows[0].startswith("frame,time_s,face") and {r.split(",")[0] for r in rows[1:]} == {"0", "30", "60", "90"}
    assert out.stat().st_size > 10_000


def test_cli_unreachable_server(tmp_path):
    result = subprocess.run(
        [str(Path(sys.executable).parent / "emotion"), "photo", str(media("fear.jpg")), "-o", str(tmp_path / "o.jpg"),
         "--server", "http://127.0.0.1:9"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert "could not reach the service" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("runtime", ["openvino", "keras"])
def test_plain_bentoml_serve_from_the_root_serves_the_bundled_model(tmp_path, runtime):
    """A fresh clone: nothing imported, plain `bentoml serve` (the root bentofile.yaml names the
    service) serves the bundled default model, says so in its log, and answers on the API, on
    each EMOTION_RUNTIME (openvino: the bundled INT8 copy, nothing converted)."""
    from emotion_recognition.model_files import bundled_model_path

    if bundled_model_path() is None:
        pytest.skip("this checkout has no bundled default model")
    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "bentoml"), "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO_ROOT, env={**serve_env(tmp_path / "empty-home"), "EMOTION_RUNTIME": runtime,
                                "EMOTION_CACHE_DIR": str(tmp_path / "cache")},
            stdout=out, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_ready(url, process, timeout=180)
            info = httpx.post(f"{url}/model_info", json={}, timeout=30).json()
            assert info["source"] == "bundled" and "source_file" not in info  # no server paths
            assert info["runtime"] == runtime
            frame = encode_image(np.full((120, 160, 3), 128, np.uint8), "jpg")
            response = httpx.post(f"{url}/analyze", files={"image": ("f.jpg", frame)}, timeout=60)
            assert response.status_code == 200 and response.json() == []
            faces = np.random.default_rng(0).integers(0, 256, (2, 48, 48)).tolist()
            response = httpx.post(f"{url}/classify", json={"faces": faces}, timeout=60)
            assert response.status_code == 200 and np.allclose(np.sum(response.json(), axis=1), 1, atol=1e-4)
        finally:
            stop_process_group(process)
    assert "no model imported into the BentoML store: serving the bundled default model" in log.read_text()
    assert not (tmp_path / "cache").exists()  # the bundled copy was used, none made


def test_serve_with_a_missing_model_tag_says_how_to_import(tmp_path):
    """EMOTION_MODEL_TAG naming a model that is not in the store: stop with the import command."""
    env = {**serve_env(tmp_path / "empty-home"), "EMOTION_MODEL_TAG": "fer-emotion:nosuchversion"}
    process = subprocess.run(
        [str(Path(sys.executable).parent / "bentoml"), "serve", "--port", "0"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    output = process.stdout + process.stderr
    assert process.returncode != 0
    assert "no model 'fer-emotion:nosuchversion' in the BentoML model store" in output
    assert "python -m serving.import_model" in output
    assert "Traceback" not in output


def test_serve_with_bad_settings_names_them(bentoml_home):
    """Bad EMOTION_* values: `bentoml serve` stops with one line per variable, not a stack trace."""
    env = {**serve_env(bentoml_home), "EMOTION_TTA": "ten-crop", "EMOTION_MAX_IMAGE_BYTES": "lots",
           "EMOTION_RUNTIME": "tensorrt"}
    process = subprocess.run(
        [str(Path(sys.executable).parent / "bentoml"), "serve", "serving.service:EmotionService", "--port", "0"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    output = process.stdout + process.stderr
    assert process.returncode != 0
    assert "EMOTION_TTA='ten-crop': Input should be 'none', 'flip' or 'crops'" in output
    assert "EMOTION_MAX_IMAGE_BYTES='lots': Input should be a valid integer" in output
    assert "EMOTION_RUNTIME='tensorrt': Input should be 'openvino' or 'keras'" in output
    assert "Traceback" not in output


def test_bentoml_build_from_the_root_offline_then_serve_the_bento(tmp_path):
    """Nothing imported: `bentoml build` from the root with no network packs the code and the
    bundled model; the Bento, served from elsewhere, serves that model."""
    env = {**serve_env(tmp_path / "home"), "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
           "NO_PROXY": "127.0.0.1,localhost"}
    bentoml = str(Path(sys.executable).parent / "bentoml")
    built = subprocess.run([bentoml, "build", "-o", "tag"], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                           timeout=300)
    assert built.returncode == 0, built.stdout + built.stderr
    tag = built.stdout.strip().splitlines()[-1].replace("__tag__:", "")
    bento_dir = tmp_path / "home" / "bentos" / "emotion" / tag.split(":")[1]
    assert (bento_dir / "src" / "emotion_recognition" / "default_model" / "model.keras").is_file()
    assert list((bento_dir / "src" / "emotion_recognition" / "default_model" / "openvino").glob("*.xml"))
    port = free_port()
    with open(tmp_path / "serve.log", "w") as log:
        process = subprocess.Popen([bentoml, "serve", tag, "--host", "127.0.0.1", "--port", str(port)], cwd="/",
                                   env={**env, "PYTHONPATH": ""}, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_ready(url, process, timeout=180)
            assert httpx.post(f"{url}/model_info", json={}, timeout=30).json()["source"] == "bundled"
        finally:
            stop_process_group(process)
