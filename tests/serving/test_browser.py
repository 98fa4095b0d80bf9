"""The web page in headless Chromium (Debian's /usr/bin/chromium driven by Playwright)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from fixtures_serving import media

pytestmark = pytest.mark.slow

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
BASE_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def require_chromium() -> None:
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium to run the browser tests")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")


def launch(playwright, user_data_dir: Path, extra_args: list[str] = ()):
    return playwright.chromium.launch_persistent_context(
        str(user_data_dir),
        executable_path=str(CHROMIUM),
        headless=True,
        args=[*BASE_ARGS, *extra_args],
        viewport={"width": 1000, "height": 900},
    )


def write_y4m(video: Path, out: Path, frames: int = 48) -> Path:
    """The first ``frames`` frames of ``video`` as a YUV4MPEG2 4:2:0 file for Chromium's fake camera."""
    capture = cv2.VideoCapture(str(video))
    fps = capture.get(cv2.CAP_PROP_FPS) or 24
    with open(out, "wb") as f:
        for i in range(frames):
            ok, bgr = capture.read()
            if not ok:
                break
            h, w = bgr.shape[:2]
            if i == 0:
                f.write(f"YUV4MPEG2 W{w} H{h} F{round(fps)}:1 Ip A1:1 C420jpeg\n".encode())
            f.write(b"FRAME\n")
            f.write(cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420).tobytes())
    capture.release()
    return out


def canvas_has_colour(page, canvas_id: str, rgb: tuple[int, int, int]) -> bool:
    """Whether the canvas has pixels of a box colour (what drawFaces strokes)."""
    return page.evaluate(
        """([id, rgb]) => {
            const c = document.getElementById(id);
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0;
            for (let i = 0; i < d.length; i += 4)
              if (Math.abs(d[i]-rgb[0]) < 8 && Math.abs(d[i+1]-rgb[1]) < 8 && Math.abs(d[i+2]-rgb[2]) < 8) n++;
            return n > 50;
        }""",
        [canvas_id, list(rgb)],
    )


HAPPY_RGB = (250, 200, 0)  # COLOURS.happy in app.js; the test model labels every face happy


def test_upload_photo_shows_labels(live_server, tmp_path):
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = launch(p, tmp_path / "profile")
        try:
            page = context.new_page()
            page.goto(f"{live_server}/ui/")
            page.set_input_files("#photo-input", str(media("angry_girl.jpg")))
            page.wait_for_selector("#results li", timeout=30_000)
            items = page.locator("#results li").all_text_contents()
            assert len(items) == 1 and items[0].startswith("happy ")
            assert page.locator("#photo-status").text_content() == "1 face(s)"
            page.wait_for_function("document.getElementById('model').textContent.includes('2 views (flip)')", timeout=10_000)
            assert canvas_has_colour(page, "photo-canvas", HAPPY_RGB)
            page.select_option("#language", "es")
            assert page.locator("#results li").first.text_content().startswith("felicidad ")
            # a bad upload shows the server's message and the page keeps working
            bad = tmp_path / "notes.jpg"
            bad.write_text("not an image")
            page.set_input_files("#photo-input", str(bad))
            page.wait_for_function("document.getElementById('error').textContent.includes('415')", timeout=30_000)
            page.screenshot(path=str(tmp_path / "photo.png"))
        finally:
            context.close()


