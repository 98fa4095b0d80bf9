"""The web page in headless Chromium (Debian's /usr/bin/chromium driven by Playwright): photo,
video and webcam modes against a real ``bentoml serve`` (one for the session), DOM assertions
only; each test saves screenshots in its pytest tmp dir."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from emotion_recognition.labels import EMOTIONS, TRANSLATIONS
from emotion_recognition.timeline import TIMELINE_COLUMNS
from testkit import media

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
PAGE_FILE = Path(__file__).resolve().parents[2] / "serving" / "static" / "index.html"
HAPPY_RGB = (250, 200, 0)  # drawing.COLOURS["happy"]; the test model labels every face happy


@pytest.fixture(scope="module")
def playwright():
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium to run the browser tests")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    with sync_api.sync_playwright() as p:
        yield p


def launch(playwright, user_data_dir: Path, extra_args: list[str] = ()):
    return playwright.chromium.launch_persistent_context(
        str(user_data_dir),
        executable_path=str(CHROMIUM),
        headless=True,
        args=[*BASE_ARGS, *extra_args],
        viewport={"width": 1000, "height": 900},
        accept_downloads=True,
    )


@pytest.fixture
def page(playwright, live_server, tmp_path):
    """The page at /ui/, its labels loaded; fails the test if the page asks any other host for
    anything (no CDN, no external font: it works offline)."""
    context = launch(playwright, tmp_path / "profile")
    page = context.new_page()
    foreign = []
    page.on("request", lambda r: None if r.url.startswith((live_server, "blob:", "data:")) else foreign.append(r.url))
    page.goto(f"{live_server}/ui/")
    page.wait_for_selector("body[data-ready]", timeout=30_000)
    yield page
    context.close()
    assert not foreign, f"the page requested other hosts: {foreign}"


def several_faces(out: Path) -> Path:
    """A PNG of three real photos side by side (a face in each) on a white background."""
    photos = [cv2.imread(str(media(name))) for name in ("angry_girl.jpg", "fear.jpg", "messi5.jpg")]
    height = max(p.shape[0] for p in photos) + 40
    canvas = np.full((height, sum(p.shape[1] for p in photos) + 80, 3), 255, np.uint8)
    x = 20
    for p in photos:
        canvas[20 : 20 + p.shape[0], x : x + p.shape[1]] = p
        x += p.shape[1] + 20
    cv2.imwrite(str(out), canvas)
    return out


def download(page, selector: str, save_to: Path) -> Path:
    with page.expect_download(timeout=60_000) as info:
        page.click(selector)
    info.value.save_as(save_to)
    return save_to


def cards(page, list_id: str) -> list[dict]:
    """Each face card of a list: title, highlight, and its bars (emotion, name, percent)."""
    return page.evaluate(
        """(id) => [...document.querySelectorAll(`#${id} .face-card`)].map((card) => ({
            title: card.querySelector('h3').textContent,
            highlight: card.classList.contains('highlight'),
            bars: [...card.querySelectorAll('.bar')].map((b) => ({
                emotion: b.dataset.emotion, name: b.querySelector('.bar-name').textContent,
                percent: Number(b.dataset.percent) })),
        }))""",
        list_id,
    )


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


def drop_or_paste(page, path: Path, mime: str, target: str, event: str) -> None:
    """Dispatch a drop (on ``target``) or paste (on the document) event carrying the file."""
    page.evaluate(
        """async ([bytes, name, mime, target, event]) => {
            const dt = new DataTransfer();
            dt.items.add(new File([new Uint8Array(bytes)], name, { type: mime }));
            if (event === 'paste') document.dispatchEvent(new ClipboardEvent('paste', { clipboardData: dt }));
            else document.querySelector(target).dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true }));
        }""",
        [list(path.read_bytes()), path.name, mime, target, event],
    )


def test_vocabulary_comes_from_the_package(page, live_server):
    """Labels, translations and colours the page uses are the package's (one definition)."""
    from emotion_recognition.drawing import COLOURS

    vocab = page.evaluate("fetch('vocabulary.json').then((r) => r.json())")
    assert vocab["labels"] == list(EMOTIONS)
    assert vocab["translations"] == TRANSLATIONS
    assert vocab["colours"] == {e: "rgb({},{},{})".format(*COLOURS[e]) for e in EMOTIONS}
    assert vocab["limits"]["max_image_bytes"] == int(os.environ["EMOTION_MAX_IMAGE_BYTES"])


