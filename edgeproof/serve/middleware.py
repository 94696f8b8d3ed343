"""Pure-ASGI layers around the routes (cheap: no per-request objects beyond a closure).

Outermost first: metrics + security headers, (CORS when asked), bearer auth, body limit. Every
refusal here is JSON `{"error": ...}` like the routes' own errors.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time

PUBLIC_PATHS = frozenset({"/", "/index.html", "/favicon.ico", "/v2/health/live", "/v2/health/ready"})
_FIXED = {"/": "page", "/index.html": "page", "/v1/classify": "v1_classify", "/v1/model": "v1_model",
          "/metrics": "metrics", "/v2": "v2_server", "/v2/health/live": "v2_live", "/v2/health/ready": "v2_ready"}
_SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
                     (b"x-frame-options", b"DENY")]


def endpoint_of(path: str) -> str:
    """A fixed label per route (never the raw path: unbounded label values would grow memory)."""
    name = _FIXED.get(path)
    if name is not None:
        return name
    if path.startswith("/static/"):
        return "page"
    if path.startswith("/v2/models/"):
        if path.endswith("/infer"):
            return "v2_infer"
        if path.endswith("/config"):
            return "v2_model_config"
        return "v2_model_ready" if path.endswith("/ready") else "v2_model_metadata"
    return "other"


async def send_json(send, status: int, body: dict, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": data})


class MetricsMiddleware:
    """Counts every response by endpoint and status (401/413 from the inner layers too) and times it."""

    def __init__(self, app, metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = 500
        m = self.metrics

        async def send_wrapper(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), *_SECURITY_HEADERS]
            await send(message)

        m.in_flight.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            m.in_flight.dec()
            m.observe_request(endpoint_of(scope["path"]), status, time.perf_counter() - t0)


class AuthMiddleware:
    """`Authorization: Bearer KEY`, compared in constant time (digests of equal length); 401 without detail."""

    def __init__(self, app, key: str) -> None:
        self.app = app
        self._digest = hashlib.sha256(f"Bearer {key}".encode()).digest()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS or scope["path"].startswith("/static/"):
            return await self.app(scope, receive, send)
        given = b""
        for k, v in scope["headers"]:
            if k == b"authorization":
                given = v
                break
        if not hmac.compare_digest(hashlib.sha256(given).digest(), self._digest):
            return await send_json(send, 401, {"error": "unauthorized"}, [(b"www-authenticate", b"Bearer")])
        return await self.app(scope, receive, send)


class _TooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """413 for a body over `limit` bytes: from Content-Length before reading, or while streaming it."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    def _error(self) -> dict:
        return {"error": f"request body too large (over {self.limit} bytes, --max-body); send a smaller image "
                         "(phone photos: resize or JPEG-compress them) or raise --max-body"}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for k, v in scope["headers"]:
            if k == b"content-length":
                try:
                    too_big = int(v) > self.limit
                except ValueError:
                    return await send_json(send, 400, {"error": "invalid Content-Length header"})
                if too_big:
                    return await send_json(send, 413, self._error(), [(b"connection", b"close")])
                break
        total = 0
        started = False

        async def limited_receive():
            nonlocal total
            message = await receive()
            if message["type"] == "http.request":
                total += len(message.get("body", b""))
                if total > self.limit:
                    raise _TooLarge
            return message

        async def send_wrapper(message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, send_wrapper)
        except _TooLarge:
            if started:
                raise
            await send_json(send, 413, self._error(), [(b"connection", b"close")])
