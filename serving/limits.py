"""The HTTP guard in front of EmotionService's APIs. BentoML's ``max_concurrency`` counts a request
from its first byte, so 64 uploads at 1 byte/s held every slot. ``RequestGuard`` reads the body
first (spooled to disk past 1 MB; 415 for a file API without multipart, 413 over the size, chunked
or not, 408 below the minimum rate), then takes a slot. The service's own classify calls go to
EmotionClassifier's process, which has no guard, so every request it sees is a client's. The slots
are per process: EMOTION_WORKERS=N processes admit N x EMOTION_MAX_CONCURRENCY requests at once."""

from __future__ import annotations

import json
import tempfile
import time

import anyio
import numpy as np

from emotion_recognition.preprocessing import FACE_SIZE

# /classify: at most this many faces per call (the batcher's max_batch_size), and a JSON body
# (any API without files) of at most 24 characters per value of that many faces
CLASSIFY_MAX_FACES = 128
JSON_MAX_BYTES = CLASSIFY_MAX_FACES * FACE_SIZE * FACE_SIZE * 24
CHUNK = 64 * 1024


class Refused(Exception):
    """(status, message)"""


def check_faces(faces) -> np.ndarray:
    """/classify's input, checked per request (before batching, so a bad caller cannot fail the
    batch it would share with other callers): numbers 0-255 of shape (N, 48, 48), N <= 128."""
    faces = np.asarray(faces)
    if faces.dtype.kind not in "biuf":
        raise ValueError(f"faces must be numbers 0-255, got {'nulls, mixed or huge values' if faces.dtype.kind == 'O' else faces.dtype.name}")
    if faces.ndim != 3 or faces.shape[1:] != (FACE_SIZE, FACE_SIZE):
        raise ValueError(f"faces must have shape (N, {FACE_SIZE}, {FACE_SIZE}), got {faces.shape}")
    if len(faces) > CLASSIFY_MAX_FACES:
        raise ValueError(f"{len(faces)} faces is over the limit of {CLASSIFY_MAX_FACES} per call: send them in several calls")
    if faces.size and not (np.isfinite(faces).all() and faces.min() >= 0 and faces.max() <= 255):
        raise ValueError("faces must hold finite values in 0-255 (got NaN, infinity or a value out of range)")
    return faces


class RequestGuard:
    def __init__(self, app, api_paths: set[str], file_paths: set[str], max_bytes: int, max_concurrency: int,
                 upload_grace_s: float, min_upload_rate: int):
        self.app, self.api_paths, self.file_paths, self.max_bytes = app, api_paths, file_paths, max_bytes
        self.max_concurrency, self.grace, self.min_rate = max_concurrency, upload_grace_s, min_upload_rate
        self._slots: anyio.Semaphore | None = None  # created inside the event loop

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope["path"] not in self.api_paths:
            return await self.app(scope, receive, _relative_redirects(scope, send))
        try:
            limit = self.max_bytes if scope["path"] in self.file_paths else min(self.max_bytes, JSON_MAX_BYTES)
            self._check_headers(scope, limit)
            body = await self._read_body(receive, limit)
        except Refused as refused:
            return await _reject(send, *refused.args)
        with body:
            if self._slots is None:
                self._slots = anyio.Semaphore(self.max_concurrency)
            if self._slots.value == 0:
                return await _reject(send, 429, f"all {self.max_concurrency} request slots are busy: retry later")
            async with self._slots:
                await self.app(scope, _replay(body, receive), send)

    def _check_headers(self, scope, limit: int) -> None:
        headers = dict(scope["headers"])
        media_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if scope["path"] in self.file_paths and media_type != b"multipart/form-data":
            raise Refused(415, f"{scope['path']} takes a multipart/form-data upload (e.g. curl -F image=@photo.jpg), "
                               f"got Content-Type {media_type.decode('latin-1')[:60] or 'none'!r}")
        length = headers.get(b"content-length")
        if length is not None:
            if not (length.isdigit() and len(length) < 20):
                raise Refused(400, "invalid Content-Length header")
            if int(length) > limit:
                raise Refused(413, f"the request body is {int(length):,} bytes, over the limit of {limit:,} bytes")

    async def _read_body(self, receive, limit: int):
        """The whole body in a spooled file; after the grace period it must keep arriving at
        min_rate bytes/s on average (a client at 1 byte/s is cut off, not waited for)."""
        body = tempfile.SpooledTemporaryFile(max_size=1024 * 1024)  # deleted when dropped, on a refusal too
        start, received, more = time.monotonic(), 0, True
        while more:
            deadline = start + self.grace + received / self.min_rate
            with anyio.move_on_after(max(deadline - time.monotonic(), 0)) as waited:
                message = await receive()
            if waited.cancelled_caught:
                raise Refused(408, f"the upload is too slow: {received:,} bytes in {time.monotonic() - start:.0f} s "
                                   f"(at least {self.min_rate:,} bytes/s are needed after {self.grace:g} s)")
            if message["type"] == "http.disconnect":
                raise Refused(400, "the client disconnected before the end of the body")
            received += len(message.get("body", b""))
            if received > limit:
                raise Refused(413, f"the request body is over the limit of {limit:,} bytes")
            body.write(message.get("body", b""))
            more = message.get("more_body", False)
        body.seek(0)
        return body