def test_photo_cards_highlight_downloads_and_languages(page, tmp_path):
    photo = several_faces(tmp_path / "three.png")
    page.set_input_files("#photo-input", str(photo))
    page.wait_for_function("document.querySelectorAll('#photo-faces .face-card').length >= 2", timeout=60_000)
    # one card per face the server found (at least the one of each photo)
    faces = json.loads(download(page, "#photo-download-json", tmp_path / "faces.json").read_text())
    assert len(faces) >= 3 and all(set(f["probabilities"]) == set(EMOTIONS) for f in faces)
    found = cards(page, "photo-faces")
    assert len(found) == len(faces)
    for card in found:
        assert [b["emotion"] for b in card["bars"]] == list(EMOTIONS)
        assert sum(b["percent"] for b in card["bars"]) == pytest.approx(100, abs=0.05)
        assert "happy" in card["title"]
    assert page.locator("#photo-status").text_content() == f"{len(faces)} face(s)"
    assert canvas_has_colour(page, "photo-canvas", HAPPY_RGB)
    page.screenshot(path=str(tmp_path / "photo.png"), full_page=True)

    # card -> box: hovering the second card highlights it and its box
    page.hover("#photo-faces .face-card >> nth=1")
    assert page.get_attribute("#photo-canvas", "data-highlight") == "1"
    assert [c["highlight"] for c in cards(page, "photo-faces")] == [i == 1 for i in range(len(faces))]
    # box -> card: the pointer over the third face's box highlights the third card
    area = page.evaluate("""() => { const c = document.getElementById('photo-canvas'), r = c.getBoundingClientRect();
        return { x: r.left + c.clientLeft, y: r.top + c.clientTop, width: c.clientWidth }; }""")
    box = faces[2]["box"]
    scale = area["width"] / cv2.imread(str(photo)).shape[1]
    page.mouse.move(area["x"] + (box["x"] + box["w"] / 2) * scale, area["y"] + (box["y"] + box["h"] / 2) * scale)
    assert [c["highlight"] for c in cards(page, "photo-faces")] == [i == 2 for i in range(len(faces))]
    # keyboard: Tab from the last download button reaches the first card and highlights its box
    page.focus("#photo-download-json")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.dataset.index") == "0"
    assert page.get_attribute("#photo-canvas", "data-highlight") == "0"

    annotated = cv2.imread(str(download(page, "#photo-download-image", tmp_path / "annotated.png")))
    assert annotated.shape == cv2.imread(str(photo)).shape

    page.select_option("#language", "es")
    assert page.locator("#tab-photo").text_content() == "Foto"
    spanish = cards(page, "photo-faces")
    assert "felicidad" in spanish[0]["title"]
    assert [b["name"] for b in spanish[0]["bars"]] == [TRANSLATIONS["es"][e] for e in EMOTIONS]
    assert page.locator("#photo-status").text_content() == f"{len(faces)} cara(s)"
    page.screenshot(path=str(tmp_path / "photo-es.png"), full_page=True)
    page.select_option("#language", "en")

    # drag and drop, then paste: each replaces the photo (fear.jpg is 230 pixels wide, angry_girl.jpg 275)
    drop_or_paste(page, media("fear.jpg"), "image/jpeg", "#photo-drop", "drop")
    page.wait_for_function("document.querySelectorAll('#photo-faces .face-card').length === 1"
                           " && document.getElementById('photo-canvas').width === 230", timeout=60_000)
    drop_or_paste(page, media("angry_girl.jpg"), "image/jpeg", "", "paste")
    page.wait_for_function("document.getElementById('photo-canvas').width === 275", timeout=60_000)
    assert len(cards(page, "photo-faces")) == 1

    # phone width: nothing wider than the screen
    page.set_viewport_size({"width": 375, "height": 800})
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    page.screenshot(path=str(tmp_path / "photo-phone.png"), full_page=True)


