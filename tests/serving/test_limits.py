"""Hostile inputs against the HTTP surface of a real, plain ``bentoml serve`` (started as users do,
from the repository root, no --host): every input is generated here, and each gets its exact 4xx
within a time bound, costing the server under 1 s of CPU and 300 MB of memory, while other
clients keep being answered."""

from __future__ import annotations

import json
import re
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest

from emotion_recognition.media import encode_image
from testkit import REPO_ROOT, free_port, serve_env, server_cost, server_processes, stop_process_group, wait_ready

pytestmark = pytest.mark.slow

GRACE_S = 2  # EMOTION_UPLOAD_GRACE_S of the server under test
SLOTS = 4  # EMOTION_MAX_CONCURRENCY
MB = 1024 * 1024
PNG = encode_image(np.full((40, 40, 3), 128, np.uint8), "png")


class Server:
    def __init__(self, url: str, process: subprocess.Popen, log: Path):
        self.url, self.process, self.log = url, process, log
        self.port = int(url.rsplit(":", 1)[1])
        self.client = httpx.Client(base_url=url, timeout=30)


@pytest.fixture(scope="module")
def server(bentoml_home, tmp_path_factory):
    port = free_port()
    log_path = tmp_path_factory.mktemp("hostile") / "serve.log"
    # the session's small limits (conftest: 8 MB bodies) are in os.environ, which serve_env passes on
    env = serve_env(bentoml_home, EMOTION_UPLOAD_GRACE_S=str(GRACE_S), EMOTION_MAX_CONCURRENCY=str(SLOTS))
    with open(log_path, "w") as log:
        process = subprocess.Popen([str(Path(sys.executable).parent / "bentoml"), "serve", "--port", str(port)],
                                   cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process)
        served = Server(url, process, log_path)
        assert served.client.post("/analyze", files={"image": ("a.png", PNG)}).status_code == 200  # warm up
        yield served
    finally:
        stop_process_group(process)


def measured(server: Server, send, wall_s: float = 2.0):
    """send()'s response; asserts the wall time, and the server's CPU and peak memory growth."""
    start = time.perf_counter()
    response, cpu, peak = server_cost(server.url, send)
    elapsed = time.perf_counter() - start
    assert elapsed < wall_s, f"{elapsed:.2f} s"
    assert cpu < 1.0, f"{cpu:.2f} s of server CPU"
    assert peak < 300 * MB, f"server memory peak grew by {peak / MB:.0f} MB"
    return response