def _replay(body, receive):
    """The buffered body, then the client's own messages (a response waits on them for a disconnect)."""
    done = False

    async def replay():
        nonlocal done
        if done:
            return await receive()
        data = body.read(CHUNK)
        done = len(data) < CHUNK
        return {"type": "http.request", "body": data, "more_body": not done}

    return replay


def _relative_redirects(scope, send):
    """Starlette builds redirects (/ui -> /ui/, /ui/ -> /ui/index.html) from the Host header, which
    a client chooses: send them as paths, so that no answer points a browser at another host."""
    host = dict(scope["headers"]).get(b"host", b"")

    async def relative_send(message):
        if message["type"] == "http.response.start" and 300 <= message["status"] < 400:
            message = {**message, "headers": [
                (name, value.split(b"://" + host, 1)[1] if name == b"location" and b"://" + host + b"/" in value else value)
                for name, value in message["headers"]]}
        await send(message)

    return relative_send


async def _reject(send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def bound_metric_labels(known_paths: set[str]) -> None:
    """BentoML labels /metrics series by the raw request path, so made-up paths grew it without
    bound: count every other path as ``other`` (and every /ui/ file as ``/ui``)."""
    from bentoml._internal.server.http import instruments

    base = getattr(instruments.RunnerTrafficMetricsMiddleware, "unbounded", instruments.RunnerTrafficMetricsMiddleware)

    class BoundedLabels(base):
        unbounded = base

        def __init__(self, app, **options):
            async def original_scope(scope, receive, send):
                await app(scope.get("emotion.scope", scope), receive, send)

            super().__init__(original_scope, **options)

        async def __call__(self, scope, receive, send):
            path = scope.get("path", "")
            if scope["type"] == "http" and path not in known_paths:
                scope = {**scope, "path": "/ui" if path.startswith("/ui/") else "other", "emotion.scope": scope}
            await super().__call__(scope, receive, send)

    instruments.RunnerTrafficMetricsMiddleware = BoundedLabels


def bound_header_time(seconds: float) -> None:
    """uvicorn as BentoML 1.4.39 runs it (h11; BentoML passes uvicorn only its keep-alive, TLS and
    shutdown options, and uvicorn 0.54 has no header timeout) waits for a request's head forever:
    a client trickling its headers, or connecting and sending nothing, held a connection and its
    file descriptor indefinitely (RequestGuard only sees a request once its head is complete).
    Now a request's line and headers must arrive within ``seconds`` of the connection or of the
    request's first byte, else a 408 (nothing if no byte came) and the connection is closed.
    Header size is bounded by h11 (16 KB: 400). Installed as uvicorn's "auto" HTTP protocol in
    this process: BentoML imports the service module before its worker starts uvicorn; h11 also
    where httptools is installed, since the deadline reads h11's state."""
    import h11
    from uvicorn.protocols.http import auto
    from uvicorn.protocols.http.h11_impl import H11Protocol

    body = json.dumps({"error": f"the request's headers did not arrive within {seconds:g} s"}).encode()
    timeout = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
               b"content-length: %d\r\n\r\n%s" % (len(body), body))

    class HeaderDeadline(H11Protocol):
        head_deadline = None  # the timer of the request head being waited for

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self.head_deadline is None and self.conn.their_state is h11.IDLE:
                self._arm()  # the first byte of the next request on a kept-alive connection
            super().data_received(data)

        def on_response_complete(self) -> None:
            self._disarm()  # an idle kept-alive connection is uvicorn's keep-alive timeout's
            super().on_response_complete()

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self.head_deadline = self.loop.call_later(seconds, self._head_overdue)

        def _disarm(self) -> None:
            if self.head_deadline is not None:
                self.head_deadline.cancel()
                self.head_deadline = None

        def _head_overdue(self) -> None:
            self.head_deadline = None
            if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
                return  # the head is in: the body has RequestGuard's rate
            if self.conn.trailing_data[0]:  # part of a head
                self.transport.write(timeout)
            self.transport.close()

    auto.AutoHTTPProtocol = HeaderDeadline