def test_webcam_mode_draws_live_results(live_server, tmp_path):
    require_chromium()
    from playwright.sync_api import sync_playwright

    y4m = write_y4m(media("Megamind.avi"), tmp_path / "megamind.y4m")
    args = [
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-video-capture={y4m}",
    ]
    with sync_playwright() as p:
        context = launch(p, tmp_path / "profile", args)
        try:
            page = context.new_page()
            page.goto(f"{live_server}/ui/")
            page.click("#tab-webcam")
            page.click("#webcam-start")
            page.wait_for_function(
                "Number(document.getElementById('live-status').dataset.frames) >= 5"
                " && Number(document.getElementById('live-status').dataset.faces) >= 1",
                timeout=60_000,
            )
            status = page.locator("#live-status")
            assert "happy" in (status.get_attribute("data-last") or "") or int(status.get_attribute("data-faces")) >= 1
            assert "FPS" in status.text_content()
            page.wait_for_function("document.getElementById('live-status').dataset.last.includes('happy')", timeout=30_000)
            assert canvas_has_colour(page, "webcam-canvas", HAPPY_RGB)
            # tracking: labels carry ids, and the faces of Megamind.avi keep them from frame to
            # frame (fewer tracks started than faces seen), with the default smoothing (5 frames)
            page.wait_for_function(
                "(() => { const d = document.getElementById('live-status').dataset;"
                " return Number(d.faces) >= 10 && d.tracks !== ''; })()",
                timeout=60_000,
            )
            data = page.evaluate("({...document.getElementById('live-status').dataset})")
            assert data["smoothing"] == "5"
            assert int(data["tracksStarted"]) * 2 <= int(data["faces"]), data
            first_id = data["tracks"].split(",")[0]
            assert f"#{first_id} happy" in status.text_content()
            page.select_option("#smoothing", "1")  # switching smoothing off while running
            page.wait_for_function("document.getElementById('live-status').dataset.smoothing === '1'", timeout=30_000)
            # Chromium's built-in fake camera (a test pattern) has no face: faces prove the frames
            # came from Megamind.avi through getUserMedia (scaled to the requested 640x480).
            assert page.evaluate("document.getElementById('webcam-canvas').width") == 640
            page.screenshot(path=str(tmp_path / "webcam.png"))
            page.click("#webcam-stop")
        finally:
            context.close()


def test_face_tracker_in_the_page(tmp_path):
    """app.js's FaceTracker on synthetic boxes, in the real browser (the page from disk, no server)."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    page_file = Path(__file__).resolve().parents[2] / "serving" / "static" / "index.html"
    with sync_playwright() as p:
        context = launch(p, tmp_path / "profile")
        try:
            page = context.new_page()
            page.goto(page_file.as_uri())
            result = page.evaluate(
                """() => {
                const names = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"];
                const probs = (top, w) => Object.fromEntries(names.map((n) => [n, n === top ? w : (1 - w) / 6]));
                const face = (x, y, top = "happy", w = 0.7) =>
                    ({ box: { x, y, w: 60, h: 60 }, confidence: 0.9, emotion: top, probabilities: probs(top, w) });
                const ids = (faces) => faces.map((f) => f.track_id);
                const out = {};
                let t = new FaceTracker({ maxMissed: 2 });
                out.moving = [];
                for (let k = 0; k < 6; k++) {
                    const faces = [face(20 + 8 * k, 40), face(400 - 6 * k, 300)];
                    if (k >= 3) faces.push(face(250, 50));
                    out.moving.push(ids(t.update(faces)));
                }
                t = new FaceTracker({ maxMissed: 2 });
                out.missed = [ids(t.update([face(100, 100)])), ids(t.update([])), ids(t.update([])),
                              ids(t.update([face(104, 100)])), ids(t.update([])), ids(t.update([])),
                              ids(t.update([])), ids(t.update([face(104, 100)]))];
                t = new FaceTracker({ smoothFrames: 3 });
                out.smooth = ["happy", "sad", "sad", "sad"].map((e, i) => {
                    const f = t.update([face(50 + i, 50, e, e === "happy" ? 0.9 : 0.6)])[0];
                    return [f.emotion, f.probabilities.happy, f.probabilities.sad];
                });
                return out;
            }"""
            )
        finally:
            context.close()
    assert result["moving"] == [[1, 2]] * 3 + [[1, 2, 3]] * 3
    assert result["missed"] == [[1], [], [], [1], [], [], [], [2]]
    other_happy, other_sad = (1 - 0.6) / 6, (1 - 0.9) / 6  # the happy frame's "sad" and vice versa
    expected = [
        ("happy", 0.9, other_sad),
        ("happy", (0.9 + other_happy) / 2, (other_sad + 0.6) / 2),
        ("sad", (0.9 + 2 * other_happy) / 3, (other_sad + 1.2) / 3),
        ("sad", other_happy, 0.6),  # the window of 3 has dropped the happy frame
    ]
    for (emotion, happy, sad), (want_emotion, want_happy, want_sad) in zip(result["smooth"], expected):
        assert emotion == want_emotion
        assert happy == pytest.approx(want_happy) and sad == pytest.approx(want_sad)
