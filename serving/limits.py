"""An ASGI middleware that refuses oversized request bodies with 413 before BentoML reads them."""

from __future__ import annotations

import json

DEFAULT_MAX_REQUEST_BYTES = 256 * 1024 * 1024  # EMOTION_MAX_REQUEST_BYTES (serving/settings.py)


class BodyTooLarge(Exception):
    pass


class MaxBodySizeMiddleware:
    """413 for a Content-Length over ``max_bytes``; a chunked body is cut off when it passes it."""

    def __init__(self, app, max_bytes: int = DEFAULT_MAX_REQUEST_BYTES):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                return await self._reject(send, 400, "invalid Content-Length header")
            if declared > self.max_bytes:
                return await self._reject(
                    send, 413, f"the request body is {declared:,} bytes, over the limit of {self.max_bytes:,} bytes"
                )
        received = 0
        started = False

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge()
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._reject(send, 413, f"the request body is over the limit of {self.max_bytes:,} bytes")

    @staticmethod
    async def _reject(send, status: int, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