def test_photo_errors_and_keyboard_tabs(page, tmp_path):
    # the tabs by keyboard: arrow keys move between them
    page.focus("#tab-photo")
    page.keyboard.press("ArrowRight")
    assert page.is_visible("#video-mode") and page.evaluate("document.activeElement.id") == "tab-video"
    page.keyboard.press("ArrowLeft")
    assert page.is_visible("#photo-mode") and page.is_hidden("#photo-downloads")
    # the server's own message for an unsupported file; the page keeps working
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    page.set_input_files("#photo-input", str(bad))
    page.wait_for_function("document.getElementById('error').textContent.includes('415')", timeout=30_000)
    assert "the server answered 415" in page.locator("#error").text_content()
    page.select_option("#language", "es")
    assert "el servidor respondió 415" in page.locator("#error").text_content()
    page.screenshot(path=str(tmp_path / "unsupported.png"))
    # over the server's limit (EMOTION_MAX_IMAGE_BYTES, 2 MB here): refused before uploading
    big = tmp_path / "big.jpg"
    big.write_bytes(b"\xff" * (3 * 1024 * 1024))
    page.set_input_files("#photo-input", str(big))
    assert "big.jpg pesa 3.0 MB, más que el límite del servidor de 2.0 MB" in page.locator("#error").text_content()
    page.select_option("#language", "en")
    page.set_input_files("#photo-input", str(media("angry_girl.jpg")))
    page.wait_for_selector("#photo-faces .face-card", timeout=60_000)
    assert page.locator("#error").text_content() == ""


def test_video_chart_player_and_downloads(page, tmp_path):
    every, max_frames = 10, 12  # frames 0, 10, ..., 110 of Megamind.avi's 270: a few seconds' work
    page.click("#tab-video")
    # the page's statuses, as they come (the analysis may be too quick to catch them by polling)
    page.evaluate("""() => { window.statuses = [];
        new MutationObserver(() => statuses.push(document.getElementById('video-status').textContent))
            .observe(document.getElementById('video-status'), { childList: true, characterData: true, subtree: true }); }""")
    page.set_input_files("#video-input", str(media("Megamind.avi")))
    page.fill("#video-every", str(every))
    page.fill("#video-max-frames", str(max_frames))
    page.select_option("#video-smoothing", "1")
    page.click("#video-submit")
    page.wait_for_selector("#video-charts .chart", timeout=120_000)
    page.wait_for_function("document.getElementById('video-player').readyState >= 2", timeout=120_000)
    statuses = page.evaluate("statuses")
    assert any(s.startswith("step 1 of 2") for s in statuses) and any(s.startswith("step 2 of 2") for s in statuses)
    assert page.is_hidden("#video-progress-box")

    timeline = json.loads(download(page, "#video-download-json", tmp_path / "timeline.json").read_text())
    assert [f["frame"] for f in timeline["frames"]] == list(range(0, every * max_frames, every))
    tracks = sorted({face["track_id"] for f in timeline["frames"] for face in f["faces"]})
    assert tracks, "no face tracked in Megamind.avi"
    charts = page.evaluate("""() => [...document.querySelectorAll('#video-charts .chart')].map((c) => ({
        track: Number(c.dataset.track),
        series: [...c.querySelectorAll('path.series')].map((p) => [p.dataset.emotion, (p.getAttribute('d').match(/[ML]/g) || []).length]),
    }))""")
    assert [c["track"] for c in charts] == tracks
    first = charts[0]
    seen = sum(1 for f in timeline["frames"] for face in f["faces"] if face["track_id"] == tracks[0])
    assert first["series"] == [[e, seen] for e in EMOTIONS]  # one series per emotion, a point per frame seen

    rows = list(csv.reader(io.StringIO(download(page, "#video-download-csv", tmp_path / "timeline.csv").read_text())))
    assert rows[0] == TIMELINE_COLUMNS
    assert len(rows) - 1 == sum(max(1, len(f["faces"])) for f in timeline["frames"])
    webm = download(page, "#video-download-video", tmp_path / "annotated.webm")
    assert webm.read_bytes()[:4] == b"\x1a\x45\xdf\xa3"  # EBML: a WebM file
    capture = cv2.VideoCapture(str(webm))
    assert int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)) == 720
    capture.release()
    # the annotated video plays in the page: it starts and time advances
    page.evaluate("document.getElementById('video-player').play()")
    page.wait_for_function("document.getElementById('video-player').currentTime > 0.2", timeout=30_000)
    assert page.evaluate("document.getElementById('video-player').videoWidth") == 720

    page.select_option("#language", "es")
    assert TRANSLATIONS["es"]["happy"] in page.locator("#video-charts .legend").first.text_content()
    assert page.locator("#video-charts figcaption").first.text_content().startswith(f"Cara #{tracks[0]}")
    page.screenshot(path=str(tmp_path / "video.png"), full_page=True)
    page.set_viewport_size({"width": 375, "height": 800})
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    page.screenshot(path=str(tmp_path / "video-phone.png"), full_page=True)
    page.set_viewport_size({"width": 1000, "height": 900})

    # an unsupported file: the server's message, as it comes
    bad = tmp_path / "clip.mp4"
    bad.write_bytes(b"this is not a video" * 100)
    page.set_input_files("#video-input", str(bad))
    page.click("#video-submit")
    page.wait_for_function("document.getElementById('error').textContent.includes('415')", timeout=30_000)
    # too many frames for the server (EMOTION_MAX_VIDEO_DECODED_FRAMES=300 here): its 413 message
    long = tmp_path / "long.avi"
    writer = cv2.VideoWriter(str(long), cv2.VideoWriter_fourcc(*"MJPG"), 25, (64, 48))
    for _ in range(320):
        writer.write(np.zeros((48, 64, 3), np.uint8))
    writer.release()
    page.set_input_files("#video-input", str(long))
    page.fill("#video-every", "1")
    page.fill("#video-max-frames", "0")
    page.click("#video-submit")
    page.wait_for_function("document.getElementById('error').textContent.includes('413')", timeout=30_000)
    assert "el servidor respondió 413" in page.locator("#error").text_content()
    assert "over the limit of 300" in page.locator("#error").text_content()
    page.screenshot(path=str(tmp_path / "video-error.png"))


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