def raw_request(server: Server, head: bytes, body: bytes = b"", timeout: float = 10) -> bytes:
    """What the server answers to bytes sent as they are (headers a client library would refuse)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as s:
        try:
            s.sendall(head + body)
            return s.recv(4096)
        except ConnectionResetError:
            return b"reset"  # the server answered and closed while the client was still sending


def read_response(s: socket.socket, timeout: float) -> bytes:
    """One whole HTTP response (headers and Content-Length bytes of body) from a socket."""
    s.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < int(
            data.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0]):
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def error_of(response) -> str:
    body = response.json()
    item = body[0] if isinstance(body, list) else body
    return item["error"] + " " + str(item.get("detail", ""))


def chunks(total: int, size: int = 256 * 1024):
    for start in range(0, total, size):
        yield b"0" * min(size, total - start)


HOSTILE = {
    "90 CJK characters in a filename": (
        "/analyze", {"files": {"image": ("感" * 90 + ".png", PNG)}}, 400, "the filename is 274 bytes, over the limit of 200"),
    "a text field of 100,000 [": (
        "/annotate", {"files": {"image": ("a.png", PNG)}, "data": {"language": "[" * 100_000}}, 400, "Part exceeded maximum size"),
    "a text field sent as a 3 MB file of [[],[],...]": (
        "/annotate", {"files": {"image": ("a.png", PNG), "language": ("big.json", b"[" + b"[]," * 1_000_000 + b"[]]")}},
        400, "field 'language' is a text field: 3,000,004 bytes is over the limit of 1,024"),
    "1,000 nested [ in a text field": (
        "/annotate", {"files": {"image": ("a.png", PNG)}, "data": {"language": "[" * 1000}}, 400, "field 'language' could not be read"),
    "a 5,000-digit integer in a text field": (
        "/video_timeline", {"files": {"video": ("v.avi", PNG)}, "data": {"every": "9" * 5000}}, 400, "Part exceeded maximum size"),
    "a 5 MB part header": (
        "/analyze", {"content": b"--x\r\nContent-Disposition: form-data; name=\"" + b"n" * (5 * MB) + b"\"\r\n\r\nv\r\n--x--\r\n",
                     "headers": {"content-type": "multipart/form-data; boundary=x"}}, 400, "could not be parsed: Invalid multipart data"),
    "a second copy of a file field": (
        "/analyze", {"files": [("image", ("a.png", PNG)), ("image", ("b.png", PNG))]}, 400, "field 'image' was sent 2 times"),
    "too many file parts": (
        "/analyze_frames", {"files": [("frames", (f"{i}.png", PNG)) for i in range(500)]}, 400, "Too many files"),
    "too many text parts": (
        "/annotate", {"files": {"image": ("a.png", PNG)}, "data": {f"f{i}": "x" for i in range(500)}}, 400, "Too many fields"),
    "a JSON body with 10,000 frames": (
        "/analyze_frames", {"json": {"frames": [""] * 10_000}}, 415, "takes a multipart/form-data upload"),
    "a JSON URL for a file": ("/analyze", {"json": "http://127.0.0.1:9/x.png"}, 415, "takes a multipart/form-data upload"),
    "a chunked body over the limit": (
        "/analyze", {"content": chunks(9 * MB), "headers": {"content-type": "multipart/form-data; boundary=x"}}, 413,
        "over the limit of 8,388,608 bytes"),
    "a declared body over the limit": (
        "/analyze", {"content": b"0" * (9 * MB), "headers": {"content-type": "multipart/form-data; boundary=x"}}, 413,
        "9,437,184 bytes, over the limit of 8,388,608"),
    "/classify: strings": ("/classify", {"json": {"faces": [[["x"] * 48] * 48]}}, 400, "faces must be numbers 0-255"),
    "/classify: nulls": ("/classify", {"json": {"faces": [[[None] * 48] * 48]}}, 400, "faces must be numbers 0-255"),
    "/classify: a huge integer": (
        "/classify", {"content": '{"faces": [[[' + "9" * 4000 + "]]]}", "headers": {"content-type": "application/json"}}, 400, ""),
    "/classify: NaN": ("/classify", {"content": json.dumps({"faces": [[[float("nan")] * 48] * 48]}),
                                     "headers": {"content-type": "application/json"}}, 400, "finite values in 0-255"),
    "/classify: a flat list": ("/classify", {"json": {"faces": [0] * 48 * 48}}, 400, "shape (N, 48, 48), got (2304,)"),
    "/classify: 3.5 million numbers, just under the JSON limit": (
        "/classify", {"content": '{"faces": [' + "0," * 3_500_000 + "0]}", "headers": {"content-type": "application/json"}},
        400, "shape (N, 48, 48), got (3500001,)"),
    "/classify: a chunked JSON body over its limit": (
        "/classify", {"content": chunks(8 * MB), "headers": {"content-type": "application/json"}}, 413,
        "over the limit of 7,077,888 bytes"),
    "/classify: 100,000 nested [": (
        "/classify", {"content": '{"faces": ' + "[" * 100_000, "headers": {"content-type": "application/json"}}, 400, ""),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_body_gets_its_4xx_cheaply(server, name):
    path, request, status, words = HOSTILE[name]
    response = measured(server, lambda: server.client.post(path, **request))
    assert response.status_code == status, response.text[:300]
    assert words in error_of(response)


def test_file_api_refuses_a_json_body_before_reading_it(server):
    """The 415 comes back while the declared 5 MB body is still unsent: nothing of it was read or written."""
    head = (b"POST /analyze_frames HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 5000000\r\n\r\n")
    answer = measured(server, lambda: raw_request(server, head, b'{"frames": ['))
    assert answer.startswith(b"HTTP/1.1 415 ")


@pytest.mark.parametrize("head, expected", [
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 1_000_000 + b"\r\n\r\n", b"HTTP/1.1 400 "),
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: a\r\n" % i for i in range(100_000)) + b"\r\n", b"HTTP/1.1 400 "),
    (b"POST /analyze HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=x\r\n"
     b"Content-Length: 99999999999999999999999\r\n\r\n", b"HTTP/1.1 400 "),
])
def test_huge_or_bad_headers_get_a_400(server, head, expected):
    answer = measured(server, lambda: raw_request(server, head))
    assert answer.startswith(expected) or answer == b"reset", answer[:200]
    assert server.client.get("/healthz").status_code == 200


def test_slow_request_headers_get_a_408_and_are_closed(server):
    """A head trickled a byte at a time (slowloris), and a connection that sends nothing: uvicorn
    waited for both forever. Now each is closed GRACE_S after it began, the first with a 408,
    and meanwhile other clients are answered at once; 32 of each cost the server little."""
    head = b"POST /analyze HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=x\r\nX-Slow: "

    def slow_clients() -> tuple[list[bytes], list[bytes], list[float]]:
        start = time.perf_counter()
        trickling = [socket.create_connection(("127.0.0.1", server.port), timeout=GRACE_S + 10) for _ in range(32)]
        silent = [socket.create_connection(("127.0.0.1", server.port), timeout=GRACE_S + 10) for _ in range(32)]
        try:
            for s in trickling:
                s.sendall(head[:20])
            answers, sent = [b""] * len(trickling), 20
            while time.perf_counter() - start < GRACE_S + 4 and not all(answers):
                time.sleep(0.25)
                assert server.client.get("/healthz", timeout=1).status_code == 200  # other clients: no wait
                for i, s in enumerate(trickling):
                    if not answers[i]:
                        try:
                            s.sendall(head[sent : sent + 1] or b"a")
                            s.setblocking(False)
                            answers[i] = s.recv(4096)
                        except (BlockingIOError, ConnectionResetError, BrokenPipeError):
                            pass
                        finally:
                            s.setblocking(True)
                sent += 1
            closed = [s.recv(4096) for s in silent]  # b"" once the server closes it
            return answers, closed, [time.perf_counter() - start]
        finally:
            for s in trickling + silent:
                s.close()

    (answers, closed, (elapsed,)), cpu, peak = server_cost(server.url, slow_clients)
    assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers), [a[:60] for a in answers]
    assert b"the request's headers did not arrive within 2 s" in answers[0]
    assert closed == [b""] * 32
    assert elapsed < GRACE_S + 3, elapsed
    assert cpu < 1.0 and peak < 300 * MB, (cpu, peak / MB)


def test_a_head_within_the_grace_and_kept_alive_connections_are_served(server):
    """No false alarm: a head sent in pieces within the grace, and a connection kept alive idle
    between requests for longer than the grace is not cut (its idle time is uvicorn's keep-alive)."""
    request = (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        for piece in (request[:10], request[10:20], request[20:]):
            s.sendall(piece)
            time.sleep(GRACE_S / 4)
        assert read_response(s, timeout=5).startswith(b"HTTP/1.1 200 ")
        time.sleep(GRACE_S + 0.5)  # idle, under uvicorn's 5 s keep-alive
        s.sendall(request)
        assert read_response(s, timeout=5).startswith(b"HTTP/1.1 200 ")


def test_a_flood_of_slow_uploads_holds_no_slot(server):
    """64 clients uploading at 1 byte/s: other clients are answered in < 1 s (no 429: the slow
    ones hold no slot), and each slow one gets a 408 shortly after the grace period."""
    head = (b"POST /analyze HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=x\r\n"
            b"Content-Length: 100000\r\n\r\n")
    sockets = [socket.create_connection(("127.0.0.1", server.port), timeout=30) for _ in range(64)]
    stop = threading.Event()

    def trickle():
        while not stop.wait(1.0):
            for s in sockets:
                try:
                    s.send(b"-")
                except OSError:
                    pass

    def flood() -> list[bytes]:
        for s in sockets:
            s.sendall(head + b"-")
        trickler = threading.Thread(target=trickle)
        trickler.start()
        try:
            time.sleep(0.5)
            for _ in range(3):  # a second client, while the flood lasts
                for path, call in [("/healthz", lambda: server.client.get("/healthz")),
                                   ("/analyze", lambda: server.client.post("/analyze", files={"image": ("a.png", PNG)}))]:
                    start = time.perf_counter()
                    response = call()
                    assert response.status_code == 200, (path, response.text)
                    assert time.perf_counter() - start < 1.0, path
            return [read_response(s, timeout=GRACE_S + 10) for s in sockets]
        finally:
            stop.set()
            trickler.join()
            for s in sockets:
                s.close()

    answers, cpu, peak = server_cost(server.url, flood)
    assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers), answers[0][:200]
    assert b"the upload is too slow" in answers[0]
    assert cpu < 64 * 1.0 and peak < 300 * MB, (cpu, peak / MB)


def test_slots_count_only_requests_doing_work(server, fer_zip):
    """SLOTS requests with many faces at once hold every slot; their faces go to the classifier's
    process, which has no guard, so none of those calls is refused."""
    from testkit import face_canvas

    canvas = encode_image(face_canvas(fer_zip, 12, size=(960, 720), face_px=96)[0], "jpg")
    files = [("frames", (f"{i}.jpg", canvas)) for i in range(6)]  # 72 faces: 3 internal calls each
    with ThreadPoolExecutor(SLOTS) as pool:
        results = list(pool.map(lambda _: server.client.post("/analyze_frames", files=files), range(SLOTS)))
    assert [r.status_code for r in results] == [200] * SLOTS, [r.text[:200] for r in results]
    assert sum(len(frame) for frame in results[0].json()) >= 60
    assert not re.search(r"path=/classify.*status=429", server.log.read_text())


def test_a_bad_classify_caller_does_not_fail_the_batch_it_would_share(server):
    good = np.full((4, 48, 48), 100, np.uint8).tolist()
    bad = [{"faces": [[["x"] * 48] * 48]}, {"faces": [[[None] * 48] * 48]}, {"faces": [0] * 2304}]
    with ThreadPoolExecutor(SLOTS) as pool:
        calls = [pool.submit(server.client.post, "/classify", json=body) for body in bad * 3]
        goods = [pool.submit(server.client.post, "/classify", json={"faces": good}) for _ in range(6)]
        assert {f.result().status_code for f in calls} == {400}
        assert [f.result().status_code for f in goods] == [200] * 6
    assert np.asarray(goods[0].result().json()).shape == (4, 7)


def test_metrics_labels_stay_bounded_under_a_path_spray(server):
    for i in range(50):  # the first unknown paths add the "other" and "/ui" series
        server.client.get(f"/warm-{i}")
        server.client.get(f"/ui/warm-{i}")
    before = server.client.get("/metrics").text
    for i in range(300):
        server.client.get(f"/made-up-{i}-{'x' * 50}")
        server.client.get(f"/ui/missing-{i}.js")
    metrics = server.client.get("/metrics").text
    assert series(metrics) == series(before)  # the same series, only their values changed
    assert len(metrics) < len(before) + 2000
    assert "made-up" not in metrics and "missing-" not in metrics and 'endpoint="other"' in metrics
    assert 'endpoint="/analyze"' in metrics


def series(metrics: str) -> set[str]:
    return {line.rsplit(" ", 1)[0] for line in metrics.splitlines() if line and not line.startswith("#")}


def test_redirects_do_not_reflect_the_host_header(server):
    for path, location in [("/ui", "/ui/"), ("/ui/", "/ui/index.html")]:
        response = server.client.get(path, headers={"host": "evil.example"}, follow_redirects=False)
        assert response.status_code in (307, 308) and response.headers["location"] == location


def test_model_info_shows_no_paths_or_uris(server, bentoml_home):
    info = server.client.post("/model_info", json={}).json()
    assert info["tag"].startswith("fer-emotion:") and "source_file" not in info and "mlflow_tracking_uri" not in info
    text = json.dumps(info)
    assert str(bentoml_home) not in text and str(REPO_ROOT) not in text and "://" not in text


def test_plain_bentoml_serve_listens_on_localhost_only(server):
    """The service config binds 127.0.0.1; exposing it takes an explicit --host 0.0.0.0."""
    addresses = {(c.laddr.ip, c.laddr.port) for p in map(psutil.Process, server_processes(server.url))
                 for c in p.net_connections("tcp") if c.status == psutil.CONN_LISTEN}
    assert ("127.0.0.1", server.port) in addresses
    assert not any(port == server.port and ip in ("0.0.0.0", "::") for ip, port in addresses)


def test_the_guard_holds_for_every_request_on_a_kept_alive_connection(server):
    """Every request on a kept-alive connection goes through the guard: checked, given a slot,
    its redirects rewritten."""
    client = httpx.Client(base_url=server.url, timeout=30)  # one connection, kept alive
    for _ in range(10):
        assert client.post("/classify", json={"faces": np.zeros((1, 48, 48), np.uint8).tolist()}).status_code == 200
        assert client.post("/analyze_frames", json={"frames": [""]}).status_code == 415
        assert client.post("/analyze", files={"image": ("a.png", PNG)}).status_code == 200
        response = client.get("/ui", headers={"host": "evil.example"}, follow_redirects=False)
        assert response.headers["location"] == "/ui/"
