"""Pure-ASGI layers around the routes (cheap: no per-request objects beyond a closure).

Outermost first: metrics + security headers + access log, host and origin checks (guards.py), (CORS
when asked), bearer auth, body limit and in-flight budget. Every refusal here is JSON `{"error": ...}`
like the routes' own errors, and none closes the connection: uvicorn reads and discards the unread
body (up to the protocol's drain bound), so clients that send the whole body first see the answer.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import time

from edgeproof.serve.limits import Budget, Busy

access_log = logging.getLogger("edgeproof.serve.access")
PUBLIC_PATHS = frozenset({"/", "/index.html", "/favicon.ico", "/v2/health/live", "/v2/health/ready"})
# readiness of a model the caller names is public like /v2/health/*: probes and tritonclient's is_model_ready
_PUBLIC_READY = re.compile(r"^/v2/models/[^/]+(/versions/[^/]+)?/ready$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\\\"]")
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
    if path.startswith("/v2/repository/"):
        return "v2_repository"
    if path.startswith("/v1/models/"):
        return "v1_predict" if path.endswith(":predict") else "v1_model_status"
    if path.startswith("/v2/models/"):
        if path.endswith("/infer"):
            return "v2_infer"
        if path.endswith("/config"):
            return "v2_model_config"
        if path.endswith("/stats"):
            return "v2_model_stats"
        return "v2_model_ready" if path.endswith("/ready") else "v2_model_metadata"
    return "other"


async def send_json(send, status: int, body: dict, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": data})


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(("/static/", "/web/")) or path == "/web" \
        or bool(_PUBLIC_READY.match(path))


def escape(text: str, limit: int = 400) -> str:
    """For a log line: control characters, backslash and quote as \\xNN (no forged lines), cut at `limit`."""
    text = text[:limit]
    return _CONTROL.sub(lambda m: f"\\x{ord(m[0]):02x}", text)


def _access_line(scope, status: int, seconds: float) -> str:
    client = scope.get("client") or ("-", 0)
    query = scope.get("query_string", b"").decode("latin-1")
    target = scope["path"] + (f"?{query}" if query else "")
    return (f'{escape(str(client[0]))}:{client[1]} "{escape(scope["method"], 20)} {escape(target)} '
            f'HTTP/{escape(scope.get("http_version", "1.1"), 8)}" {status} {seconds * 1000:.1f}ms')


class MetricsMiddleware:
    """Counts every response by endpoint and status (401/413 from the inner layers too), times it, and writes
    one access line per request when asked (`--access-log`)."""

    def __init__(self, app, metrics, log_access: bool = False) -> None:
        self.app, self.metrics, self.log_access = app, metrics, log_access

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
            seconds = time.perf_counter() - t0
            m.observe_request(endpoint_of(scope["path"]), status, seconds)
            if self.log_access:
                access_log.info("%s", _access_line(scope, status, seconds))


def bearer_ok(header: bytes | str | None, digest: bytes) -> bool:
    """`Bearer KEY` (the scheme in any case, RFC 9110 11.1) against sha256(KEY), in constant time."""
    if isinstance(header, str):
        header = header.encode("latin-1", "replace")
    scheme, _, token = (header or b"").strip().partition(b" ")
    ok = hmac.compare_digest(hashlib.sha256(token.strip()).digest(), digest)
    return ok and scheme.lower() == b"bearer"


class AuthMiddleware:
    """`Authorization: Bearer KEY`, compared in constant time (digests of equal length); 401 without detail."""

    def __init__(self, app, key: str) -> None:
        self.app = app
        self._digest = hashlib.sha256(key.encode()).digest()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or is_public(scope["path"]):
            return await self.app(scope, receive, send)
        given = b""
        for k, v in scope["headers"]:
            if k == b"authorization":
                given = v
                break
        if not bearer_ok(given, self._digest):
            return await send_json(send, 401, {"error": "unauthorized"}, [(b"www-authenticate", b"Bearer")])
        return await self.app(scope, receive, send)


class _TooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """413 for a body over `limit` bytes: from Content-Length before reading, or while streaming it; 503 with
    Retry-After when the body would take the in-flight budget over its limit (charged twice its size: the
    chunks and the joined body both live for a moment; a body without Content-Length is charged `limit`)."""

    def __init__(self, app, limit: int, budget: Budget) -> None:
        self.app, self.limit, self.budget = app, limit, budget

    def _error(self) -> dict:
        return {"error": f"request body too large (over {self.limit} bytes, --max-body); send a smaller image "
                         "(phone photos: resize or JPEG-compress them) or raise --max-body"}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = None
        for k, v in scope["headers"]:
            if k == b"content-length":
                try:
                    declared = int(v)
                except ValueError:
                    return await send_json(send, 400, {"error": "invalid Content-Length header"})
                if declared > self.limit:
                    return await send_json(send, 413, self._error())
                break
        charge = 0 if scope["method"] in ("GET", "HEAD") else 2 * (self.limit if declared is None else declared)
        try:
            self.budget.take(charge, "this request's body")
        except Busy as exc:
            return await send_json(send, 503, {"error": str(exc)}, [(b"retry-after", b"1")])
        try:
            await self._limited(scope, receive, send)
        finally:
            self.budget.give(charge)

    async def _limited(self, scope, receive, send) -> None:
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
            await send_json(send, 413, self._error())