def test_webcam_mode_draws_live_results(playwright, live_server, tmp_path):
    y4m = write_y4m(media("Megamind.avi"), tmp_path / "megamind.y4m")
    args = [
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-video-capture={y4m}",
    ]
    context = launch(playwright, tmp_path / "profile", args)
    try:
        page = context.new_page()
        page.goto(f"{live_server}/ui/")
        page.wait_for_selector("body[data-ready]", timeout=30_000)
        page.click("#tab-webcam")
        page.click("#webcam-start")
        page.wait_for_function(
            "Number(document.getElementById('live-status').dataset.frames) >= 5"
            " && document.getElementById('live-status').dataset.last.includes('happy')",
            timeout=60_000,
        )
        status = page.locator("#live-status")
        assert canvas_has_colour(page, "webcam-canvas", HAPPY_RGB)
        # each face's bars, and the achieved frame rate and round trip
        live = cards(page, "webcam-faces")
        assert live and all([b["emotion"] for b in c["bars"]] == list(EMOTIONS) for c in live)
        assert float(status.get_attribute("data-fps")) > 0 and float(status.get_attribute("data-rtt")) > 0
        assert "FPS" in status.text_content() and "round trip" in status.text_content()
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
        page.select_option("#language", "es")
        page.wait_for_function("document.getElementById('live-status').textContent.includes('ida y vuelta')", timeout=30_000)
        # Chromium's built-in fake camera (a test pattern) has no face: faces prove the frames
        # came from Megamind.avi through getUserMedia (scaled to the requested 640x480).
        assert page.evaluate("document.getElementById('webcam-canvas').width") == 640
        page.screenshot(path=str(tmp_path / "webcam.png"), full_page=True)
        page.click("#webcam-stop")
    finally:
        context.close()


def test_face_tracker_in_the_page(playwright, tmp_path):
    """app.js's FaceTracker on synthetic boxes, in the real browser (the page from disk, no server)."""
    context = launch(playwright, tmp_path / "profile")
    try:
        page = context.new_page()
        page.goto(PAGE_FILE.as_uri())
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
